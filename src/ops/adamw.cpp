#include "ops/adamw.h"

#include <xmmintrin.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "ops/elementwise.h"

namespace sparta::ops {
namespace {

constexpr int64_t kChunk = 1 << 14;  // elements per parallel work item
constexpr int64_t kBlock = 256;      // elements per sqrt batch (stays in L1)

struct Coefficients {
  float decay, beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps, step_size;
};

// sqrt in place. Without -fno-math-errno GCC will not vectorise std::sqrt
// (it keeps the errno path for negative inputs), so this uses the SSE packed
// sqrt, which every x86-64 clone has; v >= 0 here, results are exact IEEE.
inline void sqrt_inplace(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(x + i, _mm_sqrt_ps(_mm_loadu_ps(x + i)));
  for (; i < n; ++i) x[i] = std::sqrt(x[i]);
}

SPARTA_KERNEL_CLONES void adamw_kernel(float* __restrict p, const float* __restrict g, float* __restrict m,
                                       float* __restrict v, int64_t n, const Coefficients& k) {
  alignas(64) float denom[kBlock];
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t len = std::min(kBlock, n - i0);
    float* pb = p + i0;
    const float* gb = g + i0;
    float* mb = m + i0;
    float* vb = v + i0;
    for (int64_t j = 0; j < len; ++j) {
      const float gj = gb[j];
      mb[j] = k.beta1 * mb[j] + k.one_minus_beta1 * gj;
      vb[j] = k.beta2 * vb[j] + k.one_minus_beta2 * gj * gj;
      denom[j] = vb[j];
    }
    sqrt_inplace(denom, len);
    for (int64_t j = 0; j < len; ++j)
      pb[j] = pb[j] * k.decay - k.step_size * (mb[j] / (denom[j] / k.bias_correction2_sqrt + k.eps));
  }
}

}  // namespace

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int64_t t) {
  SPARTA_CHECK(t >= 1, "[adamw] step t=", t, " must be >= 1 (1-based)");
  SPARTA_CHECK(n >= 0, "[adamw] invalid element count ", n);
  SPARTA_CHECK(beta1 >= 0.0f && beta1 < 1.0f && beta2 >= 0.0f && beta2 < 1.0f, "[adamw] betas (", beta1, ", ",
               beta2, ") must lie in [0, 1)");
  const double bias_correction1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(t));
  const double bias_correction2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(t));
  const Coefficients k{
      static_cast<float>(1.0 - static_cast<double>(lr) * static_cast<double>(weight_decay)),
      beta1,
      1.0f - beta1,
      beta2,
      1.0f - beta2,
      static_cast<float>(std::sqrt(bias_correction2)),
      eps,
      static_cast<float>(static_cast<double>(lr) / bias_correction1),
  };
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk;
    adamw_kernel(p + i0, g + i0, m + i0, v + i0, std::min(kChunk, n - i0), k);
  }
}

}  // namespace sparta::ops
