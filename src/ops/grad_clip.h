#pragma once
// Global gradient-norm clipping (torch.nn.utils.clip_grad_norm_, L2 norm).
// A flat gradient buffer is one call; for several buffers combine the norms
// as sqrt(sum of squares) and scale each buffer by the same coefficient.
#include <cstdint>

namespace sparta::ops {

// L2 norm of g: (n,), accumulated in double over fixed chunks whose partial
// sums are added in chunk order: bit-identical for any thread count.
double grad_norm(const float* g, int64_t n);

// norm = grad_norm(g, n); coef = max_norm / (norm + 1e-6); if coef < 1, g *= coef.
// max_norm <= 0 disables clipping (the norm is still computed).
// Returns the pre-clip norm. A NaN norm leaves g unchanged (the caller sees
// the NaN); an infinite norm gives coef = 0.
double clip_grad_norm(float* g, int64_t n, double max_norm);

}  // namespace sparta::ops
