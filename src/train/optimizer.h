#pragma once
// AdamW over a ParamStore: moments in two flat buffers parallel to the
// parameters; weight decay only where ParamInfo::decay is set.
#include <cstdint>

#include "core/tensor.h"
#include "nn/param_store.h"

namespace sparta {

struct AdamWHyper {
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.0f;
};

class AdamW {
 public:
  AdamW(ParamStore& params, const AdamWHyper& h);
  // One update with learning rate lr; increments step() first (bias correction uses it).
  void step(float lr);
  int64_t steps_done() const { return t_; }
  void set_steps_done(int64_t t) { t_ = t; }
  float* m() { return m_.data<float>(); }
  float* v() { return v_.data<float>(); }
  const AdamWHyper& hyper() const { return h_; }

 private:
  ParamStore& params_;
  AdamWHyper h_;
  Tensor m_, v_;
  int64_t t_ = 0;
};

}  // namespace sparta
