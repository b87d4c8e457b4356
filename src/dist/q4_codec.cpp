#include "dist/q4_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/kernel_clones.h"

namespace sparta::dist {

namespace {

constexpr float kLevels = 7.0f;  // codes in [-7, 7]: symmetric, no lone -8

// The values of one block as they will be encoded: x + residual.
SPARTA_KERNEL_CLONES bool compensate(float* c, const float* x, const float* residual, int64_t len, float* max_abs) {
  float m = 0.0f;
  bool finite = true;
  for (int64_t i = 0; i < len; ++i) {
    c[i] = residual ? x[i] + residual[i] : x[i];
    finite &= std::isfinite(c[i]);
    m = std::fmax(m, std::fabs(c[i]));
  }
  *max_abs = m;
  return finite;
}

int nibble(float v, float inv_scale) {
  const float q = std::nearbyint(v * inv_scale);
  const int qi = static_cast<int>(std::fmax(-kLevels, std::fmin(kLevels, q)));
  return qi & 0xF;
}

float from_nibble(int nib) { return static_cast<float>(nib >= 8 ? nib - 16 : nib); }

}  // namespace

Q4Layout q4_layout(int64_t n, int64_t block) {
  SPARTA_CHECK(n >= 0, "[q4] negative value count ", n);
  SPARTA_CHECK(block >= 2 && block <= 65536 && block % 2 == 0,
               "[q4] block must be an even number of values in [2, 65536], got ", block);
  return Q4Layout{n, block};
}

bool q4_encode(uint8_t* out, const float* x, float* residual, const Q4Layout& layout) {
  const int64_t n = layout.n, block = layout.block, nb = layout.blocks();
  // Every block is checked before anything is written: a non-finite value
  // anywhere leaves out and residual as they were.
  std::vector<float> c(static_cast<size_t>(block));
  bool finite = true;
  for (int64_t b = 0; b < nb && finite; ++b) {
    const int64_t i0 = b * block, len = std::min(block, n - i0);
    float m = 0.0f;
    finite = compensate(c.data(), x + i0, residual ? residual + i0 : nullptr, len, &m);
  }
  if (!finite) return false;
  uint8_t* codes = out + nb * 4;
  std::memset(codes, 0, static_cast<size_t>(layout.code_bytes()));
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t i0 = b * block, len = std::min(block, n - i0);
    float m = 0.0f;
    compensate(c.data(), x + i0, residual ? residual + i0 : nullptr, len, &m);
    float scale = m / kLevels;
    // A block whose largest value is so small that its scale underflows is
    // sent as zeros (its values stay in the residual).
    if (!(scale >= std::numeric_limits<float>::min())) scale = 0.0f;
    const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
    std::memcpy(out + b * 4, &scale, sizeof(float));
    for (int64_t i = 0; i < len; ++i) {
      const int nib = nibble(c[i], inv);
      const int64_t k = i0 + i;
      codes[k / 2] |= static_cast<uint8_t>(k % 2 == 0 ? nib : nib << 4);
      if (residual) residual[k] = c[i] - from_nibble(nib) * scale;
    }
  }
  return true;
}

void q4_decode(float* y, const uint8_t* in, const Q4Layout& layout, bool accumulate) {
  const int64_t n = layout.n, block = layout.block, nb = layout.blocks();
  const uint8_t* codes = in + nb * 4;
  for (int64_t b = 0; b < nb; ++b) {
    float scale;
    std::memcpy(&scale, in + b * 4, sizeof(float));
    const int64_t i0 = b * block, end = std::min(n, i0 + block);
    for (int64_t k = i0; k < end; ++k) {
      const int nib = k % 2 == 0 ? codes[k / 2] & 0xF : codes[k / 2] >> 4;
      const float v = from_nibble(nib) * scale;
      y[k] = accumulate ? y[k] + v : v;
    }
  }
}

}  // namespace sparta::dist
