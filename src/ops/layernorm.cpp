#include "ops/layernorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/convert.h"
#include "core/error.h"
#include "ops/elementwise.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // see ops/elementwise.h: vectors never cross a call

namespace sparta::ops {
namespace {

using simd::f32v;

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;
// Upper bound on row blocks in the backward: dw/db partials are one (2, C)
// slab per block, summed in block order afterwards.
constexpr int64_t kMaxBlocks = 64;
// Columns per work item when the block partials are reduced.
constexpr int64_t kReduceCols = 256;

// Two running sums reduced together (layernorm backward).
struct SumPair {
  f32v a{}, b{};
  SPARTA_SIMD_INLINE SumPair operator+(const SumPair& o) const { return {a + o.a, b + o.b}; }
};

// Two passes over the row for mean and variance (the row is in L1 after the
// first), so the variance has no E[x^2] - E[x]^2 cancellation. Tail lanes
// load x = mean (and w = b = 0) so they add nothing to either sum.
SPARTA_KERNEL_CLONES void layernorm_row(float* y, float* mean_out, float* rstd_out, const float* x,
                                        const float* w, const float* b, int64_t C, float eps) {
  const f32v sum =
      simd::reduce_blocks(C, f32v{}, simd::Sum{}, [&](int64_t i, int64_t n, auto partial) SPARTA_SIMD_LAMBDA {
        return simd::load_n<partial>(x + i, n, 0.0f);
      });
  const float mean = simd::hsum(sum) / static_cast<float>(C);
  const f32v sq =
      simd::reduce_blocks(C, f32v{}, simd::Sum{}, [&](int64_t i, int64_t n, auto partial) SPARTA_SIMD_LAMBDA {
        const f32v d = simd::load_n<partial>(x + i, n, mean) - mean;
        return d * d;
      });
  const float var = simd::hsum(sq) / static_cast<float>(C);
  const float rstd = 1.0f / std::sqrt(var + eps);

  simd::for_blocks(C, [&](int64_t i, int64_t n, auto partial) SPARTA_SIMD_LAMBDA {
    const f32v xhat = (simd::load_n<partial>(x + i, n, mean) - mean) * rstd;
    simd::store_n<partial>(
        y + i, xhat * simd::load_n<partial>(w + i, n, 0.0f) + simd::load_n<partial>(b + i, n, 0.0f), n);
  });
  *mean_out = mean;
  *rstd_out = rstd;
}

// With xhat = (x - mean) rstd and g = dy * w:
//   dx = rstd (g - mean(g) - xhat mean(g xhat)),  dw = dy xhat,  db = dy.
// Pass 1 forms the two row means and the dw/db contributions, pass 2 dx.
// Tail lanes load dy = w = 0 and x = mean, so they contribute nothing.
SPARTA_KERNEL_CLONES void layernorm_backward_row(float* dx, float* dw_part, float* db_part, const float* dy,
                                                 const float* x, const float* w, float mean, float rstd,
                                                 int64_t C, bool accumulate_dx) {
  const SumPair sums = simd::reduce_blocks(
      C, SumPair{}, simd::Sum{}, [&](int64_t i, int64_t n, auto partial) SPARTA_SIMD_LAMBDA {
        const f32v dyv = simd::load_n<partial>(dy + i, n, 0.0f);
        const f32v xhat = (simd::load_n<partial>(x + i, n, mean) - mean) * rstd;
        const f32v g = dyv * simd::load_n<partial>(w + i, n, 0.0f);
        simd::store_n<partial>(dw_part + i, simd::load_n<partial>(dw_part + i, n, 0.0f) + dyv * xhat, n);
        simd::store_n<partial>(db_part + i, simd::load_n<partial>(db_part + i, n, 0.0f) + dyv, n);
        return SumPair{g, g * xhat};
      });
  const float mean_g = simd::hsum(sums.a) / static_cast<float>(C);
  const float mean_gx = simd::hsum(sums.b) / static_cast<float>(C);
  simd::for_blocks(C, [&](int64_t i, int64_t n, auto partial) SPARTA_SIMD_LAMBDA {
    const f32v xhat = (simd::load_n<partial>(x + i, n, mean) - mean) * rstd;
    const f32v g = simd::load_n<partial>(dy + i, n, 0.0f) * simd::load_n<partial>(w + i, n, 0.0f);
    const f32v d = rstd * (g - mean_g - xhat * mean_gx);
    simd::store_n<partial>(dx + i, accumulate_dx ? simd::load_n<partial>(dx + i, n, 0.0f) + d : d, n);
  });
}

// out[c] += sum over p of parts[p * stride + c], p in increasing order.
SPARTA_KERNEL_CLONES void add_partials(float* out, const float* parts, int64_t nparts, int64_t stride,
                                       int64_t width) {
  simd::for_blocks(width, [&](int64_t c, int64_t n, auto partial) SPARTA_SIMD_LAMBDA {
    f32v acc{};
    for (int64_t p = 0; p < nparts; ++p) acc += simd::load_n<partial>(parts + p * stride + c, n, 0.0f);
    simd::store_n<partial>(out + c, simd::load_n<partial>(out + c, n, 0.0f) + acc, n);
  });
}

}  // namespace

void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
                       int64_t N, int64_t C, float eps) {
  SPARTA_CHECK(N >= 0 && C > 0, "[layernorm] invalid sizes N=", N, " C=", C);
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t r = 0; r < N; ++r) layernorm_row(y + r * C, mean + r, rstd + r, x + r * C, w, b, C, eps);
}

