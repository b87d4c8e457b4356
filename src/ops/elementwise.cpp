#include "ops/elementwise.h"

#include <algorithm>
#include <bit>

namespace sparta::ops {
namespace {

// Work is split into fixed chunks; a buffer of one chunk or less runs on the
// calling thread because a parallel region costs more than it saves there.
constexpr int64_t kChunk = 1 << 14;

int64_t chunk_count(int64_t n) { return (n + kChunk - 1) / kChunk; }

SPARTA_KERNEL_CLONES void add_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

SPARTA_KERNEL_CLONES void scale_kernel(float* y, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] *= s;
}

// Integer test of the exponent field: no float comparison, so it vectorises.
SPARTA_KERNEL_CLONES bool finite_kernel(const float* x, int64_t n) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) bad |= (std::bit_cast<uint32_t>(x[i]) & 0x7f800000u) == 0x7f800000u;
  return bad == 0;
}

}  // namespace

void add_inplace(float* y, const float* x, int64_t n) {
  const int64_t chunks = chunk_count(n);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk;
    add_kernel(y + i0, x + i0, std::min(kChunk, n - i0));
  }
}

void scale_inplace(float* y, float s, int64_t n) {
  const int64_t chunks = chunk_count(n);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk;
    scale_kernel(y + i0, s, std::min(kChunk, n - i0));
  }
}

bool all_finite(const float* x, int64_t n) {
  const int64_t chunks = chunk_count(n);
  int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk;
    bad |= !finite_kernel(x + i0, std::min(kChunk, n - i0));
  }
  return bad == 0;
}

}  // namespace sparta::ops
