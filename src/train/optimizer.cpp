#include "train/optimizer.h"

#include "ops/adamw.h"

namespace sparta {

AdamW::AdamW(ParamStore& params, const AdamWHyper& h)
    : params_(params), h_(h), m_(Tensor::zeros({params.size()})), v_(Tensor::zeros({params.size()})) {}

void AdamW::step(float lr) {
  ++t_;
  // Parameters are contiguous in declaration order, so merge neighbours that
  // share a decay setting into one kernel call.
  const auto& ps = params_.params();
  size_t i = 0;
  while (i < ps.size()) {
    size_t j = i;
    int64_t begin = ps[i].offset, end = ps[i].offset + ps[i].numel;
    while (j + 1 < ps.size() && ps[j + 1].decay == ps[i].decay) {
      ++j;
      end = ps[j].offset + ps[j].numel;
    }
    float wd = ps[i].decay ? h_.weight_decay : 0.0f;
    // Alignment padding between merged parameters has zero grad, zero
    // value and zero moments, so updating it is harmless (stays zero).
    ops::adamw_update(params_.data() + begin, params_.grad() + begin, m() + begin, v() + begin, end - begin, lr,
                      h_.beta1, h_.beta2, h_.eps, wd, t_);
    i = j + 1;
  }
}

}  // namespace sparta
