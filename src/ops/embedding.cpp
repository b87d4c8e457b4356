#include "ops/embedding.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "ops/elementwise.h"

namespace sparta::ops {
namespace {

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;
// Column ranges are multiples of 16 floats (one cache line), so with 64-byte
// aligned rows of dwte no two threads write one line.
constexpr int64_t kColAlign = 16;

void check_tokens(const char* op, const int32_t* tokens, int64_t N, int64_t V, int64_t C) {
  SPARTA_CHECK(N >= 0 && V > 0 && C > 0, "[", op, "] invalid sizes N=", N, " V=", V, " C=", C);
  for (int64_t n = 0; n < N; ++n)
    SPARTA_CHECK(tokens[n] >= 0 && tokens[n] < V, "[", op, "] token id ", tokens[n], " at position ", n,
                 " is outside the vocabulary (size ", V, ")");
}

SPARTA_KERNEL_CLONES void add_row(float* __restrict dst, const float* __restrict src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

}  // namespace

void embedding_forward(float* x, const int32_t* tokens, const float* wte, int64_t N, int64_t V, int64_t C) {
  check_tokens("embedding", tokens, N, V, C);
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t n = 0; n < N; ++n)
    std::memcpy(x + n * C, wte + static_cast<int64_t>(tokens[n]) * C, sizeof(float) * static_cast<size_t>(C));
}

void embedding_backward(float* dwte, const float* dx, const int32_t* tokens, int64_t N, int64_t V,
                        int64_t C) {
  check_tokens("embedding backward", tokens, N, V, C);
#pragma omp parallel if (N * C >= kParallelMin)
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t per = ((C + nt - 1) / nt + kColAlign - 1) / kColAlign * kColAlign;
    const int64_t c0 = std::min(C, t * per), c1 = std::min(C, c0 + per);
    if (c0 < c1)
      for (int64_t n = 0; n < N; ++n)
        add_row(dwte + static_cast<int64_t>(tokens[n]) * C + c0, dx + n * C + c0, c1 - c0);
  }
}

}  // namespace sparta::ops
