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
//   DsaAttention ("dsa"): dynamic sparse attention in the style of NSA
//     (block selection + compressed branch) with per-token selection as in
//     DeepSeek-V3.2, causal by construction and never forming the T×T score
//     matrix. Keys are cut into blocks of cfg.block tokens. Per (b, h):
//       1. summaries: the mean key K̄[kb] and mean value V̄[kb] of every key
//          block, and of every group g < ng = floor(nkb / G) of G =
//          cfg.group consecutive blocks (K̄g, V̄g: mean over the group's
//          tokens; ng = 0 when G = 1);
//       2. candidates of query row t: causal, the key blocks before t's
//          window (window = key blocks kb(t)-W+1 .. kb(t), W =
//          dsa_window_blocks); bidirectional, every key block outside
//          |kb - kb(t)| < W. A group is whole for t when all its blocks are
//          candidates;
//       3. coarse step, when top < #candidates and t has more than
//          m = max(cfg.group_keep, ceil(top / G)) whole groups (top =
//          dsa_top_blocks(cfg, T)): t scores its whole groups,
//          cg[t][g] = q_t·K̄g/sqrt(D) + ln(len of g) (sgemm over chunks of
//          rows), keeps the m best (ties: smaller id; NaN ranks last) and
//          drops the others; otherwise nothing is dropped;
//       4. t scores the candidates not in a dropped group with its own
//          query: c[t][kb] = q_t·K̄[kb]/sqrt(D) + ln(len of kb); the top best
//          of them (ties: smaller id; NaN ranks last) plus its window are
//          attended exactly;
//          as written, steps 3 and 4 rank by cg and c (cfg.rank ==
//          "mean"); with cfg.rank == "bound" (the default) they keep and
//          pick by the bound Σ_d max(q_t,d·Kmax_d, q_t,d·Kmin_d)/sqrt(D)
//          over the group's or block's keys (per-dimension max and min)
//          instead; everything else, the summary included, is unchanged;
//       5. summary (cfg.summary): the scored blocks NOT selected and the
//          dropped groups (NaN scores left out) enter t's softmax as one
//          extra key with logit L[t] = logsumexp of their scores and value
//          Σ softmax·V̄ (block or group mean). This is attention of q_t over
//          block and group summaries, with ln(len) making a block or group
//          of identical keys weigh exactly as much as its tokens would; far
//          context the selection misses is seen coarsely rather than not at
//          all, and nothing is counted twice.
//     Scoring costs O(T/(G·block) + G·m) per row (O(T/block) without the
//     coarse step).
//     Why per row: the token that needs a far block (e.g. the one that must
//     recall a pass key) is the one whose query must find it; a selection
//     shared by a block of queries and scored from other tokens' queries
//     misses exactly such single-token needs (measured: docs/benchmarks.md).
//     Execution: the window part runs on the block-sparse kernel in tiles of
//     `block` query rows (all rows of a block share their window), the far
//     part (selected blocks + summary key) on the row-sparse kernel
//     (ops/row_sparse_attention.h); the two share one softmax, joined by
//     their log-sum-exps.
//     Learning: the scores c and cg are the summary's logits, so the
//     gradient of the loss reaches the scorer through its own branch: dL/dc
//     flows into q_t and K̄, V̄ (the keys and values of every token of the
//     summarised blocks and groups). A block whose content would help
//     gets a higher score and is selected (exactly) next time. The top-k
//     choice itself is a hard, straight-through step. Backward uses the plan
//     forward saved (AttnSaved) or recomputes the same one from q, k, v.
//     When the budget covers every candidate (dsa_attends_all: always up to
//     cfg.dense_len tokens), no summary remains and the result equals dense
//     attention; forward and backward then run DenseAttention's kernel
//     (bit-identical to it), and so does decode for such a cache length.
//     Decode computes exactly what forward computes for the last row of a
//     sequence of len tokens (up to float rounding: one softmax instead of
//     two merged parts, group scores by dot product instead of sgemm).
//
// Determinism: forward, backward and decode are bit-identical for any
// OpenMP thread count (selection is computed per (b, h) in a fixed order,
// the kernel is deterministic, decode splits over heads). Instances hold
// only their configuration: concurrent calls are safe.
//
// Implemented in attention_window.cpp and attention_dsa*.cpp (the head of
// attention_dsa.cpp says which part lives where), on the internals in
// attention_dsa_internal.h.
#include <cstdint>
#include <vector>

