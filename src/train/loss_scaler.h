#pragma once
// Dynamic loss scaling for FP16 training, with the semantics of PyTorch's
// torch.cuda.amp.GradScaler: the loss gradient is multiplied by `scale`
// before the backward, so gradients that would fall below FP16's smallest
// values (~6e-8) survive the 16-bit products; the FP32 gradients are then
// divided by `scale` again. A step whose unscaled gradients hold an inf or
// NaN (the scale was too large: some 16-bit value overflowed past 65504)
// is skipped and the scale multiplied by backoff_factor; after
// growth_interval finite steps in a row it is multiplied by growth_factor.
#include <cstdint>

namespace sparta {

struct LossScalerConfig {
  double init_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

class LossScaler {
 public:
  explicit LossScaler(const LossScalerConfig& cfg) : cfg_(cfg), scale_(cfg.init_scale) {}
  // The factor the loss gradient is multiplied by this step.
  double scale() const { return scale_; }
  // Finite steps in a row since the last change of scale (checkpointed).
  int64_t good_steps() const { return good_steps_; }
  // Restores a checkpointed state.
  void restore(double scale, int64_t good_steps);
  // Divides grad[0..n) by scale() in place (in FP32, as GradScaler: one
  // multiply by the FP32 inverse). Returns whether every result is finite.
  static bool unscale(float* grad, int64_t n, double scale);
  // Advances the state after a step: found_inf backs off (the step is
  // skipped by the caller), a finite step counts towards growth.
  void update(bool found_inf);

 private:
  LossScalerConfig cfg_;
  double scale_;
  int64_t good_steps_ = 0;
};

}  // namespace sparta
