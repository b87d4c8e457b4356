#include "ops/gelu.h"

#include <algorithm>

#include "core/convert.h"
#include "ops/elementwise.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // see ops/elementwise.h: vectors never cross a call

namespace sparta::ops {
namespace {

using simd::f32v;
using simd::kLanes;

constexpr int64_t kChunk = 1 << 14;  // elements per parallel work item (multiple of kLanes)
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;
// exp(80) keeps 1/(1 + e) a normal float (no denormal stalls) and e*s finite;
// beyond it gelu(x) < 1e-33 in magnitude.
constexpr float kMaxExponent = 80.0f;

// 0.5 (1 + tanh(u)) = 1 / (1 + e^(-2u)). Using the logistic form avoids the
// cancellation of 1 + tanh(u) for negative u, so gelu = x / (1 + e^(-2u))
// keeps full relative precision on the whole range. Returns e = e^(-2u),
// with -2u clamped to kMaxExponent (also the precondition of simd::exp).
SPARTA_SIMD_INLINE f32v gelu_exp(const f32v& x) {
  const f32v z = (-2.0f * kSqrt2OverPi) * (x + kCubic * x * x * x);
  return simd::exp(z > kMaxExponent ? simd::splat(kMaxExponent) : z);
}

SPARTA_SIMD_INLINE f32v gelu_block(const f32v& x) { return x / (1.0f + gelu_exp(x)); }

// gelu'(x) = s + 0.5 x (1 - tanh^2 u) u' = s + 2 x s (1 - s) u' with
// s = 1 / (1 + e), 1 - s = e s (again no cancellation) and
// u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
SPARTA_SIMD_INLINE f32v gelu_grad_block(const f32v& dy, const f32v& x) {
  const f32v e = gelu_exp(x);
  const f32v s = 1.0f / (1.0f + e);
  const f32v du = kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
  return dy * (s + 2.0f * x * s * (e * s) * du);
}

SPARTA_KERNEL_CLONES void gelu_forward_kernel(float* y, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) simd::store(y + i, gelu_block(simd::load(x + i)));
  if (i < n) simd::store_partial(y + i, gelu_block(simd::load_partial(x + i, n - i, 0.0f)), n - i);
}

SPARTA_KERNEL_CLONES void gelu_backward_kernel(float* dx, const float* dy, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    simd::store(dx + i, gelu_grad_block(simd::load(dy + i), simd::load(x + i)));
  if (i < n) {
    const int64_t r = n - i;
    simd::store_partial(
        dx + i, gelu_grad_block(simd::load_partial(dy + i, r, 0.0f), simd::load_partial(x + i, r, 0.0f)), r);
  }
}

// Elements widened to FP32 at a time on the stack by the 16-bit forms.
constexpr int64_t kWiden = 1024;

}  // namespace

}  // namespace sparta::ops

namespace sparta::ops {
namespace {

// Calls fn(i, k, widened) for runs [i, i + k) of x, with x's run widened to
// FP32 in `widened`; parallel over fixed chunks.
template <class Fn>
void for_widened_runs(const uint16_t* x, int64_t n, DType t, Fn fn) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    alignas(64) float buf[kWiden];
    const int64_t end = std::min(n, (c + 1) * kChunk);
    for (int64_t i = c * kChunk; i < end; i += kWiden) {
      const int64_t k = std::min(kWiden, end - i);
      widen_16bit(t, buf, x + i, k);
      fn(i, k, buf);
    }
  }
}

}  // namespace

void gelu_forward(uint16_t* y, const uint16_t* x, int64_t n, DType t) {
  for_widened_runs(x, n, t, [&](int64_t i, int64_t k, float* buf) {
    gelu_forward_kernel(buf, buf, k);
    round_to_16bit(t, y + i, buf, k);
  });
}

void gelu_backward(float* dx, const float* dy, const uint16_t* x, int64_t n, DType t) {
  for_widened_runs(x, n, t, [&](int64_t i, int64_t k, float* buf) { gelu_backward_kernel(dx + i, dy + i, buf, k); });
}

void gelu_forward(float* y, const float* x, int64_t n) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk;
    gelu_forward_kernel(y + i0, x + i0, std::min(kChunk, n - i0));
  }
}

void gelu_backward(float* dx, const float* dy, const float* x, int64_t n) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk;
    gelu_backward_kernel(dx + i0, dy + i0, x + i0, std::min(kChunk, n - i0));
  }
}

}  // namespace sparta::ops
