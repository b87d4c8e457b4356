#pragma once
// FP32 <-> BF16 / FP16 conversion, for mixed-precision training (16-bit
// activations and weight copies, FP32 master weights) and for the matmul
// fallbacks in core/matmul.cpp. 16-bit values are stored as their raw bits in
// uint16_t: the project has no arithmetic on them, only conversions, and a
// plain integer type keeps buffers trivially copyable and ABI-neutral.
//
// Rounding is IEEE round-to-nearest-even in both directions; widening is
// exact. Bit-level rules (shared by the scalar and the SIMD paths, so both
// give identical bits on every input, NaN payloads included):
//   FP32 -> BF16: the top 16 bits, rounded to nearest even. Overflow rounds to
//     ±inf, FP32 subnormals round to BF16 subnormals (same exponent range).
//     NaN stays NaN: top payload bits kept, quiet bit set.
//   FP32 -> FP16: IEEE binary16. |x| >= 65520 rounds to ±inf; results below
//     2^-14 are FP16 subnormals (rounded to nearest even), below 2^-25 ±0.
//     NaN stays NaN: top 10 payload bits kept, quiet bit set (what F16C's
//     VCVTPS2PH does).
//   BF16 -> FP32: exact (the bits shifted up 16).
//   FP16 -> FP32: exact, subnormals included; NaN stays NaN with its payload
//     and the quiet bit set (what F16C's VCVTPH2PS does).
//
// The bulk functions pick their code at run time: FP16 uses F16C
// instructions when the CPU has them, BF16 uses an AVX-512 / AVX2 clone of
// the integer rounding loop (not AVX512-BF16's VCVTNEPS2BF16: that one
// flushes subnormal inputs to zero, so its bits would depend on the CPU).
// The *_scalar variants are the portable path every machine can run; the
// tests check that both give the same bits.
#include <bit>
#include <cstdint>

#include "core/dtype.h"

namespace sparta {

inline uint16_t f32_to_bf16_bits(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  // Adding 0x7fff plus the lowest kept bit rounds to nearest, ties to even;
  // a carry out of the mantissa bumps the exponent (to inf on overflow).
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float bf16_bits_to_f32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_f16_bits(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x03ffu));  // NaN
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 (or inf): inf
  if (a >= 0x38800000u) {  // >= 2^-14: normal FP16; rebias the exponent (127 -> 15) and round 13 bits off
    const uint32_t r = a - 0x38000000u;
    return static_cast<uint16_t>(sign | ((r + 0x0fffu + ((r >> 13) & 1u)) >> 13));
  }
  if (a < 0x33000000u) return sign;  // < 2^-25: rounds to zero (2^-25 itself is a tie, to even = 0)
  // Subnormal FP16: value = m * 2^-24 with m = mantissa(with implicit 1) >> shift, rounded to nearest even.
  const uint32_t mant = (a & 0x007fffffu) | 0x00800000u;
  const uint32_t shift = 126u - (a >> 23);  // 14..24 for exponents -25..-15
  const uint32_t half = 1u << (shift - 1);
  const uint32_t rest = mant & ((1u << shift) - 1u);
  uint32_t m = mant >> shift;
  if (rest > half || (rest == half && (m & 1u))) ++m;  // may carry into the smallest normal: still correct bits
  return static_cast<uint16_t>(sign | m);
}

inline float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x03ffu;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mant ? 0x00400000u | (mant << 13) : 0u));
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
  // Zero or subnormal: mant * 2^-24, exact in FP32.
  const float magnitude = static_cast<float>(mant) * 0x1p-24f;
  return std::bit_cast<float>(sign | std::bit_cast<uint32_t>(magnitude));
}

// dst[i] = convert(src[i]) for i in [0, n); dst and src must not overlap.
void f32_to_bf16(uint16_t* dst, const float* src, int64_t n);
void bf16_to_f32(float* dst, const uint16_t* src, int64_t n);
void f32_to_f16(uint16_t* dst, const float* src, int64_t n);
void f16_to_f32(float* dst, const uint16_t* src, int64_t n);

// The portable path of the functions above (one element at a time, no
// run-time dispatch): same results, for tests and as a reference.
void f32_to_bf16_scalar(uint16_t* dst, const float* src, int64_t n);
void bf16_to_f32_scalar(float* dst, const uint16_t* src, int64_t n);
void f32_to_f16_scalar(uint16_t* dst, const float* src, int64_t n);
void f16_to_f32_scalar(float* dst, const uint16_t* src, int64_t n);

// Typed and parallel forms for large buffers (activations, weight copies):
// t is BF16 or F16; the work is split over OpenMP threads in fixed chunks
// (each element's bits do not depend on the split). Called inside a
// parallel region they run on the calling thread.
void round_to_16bit(DType t, uint16_t* dst, const float* src, int64_t n);
void widen_16bit(DType t, float* dst, const uint16_t* src, int64_t n);

// Whether f32_to_f16 / f16_to_f32 use F16C instructions on this machine (for
// tests and benchmark reports; false in SPARTA_PORTABLE_KERNELS builds).
bool f16_conversion_uses_f16c();

}  // namespace sparta
