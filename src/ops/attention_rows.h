#pragma once
// Row primitives shared by the sparse attention kernels (block-sparse and
// row-sparse): the per-row pieces of softmax backward, vectorised with the
// SIMD toolkit of elementwise.h and cloned per ISA.
#include <cstdint>
#include <vector>

#include "ops/attention.h"

namespace sparta::ops {

// Backward of one query row against n keys of which the first nv are
// allowed: s holds the scaled scores S, dp the products dO·vᵀ. On return
// s = P = exp(S - lse) and dp = dS = P ⊙ (dP - di); keys j >= nv are 0 in
// both.
void softmax_grad_row(float* s, float* dp, int64_t n, int64_t nv, float lse, float di);

// Σ a[i]·b[i] over n floats.
float dot_row(const float* a, const float* b, int64_t n);

// Di = rowsum(dO ⊙ O) per (b, h, t), the softmax-backward correction of each
// row: (B, H, T), from dout and out (B, T, H, D). Parallel over rows.
std::vector<float> softmax_backward_di(const float* dout, const float* out, const AttnDims& d);

}  // namespace sparta::ops
