#pragma once
// GELU, tanh approximation (GPT-2 / PyTorch approximate="tanh"):
//   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
#include <cstdint>

#include "core/dtype.h"

namespace sparta::ops {

// y, x: (n,). y may alias x. Error vs the formula evaluated in double:
// relative <= 1e-6, or absolute <= 1e-10 where |gelu(x)| < 2e-6 (x < ~-4.5:
// there the float rounding of the tanh argument dominates).
void gelu_forward(float* y, const float* x, int64_t n);

// dx = dy * gelu'(x), overwriting dx (not accumulated); dx, dy, x: (n,).
// dx may alias dy.
void gelu_backward(float* dx, const float* dy, const float* x, int64_t n);


// 16-bit forms (mixed precision): x, y hold BF16 or F16 bits of type t; the
// math is the FP32 kernel's on the widened x, and y is rounded to t once.
// Same bits as widening x, running the FP32 form and rounding the result.
void gelu_forward(uint16_t* y, const uint16_t* x, int64_t n, DType t);
// dx (FP32) = dy * gelu'(x) with x in t (the 16-bit pre-activation saved by
// the forward); dx may alias dy.
void gelu_backward(float* dx, const float* dy, const uint16_t* x, int64_t n, DType t);

}  // namespace sparta::ops
