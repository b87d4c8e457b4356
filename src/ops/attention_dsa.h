#pragma once
// Two sparse Attention implementations on top of the block-sparse kernel
// (ops/block_sparse_attention.h). Both cut the sequence into blocks of
// cfg.block tokens and give every query block an explicit list of key
// blocks; token-level causality applies inside the selected blocks.
//
//   WindowAttention ("window"): local attention only. With
//     W = dsa_window_blocks(cfg) = ceil(window / block), query block qb sees
//     key blocks max(0, qb-W+1) .. qb when causal (W*block tokens at most,
//     (W-1)*block + 1 at least), and the symmetric band |kb - qb| < W when
//     not causal.
//
//   DsaAttention ("dsa"): dynamic sparse attention in the style of NSA's
//     block selection, never forming the T×T score matrix. Per (b, h):
//       1. block summaries: the mean query Q̄[qb] and mean key K̄[kb] of every
//          block (the keys as given, i.e. after RoPE): O(T·D);
//       2. every query block scores each key block outside its local window
//          (causal: kb < qb-W+1; non-causal: |kb - qb| >= W) by Q̄[qb]·K̄[kb]:
//          O((T/block)²·D), small next to attention itself;
//       3. it keeps the dsa_top_blocks(cfg, T) best (ties: smaller id first;
//          NaN scores rank last), adds the local window and attends to the
//          union with the block-sparse kernel: O(T · budget · D).
//     The selection is a hard, non-differentiable choice (straight-through):
//     backward recomputes the same selection from the same q and k and
//     differentiates attention over the selected keys only; no gradient flows
//     through the scores that picked the blocks.
//     Decode scores the one query against the mean key of every full block
//     before its window (summaries computed on the fly, O(len·D)), keeps the
//     dsa_top_blocks(cfg, len) best plus the window and takes an exact
//     softmax over the union. It scores with the query itself rather than a
//     block's mean query, so it need not match the last row of forward
//     unless the budget covers every key (then both equal dense attention).
//
// Determinism: forward, backward and decode are bit-identical for any
// OpenMP thread count (selection is computed per (b, h) in a fixed order,
// the kernel is deterministic, decode splits over heads). Instances hold
// only their configuration: concurrent calls are safe.
#include <cstdint>

#include "ops/attention.h"
#include "ops/block_sparse_attention.h"
#include "ops/dsa_budget.h"

namespace sparta {

class WindowAttention final : public Attention {
 public:
  // Uses cfg.block and cfg.window only; throws on an invalid cfg.
  explicit WindowAttention(const DsaConfig& cfg);
  std::string name() const override { return "window"; }
  void forward(float* out, float* lse, const float* q, const float* k, const float* v,
               const AttnDims& d) override;
  void backward(float* dq, float* dk, float* dv, const float* dout, const float* out, const float* lse,
                const float* q, const float* k, const float* v, const AttnDims& d) override;
  // Attends to positions [max(0, qb-W+1)*block, len) with qb = (len-1)/block:
  // exactly the keys forward gives the query at position len-1 (causal).
  void decode(float* out, const float* q, const float* k_cache, const float* v_cache, int64_t len, int64_t H,
              int64_t D) override;

 private:
  DsaConfig cfg_;
};

class DsaAttention final : public Attention {
 public:
  // Throws on an invalid cfg.
  explicit DsaAttention(const DsaConfig& cfg);
  std::string name() const override { return "dsa"; }
  const DsaConfig& config() const { return cfg_; }
  void forward(float* out, float* lse, const float* q, const float* k, const float* v,
               const AttnDims& d) override;
  void backward(float* dq, float* dk, float* dv, const float* dout, const float* out, const float* lse,
                const float* q, const float* k, const float* v, const AttnDims& d) override;
  void decode(float* out, const float* q, const float* k_cache, const float* v_cache, int64_t len, int64_t H,
              int64_t D) override;

 private:
  DsaConfig cfg_;
};

// The local window of WindowAttention as a selection: window_selection when
// d.causal, else the band |kb - qb| < window_blocks. block, window_blocks >= 1.
ops::BlockSelection local_window_selection(const AttnDims& d, int64_t block, int64_t window_blocks);

// The key blocks DsaAttention::forward/backward use for q, k (strided as in
// Attention::forward; v is not needed). Deterministic function of q, k, d
// and cfg.
ops::BlockSelection dsa_select(const float* q, const float* k, const AttnDims& d, const DsaConfig& cfg);

}  // namespace sparta
