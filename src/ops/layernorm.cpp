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
SPARTA_KERNEL_CLONES void row_stats(float* mean_out, float* rstd_out, const float* x, int64_t C, float eps) {
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
  *mean_out = mean;
  *rstd_out = 1.0f / std::sqrt(var + eps);
}

SPARTA_KERNEL_CLONES void layernorm_row(float* y, float* mean_out, float* rstd_out, const float* x,
                                        const float* w, const float* b, int64_t C, float eps) {
  row_stats(mean_out, rstd_out, x, C, eps);
  const float mean = *mean_out, rstd = *rstd_out;
  simd::for_blocks(C, [&](int64_t i, int64_t n, auto partial) SPARTA_SIMD_LAMBDA {
    const f32v xhat = (simd::load_n<partial>(x + i, n, mean) - mean) * rstd;
    simd::store_n<partial>(
        y + i, xhat * simd::load_n<partial>(w + i, n, 0.0f) + simd::load_n<partial>(b + i, n, 0.0f), n);
  });
}

// xh = (x - mean) rstd, then y = xh w + b (the kept-x̂ forward in two steps,
// so that affine_row on a kept FP32 x̂ later gives the same y).
SPARTA_KERNEL_CLONES void normalize_row(float* xh, const float* x, float mean, float rstd, int64_t C) {
  simd::for_blocks(C, [&](int64_t i, int64_t n, auto partial) SPARTA_SIMD_LAMBDA {
    simd::store_n<partial>(xh + i, (simd::load_n<partial>(x + i, n, mean) - mean) * rstd, n);
  });
}

SPARTA_KERNEL_CLONES void affine_row(float* y, const float* xh, const float* w, const float* b, int64_t C) {
  simd::for_blocks(C, [&](int64_t i, int64_t n, auto partial) SPARTA_SIMD_LAMBDA {
    simd::store_n<partial>(y + i,
                           simd::load_n<partial>(xh + i, n, 0.0f) * simd::load_n<partial>(w + i, n, 0.0f) +
                               simd::load_n<partial>(b + i, n, 0.0f),
                           n);
  });
}

// One row of a forward that keeps x̂: x̂ and y go to their buffers in their
// types; buf holds 2C floats for the FP32 forms of 16-bit ones.
void forward_row_keeping(void* y, DType yt, const Normalized& xhat, int64_t r, float* mean, float* rstd,
                         const float* x, const float* w, const float* b, int64_t C, float eps, float* buf) {
  row_stats(mean, rstd, x, C, eps);
  float* xh = xhat.type == DType::F32 ? static_cast<float*>(xhat.data) + r * C : buf;
  normalize_row(xh, x, *mean, *rstd, C);
  if (xhat.type != DType::F32) round_to_16bit(xhat.type, static_cast<uint16_t*>(xhat.data) + r * C, xh, C);
  float* yr = yt == DType::F32 ? static_cast<float*>(y) + r * C : buf + C;
  affine_row(yr, xh, w, b, C);
  if (yt != DType::F32) round_to_16bit(yt, static_cast<uint16_t*>(y) + r * C, yr, C);
}

// Row r of a kept x̂ in FP32: in place when F32, else widened into buf.
const float* normalized_row(const Normalized& xhat, int64_t r, int64_t C, float* buf) {
  if (xhat.type == DType::F32) return static_cast<const float*>(xhat.data) + r * C;
  widen_16bit(xhat.type, buf, static_cast<const uint16_t*>(xhat.data) + r * C, C);
  return buf;
}

void check_float_type(DType t, const char* what) {
  SPARTA_CHECK(t == DType::F32 || t == DType::BF16 || t == DType::F16, "[layernorm] ", what, " type ",
               dtype_name(t), " is not F32, BF16 or F16");
}

