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

// Forward piece of one row: s (n scores, the first nv allowed) becomes
// exp(s - mx) (0 where masked) with mx the max of the allowed ones; returns
// mx and the sum of the exponentials in *sum. When nothing is allowed or
// every allowed score is -inf: returns -inf, s all 0, *sum = 0.
float softmax_exp_row(float* s, int64_t n, int64_t nv, float* sum);

// x[i] = exp(x[i] - shift) over n floats (-inf entries become 0).
void exp_shifted(float* x, int64_t n, float shift);

// Σ a[i]·b[i] over n floats.
float dot_row(const float* a, const float* b, int64_t n);

// Each head's (T, D) slice of x (strided by d.ld) as (D, T):
// xt[(b*H + h)*D*T + e*T + t] = x[(b*T + t)*ld + h*D + e], so that score
// products read keys contiguously. Parallel over heads.
std::vector<float> transposed_heads(const float* x, const AttnDims& d);

// Di = rowsum(dO ⊙ O) per (b, h, t), the softmax-backward correction of each
// row: (B, H, T), from dout and out (B, T, H, D). Parallel over rows.
std::vector<float> softmax_backward_di(const float* dout, const float* out, const AttnDims& d);

}  // namespace sparta::ops
