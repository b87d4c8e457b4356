#include "ops/tile_gemm_bf16.h"

#include <cstring>

#include "core/convert.h"
#include "ops/elementwise.h"

#ifndef SPARTA_NO_TARGET_CLONES
#include <immintrin.h>
#endif

#pragma GCC diagnostic ignored "-Wpsabi"  // see elementwise.h: vectors never cross a call boundary

namespace sparta::ops {
namespace {

using simd::f32v;
using simd::kLanes;
typedef uint32_t u32v __attribute__((vector_size(64)));

inline uint32_t load_pair(const uint16_t* p) {
  uint32_t x;
  std::memcpy(&x, p, sizeof x);
  return x;
}

// ---------------------------------------------------------------------------
// Portable path: each BF16 pair widened to two FP32 values (exact) and added
// with two FMAs, lower k first. Compiled as AVX-512 / AVX2 / baseline clones.

template <int R, int NV>
SPARTA_SIMD_INLINE void block_widen(int64_t nc, int64_t kp2, float alpha, const uint16_t* A, int64_t lda,
                                    const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  f32v acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = simd::splat(0.0f);
  const int64_t tail = nc - (NV - 1) * kLanes;
  for (int64_t p = 0; p < kp2; ++p) {
    const uint16_t* b = B + p * ldb;
    f32v lo[NV], hi[NV];
    for (int v = 0; v < NV; ++v) {
      u32v u{};
      std::memcpy(&u, b + v * 2 * kLanes, sizeof(uint32_t) * static_cast<size_t>(v == NV - 1 ? tail : kLanes));
      lo[v] = reinterpret_cast<f32v>(u << 16);
      hi[v] = reinterpret_cast<f32v>(u & 0xffff0000u);
    }
    for (int r = 0; r < R; ++r) {
      const uint32_t a = load_pair(A + r * lda + 2 * p);
      const f32v a0 = simd::splat(std::bit_cast<float>(a << 16)), a1 = simd::splat(std::bit_cast<float>(a & 0xffff0000u));
      for (int v = 0; v < NV; ++v) acc[r][v] = acc[r][v] + a0 * lo[v] + a1 * hi[v];
    }
  }
  const f32v va = simd::splat(alpha), vb = simd::splat(beta);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      float* c = C + r * ldc + v * kLanes;
      const int64_t n = v == NV - 1 ? tail : kLanes;
      f32v x = va * acc[r][v];
      if (beta != 0.0f) x += vb * simd::load_partial(c, n, 0.0f);
      simd::store_partial(c, x, n);
    }
}

template <int R>
SPARTA_SIMD_INLINE void row_block_widen(int64_t n, int64_t kp2, float alpha, const uint16_t* A, int64_t lda,
                                        const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  int64_t j = 0;
  for (; j + 4 * kLanes <= n; j += 4 * kLanes)
    block_widen<R, 4>(4 * kLanes, kp2, alpha, A, lda, B + 2 * j, ldb, beta, C + j, ldc);
  const int64_t rest = n - j;
  if (rest == 0) return;
  if (rest <= kLanes)
    block_widen<R, 1>(rest, kp2, alpha, A, lda, B + 2 * j, ldb, beta, C + j, ldc);
  else if (rest <= 2 * kLanes)
    block_widen<R, 2>(rest, kp2, alpha, A, lda, B + 2 * j, ldb, beta, C + j, ldc);
  else if (rest <= 3 * kLanes)
    block_widen<R, 3>(rest, kp2, alpha, A, lda, B + 2 * j, ldb, beta, C + j, ldc);
  else
    block_widen<R, 4>(rest, kp2, alpha, A, lda, B + 2 * j, ldb, beta, C + j, ldc);
}

SPARTA_KERNEL_CLONES void gemm_widen(int64_t m, int64_t n, int64_t kp2, float alpha, const uint16_t* A, int64_t lda,
                                     const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) row_block_widen<4>(n, kp2, alpha, A + i * lda, lda, B, ldb, beta, C + i * ldc, ldc);
  switch (m - i) {
    case 3: row_block_widen<3>(n, kp2, alpha, A + i * lda, lda, B, ldb, beta, C + i * ldc, ldc); break;
    case 2: row_block_widen<2>(n, kp2, alpha, A + i * lda, lda, B, ldb, beta, C + i * ldc, ldc); break;
    case 1: row_block_widen<1>(n, kp2, alpha, A + i * lda, lda, B, ldb, beta, C + i * ldc, ldc); break;
    default: break;
  }
}

// ---------------------------------------------------------------------------
// AVX512-BF16 path: one VDPBF16PS per (row, 16 columns, k pair).