void layernorm_forward(uint16_t* y16, DType t, float* mean, float* rstd, const float* x, const float* w,
                       const float* b, int64_t N, int64_t C, float eps) {
  SPARTA_CHECK(N >= 0 && C > 0, "[layernorm] invalid sizes N=", N, " C=", C);
  SPARTA_CHECK(t == DType::BF16 || t == DType::F16, "[layernorm] ", dtype_name(t), " is not a 16-bit float type");
#pragma omp parallel if (N * C >= kParallelMin)
  {
    thread_local std::vector<float> row;
    row.resize(static_cast<size_t>(C));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < N; ++r) {
      layernorm_row(row.data(), mean + r, rstd + r, x + r * C, w, b, C, eps);
      // Inside the parallel region: round_to_16bit runs on this thread.
      round_to_16bit(t, y16 + r * C, row.data(), C);
    }
  }
}

void residual_layernorm_forward(float* sum, void* y, DType t, float* mean, float* rstd, const float* x,
                                const float* r, const float* w, const float* b, int64_t N, int64_t C, float eps) {
  SPARTA_CHECK(N >= 0 && C > 0, "[layernorm] invalid sizes N=", N, " C=", C);
  SPARTA_CHECK(t == DType::F32 || t == DType::BF16 || t == DType::F16, "[layernorm] output type ", dtype_name(t),
               " is not F32, BF16 or F16");
#pragma omp parallel if (N * C >= kParallelMin)
  {
    thread_local std::vector<float> row;
    if (t != DType::F32) row.resize(static_cast<size_t>(C));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < N; ++i) {
      float* s = sum + i * C;
      const float* xi = x + i * C;
      const float* ri = r + i * C;
      for (int64_t c = 0; c < C; ++c) s[c] = xi[c] + ri[c];
      if (t == DType::F32) {
        layernorm_row(static_cast<float*>(y) + i * C, mean + i, rstd + i, s, w, b, C, eps);
      } else {
        layernorm_row(row.data(), mean + i, rstd + i, s, w, b, C, eps);
        round_to_16bit(t, static_cast<uint16_t*>(y) + i * C, row.data(), C);
      }
    }
  }
}

void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                        const float* mean, const float* rstd, int64_t N, int64_t C, bool accumulate_dx) {
  SPARTA_CHECK(N >= 0 && C > 0, "[layernorm backward] invalid sizes N=", N, " C=", C);
  if (N == 0) return;
  const int64_t rows_per_block = (N + kMaxBlocks - 1) / kMaxBlocks;
  const int64_t blocks = (N + rows_per_block - 1) / rows_per_block;
  // Per calling thread, reused across calls: no allocation in steady state.
  thread_local std::vector<float> scratch;
  if (scratch.size() < static_cast<size_t>(blocks * 2 * C))
    scratch.resize(static_cast<size_t>(blocks * 2 * C));
  float* parts = scratch.data();
  const int64_t col_chunks = (C + kReduceCols - 1) / kReduceCols;

#pragma omp parallel if (N * C >= kParallelMin)
  {
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      float* dw_part = parts + blk * 2 * C;
      float* db_part = dw_part + C;
      std::fill(dw_part, dw_part + 2 * C, 0.0f);
      const int64_t r1 = std::min(N, (blk + 1) * rows_per_block);
      for (int64_t r = blk * rows_per_block; r < r1; ++r)
        layernorm_backward_row(dx + r * C, dw_part, db_part, dy + r * C, x + r * C, w, mean[r], rstd[r], C,
                               accumulate_dx);
    }
    // Implicit barrier above: all partials are complete.
#pragma omp for schedule(static)
    for (int64_t cc = 0; cc < 2 * col_chunks; ++cc) {
      const bool is_db = cc >= col_chunks;
      const int64_t c0 = (cc % col_chunks) * kReduceCols;
      const int64_t width = std::min(kReduceCols, C - c0);
      add_partials((is_db ? db : dw) + c0, parts + (is_db ? C : 0) + c0, blocks, 2 * C, width);
    }
  }
}

}  // namespace sparta::ops
