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

// Which key blocks each query block attends to. Keys are cut into blocks of
// `block` tokens, queries into blocks of query_block(sel) tokens (qblock, or
// `block` when qblock is 0); the last block of a sequence may be shorter.
// For (b, h, query block qb) the key block ids are
//   keys[offsets[i] .. offsets[i+1])  with  i = (b*H + h)*nqb + qb,
// sorted ascending and unique, each in [0, ceil(T / block)). With causal
// attention, token-level causality (key pos <= query pos) is applied inside
// every selected block; blocks entirely in the future contribute nothing.
struct BlockSelection {
  int64_t block = 64;            // key block size
  int64_t qblock = 0;            // query block size; 0 = same as block
  int64_t nqb = 0;               // ceil(T / query_block(*this))
  std::vector<int64_t> offsets;  // size B*H*nqb + 1, offsets[0] = 0, non-decreasing, back() = keys.size()
  std::vector<int32_t> keys;     // key block ids
};

inline int64_t query_block(const BlockSelection& sel) { return sel.qblock > 0 ? sel.qblock : sel.block; }

// Optional extra key shared by all rows of a query block: one more entry in
// each row's softmax with the (already scaled) logit logit[i] and the value
// row value[i*D .. i*D + D), i = (b*H + h)*nqb + qb. DSA uses it for the
// summary of the far context it did not select. logit -inf = no extra key
// for that query block. Both pointers null = no extra keys at all.
//
// With d.bf16_products the products take BF16 operands (ops/tile_gemm_bf16.h;
// each head's q, k, v and dout packed once per call,
// ops/attention_bf16_operands.h); extra keys, softmax statistics and every
// output stay FP32.
struct ExtraKeys {
  const float* logit = nullptr;  // (B, H, nqb)
  const float* value = nullptr;  // (B, H, nqb, D)
};

// Throws sparta::Error naming `op` and the offending value when sel does not
// describe a selection for d (block < 1, nqb != ceil(T/block), wrong offsets
// size, offsets not a valid partition of keys, an id out of [0, nqb), or a
// list that is unsorted or has duplicates). O(B*H*nqb + keys.size()).
void check_block_selection(const AttnDims& d, const BlockSelection& sel, const char* op);

// Same layouts and semantics as Attention::forward (attention.h): q, k, v
// strided by d.ld (token (b, t), head h at ptr + (b*T + t)*ld + h*D);
// out: (B, T, H, D); lse: (B, H, T); scale 1/sqrt(D); attention restricted to
// the selected key blocks (ANDed with causality when d.causal) plus the
// extra key of the row's query block, if any. A query row with no allowed
// key gets out = 0 and lse = -inf.
// Deterministic: bit-identical results for any OpenMP thread count.
void block_sparse_attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                                    const AttnDims& d, const BlockSelection& sel, const ExtraKeys& extra = {});

// Same layouts as Attention::backward: dq, dk, dv strided like q, k, v and
// OVERWRITTEN (head slices only; keys no query selects get zero gradient);
// dout, out: (B, T, H, D); lse: (B, H, T) from block_sparse_attention_forward
// with the same selection and extra keys. Rows with lse = -inf contribute
// nothing (no NaN). With extra keys, d_extra_logit (B, H, nqb) and
// d_extra_value (B, H, nqb, D) receive their gradients (OVERWRITTEN; zero
// where the logit is -inf); they may only be null when extra is empty.
// Deterministic: bit-identical results for any OpenMP thread count. One
// thread owns a whole (b, h) (its dQ, dK and dV, each tile's scores computed
// once), so the parallelism is B·H.
void block_sparse_attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                                     const float* lse, const float* q, const float* k, const float* v,
                                     const AttnDims& d, const BlockSelection& sel, const ExtraKeys& extra = {},
                                     float* d_extra_logit = nullptr, float* d_extra_value = nullptr);

// Every key block the mask permits: blocks 0..qb when causal, all blocks
// otherwise. Reproduces dense attention. block >= 1.
BlockSelection full_selection(const AttnDims& d, int64_t block);

// Sliding window: blocks max(0, qb - window_blocks + 1) .. qb (the last
// window_blocks blocks up to and including qb), for every (b, h). block >= 1,
// window_blocks >= 1.
BlockSelection window_selection(const AttnDims& d, int64_t block, int64_t window_blocks);

}  // namespace sparta::ops
