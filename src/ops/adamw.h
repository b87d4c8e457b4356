#pragma once
// AdamW with decoupled weight decay, torch.optim.AdamW semantics
// (amsgrad=False, maximize=False). For step t (1-based):
//   p *= 1 - lr * weight_decay
//   m = beta1 m + (1 - beta1) g
//   v = beta2 v + (1 - beta2) g^2
//   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
//   p -= lr / (1 - beta1^t) * m / denom
// Bias corrections are computed in double and applied in float, as PyTorch
// does with its Python-scalar hyperparameters.
#include <cstdint>

namespace sparta::ops {

// p, g, m, v: (n,); m and v are the optimizer moments (zero before step 1).
// Updates p, m, v in place. Element-wise, so independent of the thread count.
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int64_t t);

}  // namespace sparta::ops
