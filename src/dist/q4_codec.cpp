#include "dist/q4_codec.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/kernel_clones.h"

namespace sparta::dist {

namespace {

constexpr int kLevels = 7;  // codes in [-7, 7]: symmetric, no lone -8

}  // namespace

// |v| <= FLT_MAX fails for NaN and for infinities; an integer OR so that it
// vectorizes.
SPARTA_KERNEL_CLONES bool q4_all_finite(const float* x, const float* residual, int64_t n) {
  constexpr float kMax = std::numeric_limits<float>::max();
  int bad = 0;
  if (residual) {
    for (int64_t i = 0; i < n; ++i) bad |= !(std::fabs(x[i] + residual[i]) <= kMax);
  } else {
    for (int64_t i = 0; i < n; ++i) bad |= !(std::fabs(x[i]) <= kMax);
  }
  return bad == 0;
}

namespace {

// Largest |x + residual| of a block of finite values: the bit patterns of
// non-negative floats order as the floats do, and an integer max vectorizes.
SPARTA_KERNEL_CLONES float block_max_abs(const float* x, const float* residual, int64_t len) {
  uint32_t m = 0;
  for (int64_t i = 0; i < len; ++i) {
    const float v = residual ? x[i] + residual[i] : x[i];
    m = std::max(m, std::bit_cast<uint32_t>(v) & 0x7fffffffu);
  }
  return std::bit_cast<float>(m);
}

// The scale rounded up to 21 significant bits, so that code · scale (a
// 3-bit integer times it) is exact in FP32: every rank then decodes the same
// bytes to the same floats, and y + code · scale is the same whether the
// compiler fuses it into an FMA (the AVX2 / AVX-512 clones) or not (the
// baseline one). Rounding up keeps |v| / scale <= 7; only where 7 · scale
// would then overflow (values near FLT_MAX) is it rounded down, and the
// largest value's code 7 errs by 7 · 2^-21 of a scale.
float exact_multiples(float scale) {
  const uint32_t bits = std::bit_cast<uint32_t>(scale);
  const float up = std::bit_cast<float>((bits + 7u) & ~7u);
  return std::isfinite(up * static_cast<float>(kLevels)) ? up : std::bit_cast<float>(bits & ~7u);
}

int code_of(float v, float inv_scale) {
  const int q = static_cast<int>(std::nearbyint(v * inv_scale));
  return std::clamp(q, -kLevels, kLevels);
}

// Codes of one block (pairs into bytes, the first of a pair in the low
// nibble) and, with a residual, what they leave out.
SPARTA_KERNEL_CLONES void encode_block(uint8_t* codes, const float* x, float* residual, int64_t len, float scale) {
  const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
  const int64_t pairs = len / 2;
  for (int64_t j = 0; j < pairs; ++j) {
    const float a = residual ? x[2 * j] + residual[2 * j] : x[2 * j];
    const float b = residual ? x[2 * j + 1] + residual[2 * j + 1] : x[2 * j + 1];
    const int qa = code_of(a, inv), qb = code_of(b, inv);
    codes[j] = static_cast<uint8_t>((qa & 0xF) | ((qb & 0xF) << 4));
    if (residual) {
      residual[2 * j] = a - static_cast<float>(qa) * scale;
      residual[2 * j + 1] = b - static_cast<float>(qb) * scale;
    }
  }
  if (len % 2) {  // the last value of an odd n: a low nibble alone
    const int64_t k = len - 1;
    const float a = residual ? x[k] + residual[k] : x[k];
    const int qa = code_of(a, inv);
    codes[pairs] = static_cast<uint8_t>(qa & 0xF);
    if (residual) residual[k] = a - static_cast<float>(qa) * scale;
  }
}

// The signed values of a byte's two nibbles.
inline int low_code(uint8_t byte) { return static_cast<int8_t>(static_cast<uint8_t>(byte << 4)) >> 4; }
inline int high_code(uint8_t byte) { return static_cast<int8_t>(byte) >> 4; }

SPARTA_KERNEL_CLONES void decode_block(float* y, const uint8_t* codes, int64_t len, float scale, bool accumulate) {
  const int64_t pairs = len / 2;
  if (accumulate) {
    for (int64_t j = 0; j < pairs; ++j) {
      y[2 * j] += static_cast<float>(low_code(codes[j])) * scale;
      y[2 * j + 1] += static_cast<float>(high_code(codes[j])) * scale;
    }
  } else {
    for (int64_t j = 0; j < pairs; ++j) {
      y[2 * j] = static_cast<float>(low_code(codes[j])) * scale;
      y[2 * j + 1] = static_cast<float>(high_code(codes[j])) * scale;
    }
  }
  if (len % 2) {
    const float v = static_cast<float>(low_code(codes[pairs])) * scale;
    y[len - 1] = accumulate ? y[len - 1] + v : v;
  }
}

}  // namespace

Q4Layout q4_layout(int64_t n, int64_t block) {
  SPARTA_CHECK(n >= 0, "[q4] negative value count ", n);
  SPARTA_CHECK(block >= 2 && block <= 65536 && block % 2 == 0,
               "[q4] block must be an even number of values in [2, 65536], got ", block);
  return Q4Layout{n, block};
}

bool q4_encode(uint8_t* out, const float* x, float* residual, const Q4Layout& layout) {
  const int64_t n = layout.n, block = layout.block, nb = layout.blocks();
  // Checked before anything is written: a non-finite value anywhere leaves
  // out and residual as they were.
  if (!q4_all_finite(x, residual, n)) return false;
  uint8_t* codes = out + nb * 4;
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t i0 = b * block, len = std::min(block, n - i0);
    float* r = residual ? residual + i0 : nullptr;
    float scale = block_max_abs(x + i0, r, len) / static_cast<float>(kLevels);
    // A block whose largest value is so small that its scale underflows is
    // sent as zeros (its values stay in the residual).
    if (!(scale >= std::numeric_limits<float>::min())) scale = 0.0f;
    scale = exact_multiples(scale);
    std::memcpy(out + b * 4, &scale, sizeof(float));
    encode_block(codes + i0 / 2, x + i0, r, len, scale);  // i0 is even: blocks start on a byte
  }
  return true;
}

void q4_decode(float* y, const uint8_t* in, const Q4Layout& layout, bool accumulate) {
  const int64_t n = layout.n, block = layout.block, nb = layout.blocks();
  const uint8_t* codes = in + nb * 4;
  for (int64_t b = 0; b < nb; ++b) {
    float scale;
    std::memcpy(&scale, in + b * 4, sizeof(float));
    const int64_t i0 = b * block;
    decode_block(y + i0, codes + i0 / 2, std::min(block, n - i0), scale, accumulate);
  }
}

}  // namespace sparta::dist
