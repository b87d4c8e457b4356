#pragma once
// GELU, tanh approximation (GPT-2 / PyTorch approximate="tanh"):
//   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
#include <cstdint>

namespace sparta::ops {

// y, x: (n,). y may alias x. Error vs the formula evaluated in double:
// relative <= 1e-6, or absolute <= 1e-10 where |gelu(x)| < 2e-6 (x < ~-4.5:
// there the float rounding of the tanh argument dominates).
void gelu_forward(float* y, const float* x, int64_t n);

// dx = dy * gelu'(x), overwriting dx (not accumulated); dx, dy, x: (n,).
// dx may alias dy.
void gelu_backward(float* dx, const float* dy, const float* x, int64_t n);

}  // namespace sparta::ops
