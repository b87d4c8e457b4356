#pragma once
// Layer normalisation over the last dimension (PyTorch nn.LayerNorm):
//   y = (x - mean) * rstd * w + b,  rstd = 1 / sqrt(var + eps), biased variance.
#include <cstdint>

#include "core/dtype.h"

namespace sparta::ops {

// y, x: (N, C); mean, rstd: (N,) saved for the backward; w, b: (C,).
// y may alias x. Rows run in parallel; each row's result does not depend on
// the thread count.
void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
                       int64_t N, int64_t C, float eps);

// Fused LayerNorm + rounding to a 16-bit type (mixed precision): y16 (N, C)
// of type t (BF16 or F16) holds exactly round_to_16bit(t, layernorm_forward
// (...)) -- each row is normalised in FP32 into a per-thread row buffer and
// rounded while still in cache, instead of a second pass over an FP32 copy.
// The FP32 result is not kept.
void layernorm_forward(uint16_t* y16, DType t, float* mean, float* rstd, const float* x, const float* w,
                       const float* b, int64_t N, int64_t C, float eps);

// Fused residual add + LayerNorm (the pre-LN block's second half starts with
// both): sum = x + r, then y = LayerNorm(sum) in type t (F32, or BF16/F16
// rounded as above), one pass over each row while it is in cache. Equal bit
// for bit to the unfused sum, layernorm_forward and rounding. sum: (N, C)
// kept (the residual stream); y must not alias sum, x or r.
void residual_layernorm_forward(float* sum, void* y, DType t, float* mean, float* rstd, const float* x,
                                const float* r, const float* w, const float* b, int64_t N, int64_t C, float eps);

// dw += dL/dw, db += dL/db (parameter gradients accumulate); dx = dL/dx,
// or dx += dL/dx with accumulate_dx (a residual stream's gradient).
// dx, dy, x: (N, C); w, dw, db: (C,); mean, rstd: (N,) from the forward.
// dw/db are reduced over fixed blocks of rows (the blocking depends only on
// N) and the block partials are summed in block order, so all results are
// bit-identical for any thread count.
void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                        const float* mean, const float* rstd, int64_t N, int64_t C, bool accumulate_dx);

}  // namespace sparta::ops
