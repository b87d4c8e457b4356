#pragma once
// Element-wise operations over flat float buffers, plus the small SIMD
// toolkit (fixed-width GCC vectors and a vector exp) that the memory-bound
// kernels in src/ops are written with.
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/kernel_clones.h"

namespace sparta::ops {

// y += x; y, x: (n,). y may equal x.
void add_inplace(float* y, const float* x, int64_t n);
// y *= s; y: (n,).
void scale_inplace(float* y, float s, int64_t n);
// True when no element of x: (n,) is NaN or ±inf (n == 0: true).
bool all_finite(const float* x, int64_t n);

// ---------------------------------------------------------------------------
// SIMD building blocks for the kernels in src/ops (not a general API).
//
// GCC does not auto-vectorise loops containing float compare-selects or
// sqrt unless -fno-trapping-math / -fno-math-errno are set (they are not, on
// purpose: the project builds with standard IEEE flags). Writing the hot
// loops with 16-lane GCC vector types makes the vectorisation explicit: the
// AVX-512 clone of a target_clones kernel gets one zmm per vector, the AVX2
// clone two ymm, the baseline clone four xmm — same source, same lane order,
// deterministic results for a given machine.
//
// Every helper is always_inline, so no vector ever crosses a call boundary;
// files using them disable -Wpsabi (GCC warns about the by-value vector ABI
// of the baseline target, which never materialises here).

// SPARTA_KERNEL_CLONES (per-ISA clones of a kernel) comes from core/kernel_clones.h.
#define SPARTA_SIMD_INLINE __attribute__((always_inline)) inline
// For lambdas passed to for_blocks: [&](...) SPARTA_SIMD_LAMBDA { ... }
#define SPARTA_SIMD_LAMBDA __attribute__((always_inline))

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
namespace simd {

constexpr int64_t kLanes = 16;
typedef float f32v __attribute__((vector_size(64)));
typedef int32_t i32v __attribute__((vector_size(64)));
typedef double f64v __attribute__((vector_size(128)));

SPARTA_SIMD_INLINE f32v splat(float x) { return f32v{} + x; }
SPARTA_SIMD_INLINE f32v load(const float* p) {
  f32v v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
SPARTA_SIMD_INLINE void store(float* p, const f32v& v) { std::memcpy(p, &v, sizeof v); }
// Tail handling: lanes [n, 16) are `fill`, so a partial block goes through
// exactly the same arithmetic as a full one.
SPARTA_SIMD_INLINE f32v load_partial(const float* p, int64_t n, float fill) {
  f32v v = splat(fill);
  std::memcpy(&v, p, sizeof(float) * static_cast<size_t>(n));
  return v;
}
SPARTA_SIMD_INLINE void store_partial(float* p, const f32v& v, int64_t n) {
  std::memcpy(p, &v, sizeof(float) * static_cast<size_t>(n));
}
// Compile-time choice between the full and the partial form, for bodies
// written once for both (see for_blocks).
template <bool kPartial>
SPARTA_SIMD_INLINE f32v load_n(const float* p, int64_t n, float fill) {
  if constexpr (kPartial)
    return load_partial(p, n, fill);
  else
    return load(p);
}
template <bool kPartial>
SPARTA_SIMD_INLINE void store_n(float* p, const f32v& v, int64_t n) {
  if constexpr (kPartial)
    store_partial(p, v, n);
  else
    store(p, v);
}
// Runs f(i, n, std::false_type{}) for each full block [i, i + kLanes) of
// [0, count), then f(i, n, std::true_type{}) for the partial tail (n < kLanes)
// if there is one. f reads the tag as a constexpr bool for load_n/store_n.
template <class F>
SPARTA_SIMD_INLINE void for_blocks(int64_t count, F&& f) {
  int64_t i = 0;
  for (; i + kLanes <= count; i += kLanes) f(i, kLanes, std::false_type{});
  if (i < count) f(i, count - i, std::true_type{});
}

SPARTA_SIMD_INLINE f64v widen(const f32v& x) { return __builtin_convertvector(x, f64v); }
SPARTA_SIMD_INLINE f32v vmax(const f32v& a, const f32v& b) { return a > b ? a : b; }  // NaN: unspecified

// Horizontal reductions as a fixed pairwise tree (lane i with lane i + 8,
// then + 4, ...): log2(16) dependent steps instead of 15, same order always.
SPARTA_SIMD_INLINE float hsum(const f32v& v) {
  typedef float f32x8 __attribute__((vector_size(32)));
  typedef float f32x4 __attribute__((vector_size(16)));
  const f32x8 s8 = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                   __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const f32x4 s4 = __builtin_shufflevector(s8, s8, 0, 1, 2, 3) + __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}
SPARTA_SIMD_INLINE double hsum(const f64v& v) {
  typedef double f64x8 __attribute__((vector_size(64)));
  typedef double f64x4 __attribute__((vector_size(32)));
  const f64x8 s8 = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                   __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const f64x4 s4 = __builtin_shufflevector(s8, s8, 0, 1, 2, 3) + __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}
SPARTA_SIMD_INLINE float hmax(const f32v& v) {
  float m = v[0];
  for (int i = 1; i < kLanes; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

// Reduction functors for reduce_blocks.
struct Sum {
  template <class T>
  SPARTA_SIMD_INLINE T operator()(const T& a, const T& b) const {
    return a + b;
  }
};
struct Max {
  SPARTA_SIMD_INLINE f32v operator()(const f32v& a, const f32v& b) const { return vmax(a, b); }
};

// Reduces the values f(i, n, tag) (same calling convention as for_blocks;
// f may also store) with `op` into four independent accumulators, so a
// reduction over a short row is not bound by the latency of one add chain.
// They combine as op(op(a0, a1), op(a2, a3)): a fixed order. A partial tail
// block must return op's identity in its padding lanes (0 for Sum, -inf for
// Max), which load_n's fill provides.
template <class T, class F, class Op>
SPARTA_SIMD_INLINE T reduce_blocks(int64_t count, const T& init, Op op, F&& f) {
  T a0 = init, a1 = init, a2 = init, a3 = init;
  int64_t i = 0;
  for (; i + 4 * kLanes <= count; i += 4 * kLanes) {
    a0 = op(a0, f(i, kLanes, std::false_type{}));
    a1 = op(a1, f(i + kLanes, kLanes, std::false_type{}));
    a2 = op(a2, f(i + 2 * kLanes, kLanes, std::false_type{}));
    a3 = op(a3, f(i + 3 * kLanes, kLanes, std::false_type{}));
  }
  for (; i + kLanes <= count; i += kLanes) a0 = op(a0, f(i, kLanes, std::false_type{}));
  if (i < count) a1 = op(a1, f(i, count - i, std::true_type{}));
  return op(op(a0, a1), op(a2, a3));
}

// exp(x) per lane for x <= 88 (callers clamp larger inputs: e^88 ~ 1.65e38
// is near the float limit and 2^n would overflow the exponent field).
// Max relative error ~1.5 ulp (Cephes expf: x = n ln2 + r, |r| <= ln2/2,
// degree-6 polynomial for e^r, 2^n assembled in the exponent bits). Inputs
// below -87.33 (where e^x would be denormal) give exactly 0, including -inf;
// NaN propagates.
SPARTA_SIMD_INLINE f32v exp(const f32v& x) {
  const f32v lo = splat(-87.336544f);
  const f32v xc = x < lo ? lo : x;  // comparisons are false for NaN: it passes through
  // Round to nearest by the 1.5*2^23 trick (exact for |v| < 2^22).
  const f32v n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  // r = xc - n*ln2 with ln2 split in two so the product is exact.
  f32v r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const f32v z = r * r;
  f32v p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  const i32v ni = __builtin_convertvector(n, i32v);
  const f32v scale = (f32v)((ni + 127) << 23);  // vector cast = bit reinterpretation
  const f32v result = p * scale;
  return x < lo ? splat(0.0f) : result;
}

}  // namespace simd
#pragma GCC diagnostic pop
}  // namespace sparta::ops
