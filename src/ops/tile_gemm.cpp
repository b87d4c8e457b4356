#include "ops/tile_gemm.h"

#include "ops/elementwise.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // see elementwise.h: vectors never cross a call boundary

namespace sparta::ops {
namespace {

using simd::f32v;
using simd::kLanes;

// One R-row × NV-vector block of C: rows [i0, i0 + R), columns [j0, j0 + nc)
// with nc <= NV * kLanes (the last vector may be partial). A element (r, p)
// sits at A[r * ars + p * aps], which covers A (ars = lda, aps = 1) and Aᵀ
// (ars = 1, aps = lda) with the same code.
template <int R, int NV>
SPARTA_SIMD_INLINE void block(int64_t nc, int64_t k, float alpha, const float* A, int64_t ars, int64_t aps,
                              const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  f32v acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = simd::splat(0.0f);
  const int64_t tail = nc - (NV - 1) * kLanes;  // lanes of the last vector, 1..16
  for (int64_t p = 0; p < k; ++p) {
    const float* b = B + p * ldb;
    f32v bv[NV];
    for (int v = 0; v < NV - 1; ++v) bv[v] = simd::load(b + v * kLanes);
    bv[NV - 1] = tail == kLanes ? simd::load(b + (NV - 1) * kLanes)
                                : simd::load_partial(b + (NV - 1) * kLanes, tail, 0.0f);
    for (int r = 0; r < R; ++r) {
      const f32v a = simd::splat(A[r * ars + p * aps]);
      for (int v = 0; v < NV; ++v) acc[r][v] += a * bv[v];
    }
  }
  const f32v va = simd::splat(alpha), vb = simd::splat(beta);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      float* c = C + r * ldc + v * kLanes;
      const int64_t n = v == NV - 1 ? tail : kLanes;
      f32v x = va * acc[r][v];
      if (beta != 0.0f) x += vb * (n == kLanes ? simd::load(c) : simd::load_partial(c, n, 0.0f));
      if (n == kLanes)
        simd::store(c, x);
      else
        simd::store_partial(c, x, n);
    }
}

template <int R>
SPARTA_SIMD_INLINE void row_block(int64_t n, int64_t k, float alpha, const float* A, int64_t ars, int64_t aps,
                                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  int64_t j = 0;
  for (; j + 4 * kLanes <= n; j += 4 * kLanes) block<R, 4>(4 * kLanes, k, alpha, A, ars, aps, B + j, ldb, beta, C + j, ldc);
  const int64_t rest = n - j;
  if (rest == 0) return;
  if (rest <= kLanes)
    block<R, 1>(rest, k, alpha, A, ars, aps, B + j, ldb, beta, C + j, ldc);
  else if (rest <= 2 * kLanes)
    block<R, 2>(rest, k, alpha, A, ars, aps, B + j, ldb, beta, C + j, ldc);
  else if (rest <= 3 * kLanes)
    block<R, 3>(rest, k, alpha, A, ars, aps, B + j, ldb, beta, C + j, ldc);
  else
    block<R, 4>(rest, k, alpha, A, ars, aps, B + j, ldb, beta, C + j, ldc);
}

SPARTA_KERNEL_CLONES void gemm(int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t ars,
                               int64_t aps, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) row_block<4>(n, k, alpha, A + i * ars, ars, aps, B, ldb, beta, C + i * ldc, ldc);
  switch (m - i) {
    case 3: row_block<3>(n, k, alpha, A + i * ars, ars, aps, B, ldb, beta, C + i * ldc, ldc); break;
    case 2: row_block<2>(n, k, alpha, A + i * ars, ars, aps, B, ldb, beta, C + i * ldc, ldc); break;
    case 1: row_block<1>(n, k, alpha, A + i * ars, ars, aps, B, ldb, beta, C + i * ldc, ldc); break;
    default: break;
  }
}

}  // namespace

void tile_gemm_nn(int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda, const float* B,
                  int64_t ldb, float beta, float* C, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  gemm(m, n, k, alpha, A, lda, 1, B, ldb, beta, C, ldc);
}

void tile_gemm_tn(int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda, const float* B,
                  int64_t ldb, float beta, float* C, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  gemm(m, n, k, alpha, A, 1, lda, B, ldb, beta, C, ldc);
}

void transpose_into(float* out, int64_t ldo, const float* X, int64_t ldx, int64_t rows, int64_t cols) {
  // 16×16 tiles keep both the reads and the writes within a few cache lines.
  constexpr int64_t kT = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kT)
    for (int64_t c0 = 0; c0 < cols; c0 += kT) {
      const int64_t r1 = r0 + kT < rows ? r0 + kT : rows, c1 = c0 + kT < cols ? c0 + kT : cols;
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) out[c * ldo + r] = X[r * ldx + c];
    }
}

}  // namespace sparta::ops
