#include "ops/grad_clip.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/elementwise.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // see ops/elementwise.h: vectors never cross a call

namespace sparta::ops {
namespace {

using simd::f64v;

// Fixed chunking (independent of the thread count) makes the sum order fixed.
constexpr int64_t kChunk = 1 << 14;

SPARTA_KERNEL_CLONES double sum_squares(const float* g, int64_t n) {
  return simd::hsum(simd::reduce_blocks(n, f64v{}, simd::Sum{},
                                        [&](int64_t i, int64_t len, auto partial) SPARTA_SIMD_LAMBDA {
                                          const f64v x = simd::widen(simd::load_n<partial>(g + i, len, 0.0f));
                                          return x * x;
                                        }));
}

}  // namespace

double grad_norm(const float* g, int64_t n) {
  if (n <= 0) return 0.0;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  // Per calling thread, reused across calls. Pool threads reach it through
  // `sums` (naming a thread_local inside the region would give their own copy).
  thread_local std::vector<double> partials;
  partials.resize(static_cast<size_t>(chunks));
  double* sums = partials.data();
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk;
    sums[c] = sum_squares(g + i0, std::min(kChunk, n - i0));
  }
  double total = 0.0;
  for (int64_t c = 0; c < chunks; ++c) total += sums[c];
  return std::sqrt(total);
}

double clip_grad_norm(float* g, int64_t n, double max_norm) {
  const double norm = grad_norm(g, n);
  if (max_norm > 0.0) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) scale_inplace(g, static_cast<float>(coef), n);
  }
  return norm;
}

}  // namespace sparta::ops
