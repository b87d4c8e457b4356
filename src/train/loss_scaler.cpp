#include "train/loss_scaler.h"

#include <cmath>

#include "core/error.h"

namespace sparta {

void LossScaler::restore(double scale, int64_t good_steps) {
  SPARTA_CHECK(std::isfinite(scale) && scale > 0.0, "[train] checkpointed loss scale ", scale,
               " is not a positive finite number");
  SPARTA_CHECK(good_steps >= 0, "[train] checkpointed loss-scale growth counter ", good_steps, " is negative");
  scale_ = scale;
  good_steps_ = good_steps;
}

bool LossScaler::unscale(float* grad, int64_t n, double scale) {
  const float inv = static_cast<float>(1.0 / scale);
  bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite)
  for (int64_t i = 0; i < n; ++i) {
    grad[i] *= inv;
    finite = finite && std::isfinite(grad[i]);
  }
  return finite;
}

void LossScaler::update(bool found_inf) {
  if (found_inf) {
    scale_ *= cfg_.backoff_factor;
    good_steps_ = 0;
    return;
  }
  if (++good_steps_ >= cfg_.growth_interval) {
    scale_ *= cfg_.growth_factor;
    good_steps_ = 0;
  }
}

}  // namespace sparta