// With xh = (x - mean) rstd (a kept x̂ row, or the row normalised again)
// and g = dy * w:
//   dx = rstd (g - mean(g) - xh mean(g xh)),  dw = dy xh,  db = dy.
// Pass 1 forms the two row means and the dw/db contributions, pass 2 dx.
// Tail lanes load dy = w = xh = 0, so they contribute nothing.
SPARTA_KERNEL_CLONES void layernorm_backward_row_normalized(float* dx, float* dw_part, float* db_part,
                                                            const float* dy, const float* xh, const float* w,
                                                            float rstd, int64_t C, bool accumulate_dx) {
  const SumPair sums = simd::reduce_blocks(
      C, SumPair{}, simd::Sum{}, [&](int64_t i, int64_t n, auto partial) SPARTA_SIMD_LAMBDA {
        const f32v dyv = simd::load_n<partial>(dy + i, n, 0.0f);
        const f32v xhat = simd::load_n<partial>(xh + i, n, 0.0f);
        const f32v g = dyv * simd::load_n<partial>(w + i, n, 0.0f);
        simd::store_n<partial>(dw_part + i, simd::load_n<partial>(dw_part + i, n, 0.0f) + dyv * xhat, n);
        simd::store_n<partial>(db_part + i, simd::load_n<partial>(db_part + i, n, 0.0f) + dyv, n);
        return SumPair{g, g * xhat};
      });
  const float mean_g = simd::hsum(sums.a) / static_cast<float>(C);
  const float mean_gx = simd::hsum(sums.b) / static_cast<float>(C);
  simd::for_blocks(C, [&](int64_t i, int64_t n, auto partial) SPARTA_SIMD_LAMBDA {
    const f32v xhat = simd::load_n<partial>(xh + i, n, 0.0f);
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

void layernorm_forward(void* y, DType yt, float* mean, float* rstd, const Normalized& xhat, const float* x,
                       const float* w, const float* b, int64_t N, int64_t C, float eps) {
  SPARTA_CHECK(N >= 0 && C > 0, "[layernorm] invalid sizes N=", N, " C=", C);
  check_float_type(yt, "output");
  if (xhat.data == nullptr) {
    if (yt == DType::F32) return layernorm_forward(static_cast<float*>(y), mean, rstd, x, w, b, N, C, eps);
    return layernorm_forward(static_cast<uint16_t*>(y), yt, mean, rstd, x, w, b, N, C, eps);
  }
  check_float_type(xhat.type, "x-hat");
#pragma omp parallel if (N * C >= kParallelMin)
  {
    thread_local std::vector<float> buf;
    buf.resize(static_cast<size_t>(2 * C));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < N; ++r)
      forward_row_keeping(y, yt, xhat, r, mean + r, rstd + r, x + r * C, w, b, C, eps, buf.data());
  }
}

void layernorm_affine(void* y, DType yt, const Normalized& xhat, const float* w, const float* b, int64_t N,
                      int64_t C) {
  SPARTA_CHECK(N >= 0 && C > 0, "[layernorm] invalid sizes N=", N, " C=", C);
  check_float_type(yt, "output");
  check_float_type(xhat.type, "x-hat");
#pragma omp parallel if (N * C >= kParallelMin)
  {
    thread_local std::vector<float> buf;
    buf.resize(static_cast<size_t>(2 * C));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < N; ++r) {
      const float* xh = normalized_row(xhat, r, C, buf.data());
      float* yr = yt == DType::F32 ? static_cast<float*>(y) + r * C : buf.data() + C;
      affine_row(yr, xh, w, b, C);
      if (yt != DType::F32) round_to_16bit(yt, static_cast<uint16_t*>(y) + r * C, yr, C);
    }
  }
}

void residual_layernorm_forward(float* sum, void* y, DType t, float* mean, float* rstd, const float* x,
                                const float* r, const float* w, const float* b, int64_t N, int64_t C, float eps,
                                const Normalized& xhat) {
  SPARTA_CHECK(N >= 0 && C > 0, "[layernorm] invalid sizes N=", N, " C=", C);
  check_float_type(t, "output");
  if (xhat.data != nullptr) check_float_type(xhat.type, "x-hat");
#pragma omp parallel if (N * C >= kParallelMin)
  {
    thread_local std::vector<float> row;
    row.resize(static_cast<size_t>(2 * C));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < N; ++i) {
      float* s = sum + i * C;
      const float* xi = x + i * C;
      const float* ri = r + i * C;
      for (int64_t c = 0; c < C; ++c) s[c] = xi[c] + ri[c];
      if (xhat.data != nullptr) {
        forward_row_keeping(y, t, xhat, i, mean + i, rstd + i, s, w, b, C, eps, row.data());
      } else if (t == DType::F32) {
        layernorm_row(static_cast<float*>(y) + i * C, mean + i, rstd + i, s, w, b, C, eps);
      } else {
        layernorm_row(row.data(), mean + i, rstd + i, s, w, b, C, eps);
        round_to_16bit(t, static_cast<uint16_t*>(y) + i * C, row.data(), C);
      }
    }
  }
}

namespace {

// The backward's frame: rows in fixed blocks, each block's dw/db partials in
// a (2, C) slab, slabs summed in block order (bit-identical for any thread
// count). row(r, dw_part, db_part) does one row.
template <class Row>
void layernorm_backward_blocks(float* dw, float* db, int64_t N, int64_t C, const Row& row) {
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
      for (int64_t r = blk * rows_per_block; r < r1; ++r) row(r, dw_part, db_part);
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

}  // namespace

void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                        const float* mean, const float* rstd, int64_t N, int64_t C, bool accumulate_dx) {
  SPARTA_CHECK(N >= 0 && C > 0, "[layernorm backward] invalid sizes N=", N, " C=", C);
  if (N == 0) return;
  layernorm_backward_blocks(dw, db, N, C, [&](int64_t r, float* dw_part, float* db_part) {
    thread_local std::vector<float> xh;
    xh.resize(static_cast<size_t>(C));
    normalize_row(xh.data(), x + r * C, mean[r], rstd[r], C);
    layernorm_backward_row_normalized(dx + r * C, dw_part, db_part, dy + r * C, xh.data(), w, rstd[r], C,
                                      accumulate_dx);
  });
}

void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const Normalized& xhat, const float* w,
                        const float* rstd, int64_t N, int64_t C, bool accumulate_dx) {
  SPARTA_CHECK(N >= 0 && C > 0, "[layernorm backward] invalid sizes N=", N, " C=", C);
  check_float_type(xhat.type, "x-hat");
  if (N == 0) return;
  layernorm_backward_blocks(dw, db, N, C, [&](int64_t r, float* dw_part, float* db_part) {
    thread_local std::vector<float> buf;
    if (xhat.type != DType::F32) buf.resize(static_cast<size_t>(C));
    const float* xh = normalized_row(xhat, r, C, buf.data());
    layernorm_backward_row_normalized(dx + r * C, dw_part, db_part, dy + r * C, xh, w, rstd[r], C, accumulate_dx);
  });
}

}  // namespace sparta::ops
