#include "core/convert.h"

#include <omp.h>

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/kernel_clones.h"  // the project-wide choice of ISA clones

namespace sparta {

namespace {

// The BF16 loops are pure integer code, which GCC vectorises in every clone;
// the clones only change how many lanes a step takes, never the bits.
SPARTA_KERNEL_CLONES void f32_to_bf16_kernel(uint16_t* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16_bits(src[i]);
}

SPARTA_KERNEL_CLONES void bf16_to_f32_kernel(float* dst, const uint16_t* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_bits_to_f32(src[i]);
}

#ifndef SPARTA_NO_TARGET_CLONES
// F16C converts 8 values an instruction. The tail goes through the same
// instruction via a padded copy, so every element takes the same path.
__attribute__((target("avx,f16c"))) void f32_to_f16_f16c(uint16_t* dst, const float* src, int64_t n) {
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), kRound));
  if (i < n) {
    float in[8] = {};
    uint16_t out[8];
    std::memcpy(in, src + i, sizeof(float) * static_cast<size_t>(n - i));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_cvtps_ph(_mm256_loadu_ps(in), kRound));
    std::memcpy(dst + i, out, sizeof(uint16_t) * static_cast<size_t>(n - i));
  }
}

__attribute__((target("avx,f16c"))) void f16_to_f32_f16c(float* dst, const uint16_t* src, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  if (i < n) {
    uint16_t in[8] = {};
    float out[8];
    std::memcpy(in, src + i, sizeof(uint16_t) * static_cast<size_t>(n - i));
    _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in))));
    std::memcpy(dst + i, out, sizeof(float) * static_cast<size_t>(n - i));
  }
}
#endif

}  // namespace

bool f16_conversion_uses_f16c() {
#ifdef SPARTA_NO_TARGET_CLONES
  return false;
#else
  static const bool has = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return has;
#endif
}

void f32_to_bf16(uint16_t* dst, const float* src, int64_t n) { f32_to_bf16_kernel(dst, src, n); }
void bf16_to_f32(float* dst, const uint16_t* src, int64_t n) { bf16_to_f32_kernel(dst, src, n); }

void f32_to_f16(uint16_t* dst, const float* src, int64_t n) {
#ifndef SPARTA_NO_TARGET_CLONES
  if (f16_conversion_uses_f16c()) return f32_to_f16_f16c(dst, src, n);
#endif
  f32_to_f16_scalar(dst, src, n);
}

void f16_to_f32(float* dst, const uint16_t* src, int64_t n) {
#ifndef SPARTA_NO_TARGET_CLONES
  if (f16_conversion_uses_f16c()) return f16_to_f32_f16c(dst, src, n);
#endif
  f16_to_f32_scalar(dst, src, n);
}

namespace {
constexpr int64_t kConvertChunk = 1 << 16;

template <class Fn>
void for_chunks(int64_t n, Fn fn) {
  const int64_t chunks = (n + kConvertChunk - 1) / kConvertChunk;
  // No parallel construct at all for one chunk or inside a parallel region:
  // even a one-thread team costs libgomp a team start, and the per-run
  // calls of the 16-bit kernels (ops/gelu.cpp) made that cost dominate.
  if (chunks <= 1 || omp_in_parallel()) {
    for (int64_t c = 0; c < chunks; ++c) fn(c * kConvertChunk, std::min(kConvertChunk, n - c * kConvertChunk));
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) fn(c * kConvertChunk, std::min(kConvertChunk, n - c * kConvertChunk));
}

void check_16bit(DType t) {
  SPARTA_CHECK(t == DType::BF16 || t == DType::F16, "[convert] ", dtype_name(t), " is not a 16-bit float type");
}
}  // namespace

void round_to_16bit(DType t, uint16_t* dst, const float* src, int64_t n) {
  check_16bit(t);
  for_chunks(n, [&](int64_t i, int64_t k) {
    t == DType::BF16 ? f32_to_bf16(dst + i, src + i, k) : f32_to_f16(dst + i, src + i, k);
  });
}

void widen_16bit(DType t, float* dst, const uint16_t* src, int64_t n) {
  check_16bit(t);
  for_chunks(n, [&](int64_t i, int64_t k) {
    t == DType::BF16 ? bf16_to_f32(dst + i, src + i, k) : f16_to_f32(dst + i, src + i, k);
  });
}

// Baseline x86-64 code with no dispatch: what a machine without AVX2 / F16C
// runs, and the reference the dispatched paths are tested against.
void f32_to_bf16_scalar(uint16_t* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16_bits(src[i]);
}
void bf16_to_f32_scalar(float* dst, const uint16_t* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_bits_to_f32(src[i]);
}
void f32_to_f16_scalar(uint16_t* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_f16_bits(src[i]);
}
void f16_to_f32_scalar(float* dst, const uint16_t* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_bits_to_f32(src[i]);
}

}  // namespace sparta