#ifndef SPARTA_NO_TARGET_CLONES
#define SPARTA_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))

template <int R, int NV>
SPARTA_BF16_TARGET inline __attribute__((always_inline)) void block_dp(int64_t nc, int64_t kp2, float alpha,
                                                                        const uint16_t* A, int64_t lda,
                                                                        const uint16_t* B, int64_t ldb, float beta,
                                                                        float* C, int64_t ldc) {
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  const int64_t tail = nc - (NV - 1) * kLanes;
  const __mmask32 bmask = tail == kLanes ? ~__mmask32{0} : static_cast<__mmask32>((1u << (2 * tail)) - 1u);
  const __mmask16 cmask = tail == kLanes ? __mmask16(0xffff) : static_cast<__mmask16>((1u << tail) - 1u);
  for (int64_t p = 0; p < kp2; ++p) {
    const uint16_t* b = B + p * ldb;
    __m512i bv[NV];
    for (int v = 0; v < NV - 1; ++v) bv[v] = _mm512_loadu_si512(b + v * 2 * kLanes);
    bv[NV - 1] = _mm512_maskz_loadu_epi16(bmask, b + (NV - 1) * 2 * kLanes);
    for (int r = 0; r < R; ++r) {
      const __m512i a = _mm512_set1_epi32(static_cast<int32_t>(load_pair(A + r * lda + 2 * p)));
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)a, (__m512bh)bv[v]);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      float* c = C + r * ldc + v * kLanes;
      const __mmask16 m = v == NV - 1 ? cmask : __mmask16(0xffff);
      __m512 x = _mm512_mul_ps(va, acc[r][v]);
      if (beta != 0.0f) x = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, c), x);
      _mm512_mask_storeu_ps(c, m, x);
    }
}

// row_block_dp and gemm_dp mirror row_block_widen and gemm_widen: one
// generic template cannot serve both, since every inlined helper of the
// AVX512-BF16 path must carry its target attribute.
template <int R>
SPARTA_BF16_TARGET inline __attribute__((always_inline)) void row_block_dp(int64_t n, int64_t kp2, float alpha,
                                                                            const uint16_t* A, int64_t lda,
                                                                            const uint16_t* B, int64_t ldb,
                                                                            float beta, float* C, int64_t ldc) {
  int64_t j = 0;
  for (; j + 4 * kLanes <= n; j += 4 * kLanes)
    block_dp<R, 4>(4 * kLanes, kp2, alpha, A, lda, B + 2 * j, ldb, beta, C + j, ldc);
  const int64_t rest = n - j;
  if (rest == 0) return;
  if (rest <= kLanes)
    block_dp<R, 1>(rest, kp2, alpha, A, lda, B + 2 * j, ldb, beta, C + j, ldc);
  else if (rest <= 2 * kLanes)
    block_dp<R, 2>(rest, kp2, alpha, A, lda, B + 2 * j, ldb, beta, C + j, ldc);
  else if (rest <= 3 * kLanes)
    block_dp<R, 3>(rest, kp2, alpha, A, lda, B + 2 * j, ldb, beta, C + j, ldc);
  else
    block_dp<R, 4>(rest, kp2, alpha, A, lda, B + 2 * j, ldb, beta, C + j, ldc);
}

SPARTA_BF16_TARGET void gemm_dp(int64_t m, int64_t n, int64_t kp2, float alpha, const uint16_t* A, int64_t lda,
                                const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) row_block_dp<4>(n, kp2, alpha, A + i * lda, lda, B, ldb, beta, C + i * ldc, ldc);
  switch (m - i) {
    case 3: row_block_dp<3>(n, kp2, alpha, A + i * lda, lda, B, ldb, beta, C + i * ldc, ldc); break;
    case 2: row_block_dp<2>(n, kp2, alpha, A + i * lda, lda, B, ldb, beta, C + i * ldc, ldc); break;
    case 1: row_block_dp<1>(n, kp2, alpha, A + i * lda, lda, B, ldb, beta, C + i * ldc, ldc); break;
    default: break;
  }
}

bool detect_avx512bf16() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}
#endif

bool use_dp() {
#ifdef SPARTA_NO_TARGET_CLONES
  return false;
#else
  static const bool yes = detect_avx512bf16();
  return yes;
#endif
}

}  // namespace

