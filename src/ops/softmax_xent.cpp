#include "ops/softmax_xent.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/error.h"
#include "ops/elementwise.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // see ops/elementwise.h: vectors never cross a call

namespace sparta::ops {
namespace {

using simd::f32v;
using simd::f64v;

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Padding lanes are -inf: they do not change the max and their exp is 0.
SPARTA_SIMD_INLINE float row_max(const float* x, int64_t V) {
  return simd::hmax(simd::reduce_blocks(V, simd::splat(kNegInf), simd::Max{},
                                        [&](int64_t i, int64_t n, auto partial) SPARTA_SIMD_LAMBDA {
                                          return simd::load_n<partial>(x + i, n, kNegInf);
                                        }));
}

// Sum of exp(x - m) in double; with kStore also writes each exp to out (out
// may be x). This sweep is compute-bound (the row is already in cache) while
// the max sweep of the next row is memory-bound, so the next row (`next`,
// or nullptr) is prefetched here, one cache line per vector, to overlap them.
template <bool kStore>
SPARTA_SIMD_INLINE double sum_exp(float* out, const float* x, const float* next, int64_t V, float m) {
  return simd::hsum(
      simd::reduce_blocks(V, f64v{}, simd::Sum{}, [&](int64_t i, int64_t n, auto partial) SPARTA_SIMD_LAMBDA {
        if (next != nullptr) __builtin_prefetch(next + i);
        const f32v e = simd::exp(simd::load_n<partial>(x + i, n, kNegInf) - m);
        if constexpr (kStore) simd::store_n<partial>(out + i, e, n);
        return simd::widen(e);
      }));
}

SPARTA_SIMD_INLINE void scale_row(float* d, int64_t V, float k) {
  simd::for_blocks(V, [&](int64_t i, int64_t n, auto partial) SPARTA_SIMD_LAMBDA {
    simd::store_n<partial>(d + i, simd::load_n<partial>(d + i, n, 0.0f) * k, n);
  });
}

// loss = log(sum_j e^(x_j - m)) + m - x_t. Three sweeps over one row: the
// first brings it from memory, the others hit L1/L2 (a row is V floats), so
// logits are read from memory once and dlogits written once.
SPARTA_KERNEL_CLONES double xent_row_backward(float* d, const float* x, const float* next, int64_t V,
                                              int32_t target, float grad_scale) {
  const float m = row_max(x, V);
  const float xt = x[target];  // read before d (possibly == x) is overwritten
  const double sum = sum_exp<true>(d, x, next, V, m);
  scale_row(d, V, static_cast<float>(grad_scale / sum));
  d[target] -= grad_scale;
  return std::log(sum) + static_cast<double>(m) - static_cast<double>(xt);
}

SPARTA_KERNEL_CLONES double xent_row(const float* x, const float* next, int64_t V, int32_t target) {
  const float m = row_max(x, V);
  const double sum = sum_exp<false>(nullptr, x, next, V, m);
  return std::log(sum) + static_cast<double>(m) - static_cast<double>(x[target]);
}

SPARTA_KERNEL_CLONES void softmax_row_kernel(float* probs, const float* logits, int64_t V,
                                             float inv_temperature) {
  const float m = row_max(logits, V);
  const double sum = simd::hsum(
      simd::reduce_blocks(V, f64v{}, simd::Sum{}, [&](int64_t i, int64_t n, auto partial) SPARTA_SIMD_LAMBDA {
        const f32v e = simd::exp((simd::load_n<partial>(logits + i, n, kNegInf) - m) * inv_temperature);
        simd::store_n<partial>(probs + i, e, n);
        return simd::widen(e);
      }));
  scale_row(probs, V, static_cast<float>(1.0 / sum));
}

// Validates the targets and counts the rows that are not ignored.
int64_t count_targets(const char* op, const int32_t* targets, int64_t N, int64_t V) {
  SPARTA_CHECK(N >= 0 && V > 0, "[", op, "] invalid sizes N=", N, " V=", V);
  int64_t counted = 0;
  for (int64_t r = 0; r < N; ++r) {
    SPARTA_CHECK(targets[r] == -1 || (targets[r] >= 0 && targets[r] < V), "[", op, "] target ", targets[r],
                 " at row ", r, " is outside [0, ", V, ") and not -1 (ignore)");
    counted += targets[r] != -1;
  }
  return counted;
}

// Per-row losses land in a buffer and are summed in row order afterwards, so
// the total does not depend on how rows were split across threads. The
// buffer belongs to the calling thread and is reused across calls; pool
// threads write through the returned pointer.
double* loss_buffer(int64_t N) {
  thread_local std::vector<double> buf;
  buf.resize(static_cast<size_t>(N));
  return buf.data();
}

double sum_in_order(const double* losses, int64_t N) {
  double total = 0.0;
  for (int64_t r = 0; r < N; ++r) total += losses[r];
  return total;
}

}  // namespace

double softmax_xent_forward_backward(float* dlogits, const float* logits, const int32_t* targets, int64_t N,
                                     int64_t V, float grad_scale, int64_t* count) {
  const int64_t counted = count_targets("softmax_xent", targets, N, V);
  double* losses = loss_buffer(N);
#pragma omp parallel for schedule(static) if (N * V >= kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    float* d = dlogits + r * V;
    if (targets[r] == -1) {
      std::memset(d, 0, sizeof(float) * static_cast<size_t>(V));
      losses[r] = 0.0;
    } else {
      losses[r] = xent_row_backward(d, logits + r * V, r + 1 < N ? logits + (r + 1) * V : nullptr, V,
                                    targets[r], grad_scale);
    }
  }
  if (count != nullptr) *count = counted;
  return sum_in_order(losses, N);
}

double softmax_xent_forward(float* row_losses, const float* logits, const int32_t* targets, int64_t N,
                            int64_t V, int64_t* count) {
  const int64_t counted = count_targets("softmax_xent", targets, N, V);
  double* losses = loss_buffer(N);
#pragma omp parallel for schedule(static) if (N * V >= kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    losses[r] = targets[r] == -1
                    ? 0.0
                    : xent_row(logits + r * V, r + 1 < N ? logits + (r + 1) * V : nullptr, V, targets[r]);
    if (row_losses != nullptr) row_losses[r] = static_cast<float>(losses[r]);
  }
  if (count != nullptr) *count = counted;
  return sum_in_order(losses, N);
}

void softmax_row(float* probs, const float* logits, int64_t V, float temperature) {
  SPARTA_CHECK(V > 0, "[softmax] invalid vocabulary size ", V);
  SPARTA_CHECK(temperature > 0.0f && std::isfinite(temperature),
               "[softmax] temperature must be positive, got ", temperature);
  softmax_row_kernel(probs, logits, V, 1.0f / temperature);
}

}  // namespace sparta::ops
