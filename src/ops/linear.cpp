#include "ops/linear.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/gemm.h"
#include "ops/elementwise.h"

namespace sparta::ops {
namespace {

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;
// Columns per work item of the bias-gradient reduction (a multiple of 16
// floats, so with a 64-byte aligned db no two threads write one cache line).
constexpr int64_t kBiasCols = 64;

void check_sizes(const char* op, int64_t N, int64_t in, int64_t out) {
  SPARTA_CHECK(N >= 0 && in > 0 && out > 0, "[", op, "] invalid sizes N=", N, " in=", in, " out=", out);
}

// db[c] += sum over rows of dy[r * ld + c], rows in order; vectorised across c.
SPARTA_KERNEL_CLONES void column_sums(float* db, const float* dy, int64_t N, int64_t ld, int64_t width) {
  float acc[kBiasCols] = {};
  for (int64_t r = 0; r < N; ++r) {
    const float* row = dy + r * ld;
    for (int64_t c = 0; c < width; ++c) acc[c] += row[c];
  }
  for (int64_t c = 0; c < width; ++c) db[c] += acc[c];
}

}  // namespace

void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t N, int64_t in,
                    int64_t out) {
  check_sizes("linear", N, in, out);
  if (b != nullptr) {
    // Broadcast the bias into y, then let the GEMM add x·wᵀ on top (beta = 1).
#pragma omp parallel for schedule(static) if (N * out >= kParallelMin)
    for (int64_t r = 0; r < N; ++r) std::memcpy(y + r * out, b, sizeof(float) * static_cast<size_t>(out));
  }
  sgemm(false, true, N, out, in, 1.0f, x, in, w, in, b != nullptr ? 1.0f : 0.0f, y, out);
}

void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     int64_t N, int64_t in, int64_t out, bool accumulate_dx) {
  check_sizes("linear backward", N, in, out);
  if (dx != nullptr)
    sgemm(false, false, N, in, out, 1.0f, dy, out, w, in, accumulate_dx ? 1.0f : 0.0f, dx, in);
  sgemm(true, false, out, in, N, 1.0f, dy, out, x, in, 1.0f, dw, in);
  if (db != nullptr) {
    const int64_t chunks = (out + kBiasCols - 1) / kBiasCols;
#pragma omp parallel for schedule(static) if (N * out >= kParallelMin)
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const int64_t c0 = ch * kBiasCols;
      column_sums(db + c0, dy + c0, N, out, std::min(kBiasCols, out - c0));
    }
  }
}

}  // namespace sparta::ops
