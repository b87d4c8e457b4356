#pragma once
// Block-sparse attention: the execution kernel behind dynamic sparse
// attention (DSA). Queries and keys are cut into blocks of `block` tokens;
// each query block attends only to an explicit, per-(batch, head) list of key
// blocks (its local window plus a few blocks picked by a scorer elsewhere).
// Work is O(T · selected keys) and extra memory O(T); choosing the blocks is
// not this file's job.
#include <cstdint>
#include <vector>

#include "ops/attention.h"

namespace sparta::ops {

// Which key blocks each query block attends to. Query and key blocks share
// the size `block` (the last block of a sequence may be shorter).
// For (b, h, query block qb) the key block ids are
//   keys[offsets[i] .. offsets[i+1])  with  i = (b*H + h)*nqb + qb,
// sorted ascending and unique, each in [0, nqb). With causal attention,
// token-level causality (key pos <= query pos) is applied inside every
// selected block; blocks entirely in the future contribute nothing.
struct BlockSelection {
  int64_t block = 64;
  int64_t nqb = 0;               // ceil(T / block)
  std::vector<int64_t> offsets;  // size B*H*nqb + 1, offsets[0] = 0, non-decreasing, back() = keys.size()
  std::vector<int32_t> keys;     // key block ids
};

// Throws sparta::Error naming `op` and the offending value when sel does not
// describe a selection for d (block < 1, nqb != ceil(T/block), wrong offsets
// size, offsets not a valid partition of keys, an id out of [0, nqb), or a
// list that is unsorted or has duplicates). O(B*H*nqb + keys.size()).
void check_block_selection(const AttnDims& d, const BlockSelection& sel, const char* op);

// Same layouts and semantics as Attention::forward (attention.h): q, k, v
// strided by d.ld (token (b, t), head h at ptr + (b*T + t)*ld + h*D);
// out: (B, T, H, D); lse: (B, H, T); scale 1/sqrt(D); attention restricted to
// the selected key blocks (ANDed with causality when d.causal). A query row
// with no allowed key gets out = 0 and lse = -inf.
// Deterministic: bit-identical results for any OpenMP thread count.
void block_sparse_attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                                    const AttnDims& d, const BlockSelection& sel);

// Same layouts as Attention::backward: dq, dk, dv strided like q, k, v and
// OVERWRITTEN (head slices only; keys no query selects get zero gradient);
// dout, out: (B, T, H, D); lse: (B, H, T) from block_sparse_attention_forward
// with the same selection. Rows with lse = -inf contribute nothing (no NaN).
// Deterministic: bit-identical results for any OpenMP thread count.
void block_sparse_attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                                     const float* lse, const float* q, const float* k, const float* v,
                                     const AttnDims& d, const BlockSelection& sel);

// Every key block the mask permits: blocks 0..qb when causal, all blocks
// otherwise. Reproduces dense attention. block >= 1.
BlockSelection full_selection(const AttnDims& d, int64_t block);

// Sliding window: blocks max(0, qb - window_blocks + 1) .. qb (the last
// window_blocks blocks up to and including qb), for every (b, h). block >= 1,
// window_blocks >= 1.
BlockSelection window_selection(const AttnDims& d, int64_t block, int64_t window_blocks);

}  // namespace sparta::ops
