#pragma once
// Layer normalisation over the last dimension (PyTorch nn.LayerNorm):
//   y = (x - mean) * rstd * w + b,  rstd = 1 / sqrt(var + eps), biased variance.
#include <cstdint>

#include "core/dtype.h"

namespace sparta::ops {

// What a training forward keeps for the backward instead of the LayerNorm's
// input and output: the normalised rows x̂ = (x − mean)·rstd, in `type` (F32,
// or rounded to BF16/F16 under mixed precision). The backward needs only x̂
// and rstd, and the output y = x̂·w + b is recomputed from x̂ where a product's
// backward needs it (layernorm_affine), so a pre-LN block keeps one (N, C)
// buffer per LayerNorm rather than its FP32 input (the residual stream) and
// its output. data == nullptr: nothing is kept.
struct Normalized {
  void* data = nullptr;
  DType type = DType::F32;
};

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
// sum may alias x (an in-place residual add). xhat: as layernorm_forward above.
void residual_layernorm_forward(float* sum, void* y, DType t, float* mean, float* rstd, const float* x,
                                const float* r, const float* w, const float* b, int64_t N, int64_t C, float eps,
                                const Normalized& xhat = {});


// LayerNorm of x into y of type yt (F32, BF16, F16; a 16-bit y is the FP32
// result rounded), mean, rstd as above, and x̂ into `xhat` when it is set.
// y is the same as the forms above give, whether x̂ is kept or not.
void layernorm_forward(void* y, DType yt, float* mean, float* rstd, const Normalized& xhat, const float* x,
                       const float* w, const float* b, int64_t N, int64_t C, float eps);

// y (N, C) of type yt = x̂·w + b from a kept x̂ (the backward's recomputation
// of a LayerNorm output). With an F32 x̂ it equals the forward's y bit for
// bit; with a 16-bit x̂ it is the output of the rounded x̂.
void layernorm_affine(void* y, DType yt, const Normalized& xhat, const float* w, const float* b, int64_t N,
                      int64_t C);

// dw += dL/dw, db += dL/db (parameter gradients accumulate); dx = dL/dx,
// or dx += dL/dx with accumulate_dx (a residual stream's gradient).
// dx, dy, x: (N, C); w, dw, db: (C,); mean, rstd: (N,) from the forward.
// dw/db are reduced over fixed blocks of rows (the blocking depends only on
// N) and the block partials are summed in block order, so all results are
// bit-identical for any thread count.
void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                        const float* mean, const float* rstd, int64_t N, int64_t C, bool accumulate_dx);

// The same backward from the kept x̂ (Normalized above) instead of x and
// mean: equal to the form above when x̂ is F32 (up to float rounding of x̂).
void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const Normalized& xhat, const float* w,
                        const float* rstd, int64_t N, int64_t C, bool accumulate_dx);

}  // namespace sparta::ops
