#pragma once
// Slow, obviously-correct attention: materializes the T×T score matrix per
// (batch, head) and accumulates in double. It is the test oracle for every
// Attention implementation (dense, window, sparse); never use it for real
// work (O(T²) memory and time).
#include <cstdint>
#include <functional>

#include "ops/attention.h"

namespace sparta {

// Extra sparsity pattern: allowed(b, h, i, j) says whether query position i
// may attend key position j. It is ANDed with the causal mask (d.causal).
// Empty = every key the causal setting permits.
using AttnMask = std::function<bool(int64_t b, int64_t h, int64_t i, int64_t j)>;

// Same layouts as Attention::forward: q, k, v strided by d.ld;
// out: (B, T, H, D); lse: (B, H, T). A row with no allowed key gets out = 0
// and lse = -inf.
void attention_reference_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                                 const AttnDims& d, const AttnMask& allowed = {});

// Same layouts as Attention::backward; recomputes everything from q, k, v,
// so it needs neither out nor lse. dq, dk, dv are overwritten (head slices
// only).
void attention_reference_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                                  const float* k, const float* v, const AttnDims& d,
                                  const AttnMask& allowed = {});

}  // namespace sparta