#include "ops/attention.h"
#include "ops/block_sparse_attention.h"
#include "ops/dsa_budget.h"

namespace sparta {

class WindowAttention final : public Attention {
 public:
  // Uses cfg.block and cfg.window only; throws on an invalid cfg.
  explicit WindowAttention(const DsaConfig& cfg);
  std::string name() const override { return "window"; }
  void forward(float* out, float* lse, const float* q, const float* k, const float* v, const AttnDims& d,
               std::unique_ptr<AttnSaved>* saved = nullptr) override;
  void backward(float* dq, float* dk, float* dv, const float* dout, const float* out, const float* lse,
                const float* q, const float* k, const float* v, const AttnDims& d,
                const AttnSaved* saved = nullptr) override;
  // Attends to positions [max(0, qb-W+1)*block, len) with qb = (len-1)/block:
  // exactly the keys forward gives the query at position len-1 (causal).
  // Keeps no memo.
  void decode_paged(float* out, const float* q, const KVPages& kv, int64_t H, int64_t D,
                    DecodeMemo* memo = nullptr) override;

 private:
  DsaConfig cfg_;
};

class DsaAttention final : public Attention {
 public:
  // Throws on an invalid cfg.
  explicit DsaAttention(const DsaConfig& cfg);
  std::string name() const override { return "dsa"; }
  const DsaConfig& config() const { return cfg_; }
  void forward(float* out, float* lse, const float* q, const float* k, const float* v, const AttnDims& d,
               std::unique_ptr<AttnSaved>* saved = nullptr) override;
  void backward(float* dq, float* dk, float* dv, const float* dout, const float* out, const float* lse,
                const float* q, const float* k, const float* v, const AttnDims& d,
                const AttnSaved* saved = nullptr) override;
  void decode_paged(float* out, const float* q, const KVPages& kv, int64_t H, int64_t D,
                    DecodeMemo* memo = nullptr) override;
  // Keeps the mean key and value of every complete block and group computed
  // so far (filled lazily by decode), so a decode step scores group and
  // block means instead of re-reading the whole cache.
  std::unique_ptr<DecodeMemo> make_decode_memo() const override;

 private:
  DsaConfig cfg_;
};

// The local window of WindowAttention as a selection: window_selection when
// d.causal, else the band |kb - qb| < window_blocks. block, window_blocks >= 1.
ops::BlockSelection local_window_selection(const AttnDims& d, int64_t block, int64_t window_blocks);

// What DsaAttention::forward/backward feed the block-sparse kernel for the
// far part, for q, k, v strided as in Attention::forward: `far`, the blocks
// each query row selected beyond its window (query blocks of one row:
// list (b*H + h)*T + t; window blocks not included) and, when cfg.summary,
// the rows' summary keys (summary_logit: (B, H, T), -inf where nothing is
// left to summarise; summary_value: (B, H, T, D)). Deterministic function of
// its inputs.
struct DsaPlan {
  ops::BlockSelection far;
  std::vector<float> summary_logit, summary_value;  // empty without cfg.summary
  // The groups the coarse step kept for each row, (B, H, T, groups_kept),
  // ascending (-1 on rows it did not run for); empty when it cannot run at
  // this length. Backward replays the choice from far and these instead of
  // ranking again.
  std::vector<int32_t> kept_groups;
  int64_t groups_kept = 0;
  ops::ExtraKeys extra() const {
    if (summary_logit.empty()) return {};
    return {summary_logit.data(), summary_value.data()};
  }
};
DsaPlan dsa_plan(const float* q, const float* k, const float* v, const AttnDims& d, const DsaConfig& cfg);

// Every key block each query row attends exactly: its selected far blocks
// and its window, ascending (query blocks of one row; v is not needed).
ops::BlockSelection dsa_select(const float* q, const float* k, const AttnDims& d, const DsaConfig& cfg);

}  // namespace sparta