void tile_gemm_bf16(int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* A, int64_t lda, const uint16_t* B,
                    int64_t ldb, float beta, float* C, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  const int64_t kp2 = bf16_pairs_len(k) / 2;
#ifndef SPARTA_NO_TARGET_CLONES
  if (use_dp()) return gemm_dp(m, n, kp2, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
  gemm_widen(m, n, kp2, alpha, A, lda, B, ldb, beta, C, ldc);
}

bool tile_gemm_bf16_uses_avx512bf16() { return use_dp(); }

void pack_bf16_rows(uint16_t* A, int64_t lda, const float* X, int64_t ldx, int64_t m, int64_t k) {
  for (int64_t i = 0; i < m; ++i) {
    f32_to_bf16(A + i * lda, X + i * ldx, k);
    if (k & 1) A[i * lda + k] = 0;
  }
}

// The packers convert contiguous runs first (integer rounding code that GCC
// vectorises in every clone) into a small tile, then move whole 16- or
// 32-bit values into place, so strided element-by-element conversion never
// happens.

SPARTA_KERNEL_CLONES void pack_bf16_rows_t(uint16_t* A, int64_t lda, const float* X, int64_t ldx, int64_t m,
                                           int64_t k) {
  constexpr int64_t kP = 16, kI = 64;
  uint16_t tmp[kP][kI];
  for (int64_t p0 = 0; p0 < k; p0 += kP)
    for (int64_t i0 = 0; i0 < m; i0 += kI) {
      const int64_t np = k - p0 < kP ? k - p0 : kP, ni = m - i0 < kI ? m - i0 : kI;
      for (int64_t p = 0; p < np; ++p) {
        const float* x = X + (p0 + p) * ldx + i0;
        for (int64_t i = 0; i < ni; ++i) tmp[p][i] = f32_to_bf16_bits(x[i]);
      }
      for (int64_t i = 0; i < ni; ++i) {
        uint16_t* a = A + (i0 + i) * lda + p0;
        for (int64_t p = 0; p < np; ++p) a[p] = tmp[p][i];
      }
    }
  if (k & 1)
    for (int64_t i = 0; i < m; ++i) A[i * lda + k] = 0;
}

SPARTA_KERNEL_CLONES void pack_bf16_pairs(uint16_t* B, int64_t ldb, const float* X, int64_t ldx, int64_t k,
                                          int64_t n) {
  constexpr int64_t kJ = 256;
  uint16_t lo[kJ], hi[kJ];
  for (int64_t p = 0; p < k; p += 2) {
    const float* x0 = X + p * ldx;
    const float* x1 = x0 + ldx;
    const bool pad = p + 1 >= k;
    uint16_t* b = B + (p / 2) * ldb;
    for (int64_t j0 = 0; j0 < n; j0 += kJ) {
      const int64_t nj = n - j0 < kJ ? n - j0 : kJ;
      for (int64_t j = 0; j < nj; ++j) lo[j] = f32_to_bf16_bits(x0[j0 + j]);
      if (pad)
        for (int64_t j = 0; j < nj; ++j) hi[j] = 0;
      else
        for (int64_t j = 0; j < nj; ++j) hi[j] = f32_to_bf16_bits(x1[j0 + j]);
      for (int64_t j = 0; j < nj; ++j) {
        const uint32_t pair = static_cast<uint32_t>(lo[j]) | static_cast<uint32_t>(hi[j]) << 16;
        std::memcpy(b + 2 * (j0 + j), &pair, sizeof pair);
      }
    }
  }
}

SPARTA_KERNEL_CLONES void pack_bf16_pairs_t(uint16_t* B, int64_t ldb, const float* X, int64_t ldx, int64_t k,
                                            int64_t n) {
  constexpr int64_t kJ = 16, kP = 64;  // kP even: a tile holds whole pairs
  uint16_t tmp[kJ][kP];
  for (int64_t j0 = 0; j0 < n; j0 += kJ)
    for (int64_t p0 = 0; p0 < k; p0 += kP) {
      const int64_t nj = n - j0 < kJ ? n - j0 : kJ, np = k - p0 < kP ? k - p0 : kP;
      for (int64_t j = 0; j < nj; ++j) {
        const float* x = X + (j0 + j) * ldx + p0;
        for (int64_t p = 0; p < np; ++p) tmp[j][p] = f32_to_bf16_bits(x[p]);
        if (np & 1) tmp[j][np] = 0;
      }
      for (int64_t q = 0; q < (np + 1) / 2; ++q) {
        uint16_t* b = B + (p0 / 2 + q) * ldb + 2 * j0;
        for (int64_t j = 0; j < nj; ++j) std::memcpy(b + 2 * j, &tmp[j][2 * q], 2 * sizeof(uint16_t));
      }
    }
}

}  // namespace sparta::ops
