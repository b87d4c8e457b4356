#include "ops/attention_bf16_operands.h"

namespace sparta::ops {

Bf16KeysValues::Bf16KeysValues(const float* k, const float* v, const AttnDims& d) {
  const Bf16HeadLayout L(d);
  head = L.head_elems();
  kd = bf16_buffer(d.B * d.H * head);
  vt = bf16_buffer(d.B * d.H * head);
#pragma omp parallel for schedule(static)
  for (int64_t bh = 0; bh < d.B * d.H; ++bh) {
    const int64_t off = (bh / d.H) * d.T * d.ld + (bh % d.H) * d.D;
    L.pairs_d(kd.get() + bh * head, k + off, d.ld);
    L.pairs_t(vt.get() + bh * head, v + off, d.ld);
  }
}

}  // namespace sparta::ops
