#pragma once
// Internals shared by the files that implement WindowAttention and
// DsaAttention (attention_dsa.h): DSA's view of a sequence (DsaShape), the
// block and group summaries a head is scored against, the per-row planner
// (RowPlan) with its ranking helpers, and the row arithmetic the plan, the
// scorer gradients and decoding all use. Not a public API: only
// src/ops/attention_window.cpp and src/ops/attention_dsa*.cpp include it.
// Every function here is deterministic and sequential; callers parallelise
// over (b, h) or heads.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "ops/attention_dsa.h"

namespace sparta::dsa_internal {

// ------------------------------------------------- row arithmetic (attention_dsa_summaries.cpp)

// y += a · x over n floats.
void axpy_row(float* y, float a, const float* x, int64_t n);

// y (D floats) = y0 + Σ_e a · w[e] · X[ids[e] * ldx .. + D), summed in the
// order e = 0, 1, ..., where y0 is y (accumulate) or 0. Per element the same
// arithmetic as a series of axpy_row calls, but the running sum stays in
// registers: one pass over y instead of one per entry (a row's summary has
// dozens of entries).
void weighted_rows_sum(float* y, bool accumulate, float a, const float* w, const int32_t* ids, int64_t n,
                       const float* X, int64_t ldx, int64_t D);

// ------------------------------------------------- decoding (attention_dsa_decode.cpp)

// A contiguous run of cached key positions [k0, k1) for decode.
struct KeyRange {
  int64_t k0, k1;
};

// Exact softmax attention of query head h against the cached keys in
// `ranges` (each within [0, kv.len)), plus an optional extra key (logit
// already scaled, -inf = none) as in ops::ExtraKeys; out: D floats. ld = H*D.
// s is scratch for every selected score. Sequential per head and in key
// order, so results depend neither on threading nor on the paging.
void decode_head(float* out, const float* q, const KVPages& kv, int64_t h, int64_t ld, int64_t D,
                 const std::vector<KeyRange>& ranges, std::vector<float>& s,
                 float extra_logit = -std::numeric_limits<float>::infinity(),
                 const float* extra_value = nullptr);

// ------------------------------------------------- shape and summaries (attention_dsa_summaries.cpp)

// Where DSA looks, for one sequence length T (see attention_dsa.h): key
// blocks of `block` tokens, groups of G whole blocks for the coarse step;
// every query row selects on its own.
struct DsaShape {
  int64_t T, block, nkb, W, top, G, ng, m;
  bool causal;
  bool bound;                 // rank = "bound"
  float log_block, log_last;  // ln(len) of a full block and of the last one
  DsaShape(const DsaConfig& c, int64_t T_, bool causal_)
      : T(T_),
        block(c.block),
        nkb((T_ + c.block - 1) / c.block),
        W(dsa_window_blocks(c)),
        top(dsa_top_blocks(c, T_)),
        G(c.group),
        ng(c.group >= 2 ? nkb / c.group : 0),
        m(std::max(c.group_keep, (top + c.group - 1) / c.group)),
        causal(causal_),
        bound(c.rank == "bound"),
        log_block(std::log(static_cast<float>(c.block))),
        log_last(std::log(static_cast<float>(T_ - (nkb - 1) * c.block))) {}
  // Local window of query row t: key blocks [w0, w1].
  void window(int64_t t, int64_t& w0, int64_t& w1) const {
    const int64_t kb = t / block;
    w0 = std::max<int64_t>(0, kb - W + 1);
    w1 = causal ? kb : std::min(nkb - 1, kb + W - 1);
  }
  int64_t block_len(int64_t kb) const { return std::min(block, T - kb * block); }
  float log_len(int64_t kb) const { return kb + 1 < nkb ? log_block : log_last; }
  // Tokens of group g < ng (its last block may be the sequence's short one).
  int64_t group_len(int64_t g) const { return std::min(T, (g + 1) * G * block) - g * G * block; }
  // Whole groups of row t (every block a candidate): [0, gl) and [gr, ng).
  void whole_groups(int64_t w0, int64_t w1, int64_t& gl, int64_t& gr) const {
    gl = ng > 0 ? std::min(ng, w0 / G) : 0;
    gr = causal || ng == 0 ? ng : std::min(ng, (w1 + G) / G);
  }
  // Groups [0, n) hold every whole group of rows [r0, r0 + nr): causal rows
  // read only groups before their window (gl grows with t), so the group
  // products of a chunk of rows skip the columns none of them reads (half of
  // them on average). Bidirectional: all ng.
  int64_t groups_read(int64_t r0, int64_t nr) const {
    if (!causal || ng == 0) return ng;
    int64_t w0, w1, gl, gr;
    window(r0 + nr - 1, w0, w1);
    whole_groups(w0, w1, gl, gr);
    return gl;
  }
};

// Mean of rows [t0, t1) of x (stride ld), D floats.
void mean_rows(float* out, const float* x, int64_t t0, int64_t t1, int64_t ld, int64_t D);

// Mean over the tokens of group g from its blocks' means (row kb of
// block_means at kb * stride): forward and decode both derive group means
// this way, so they agree bit for bit.
void group_mean(float* out, const float* block_means, int64_t stride, const DsaShape& s, int64_t g,
                int64_t D);

// Per-dimension max and min of rows [t0, t1) (t1 > t0) of x (stride ld).
void minmax_rows(float* mx, float* mn, const float* x, int64_t t0, int64_t t1, int64_t ld, int64_t D);

// Max and min of group g from its blocks' (rows kb at kb * stride), as
// group_mean: forward and decode derive them the same way.
void group_minmax(float* mx, float* mn, const float* bmax, const float* bmin, int64_t stride,
                  const DsaShape& s, int64_t g, int64_t D);

// Where the bound ranking reads its boxes: block kb at bmax/bmin + kb *
// bstride, group g at gmax/gmin + g * gstride. grank: the row's group
// bounds already scaled by 1/sqrt(D) (from rank_groups_by_bound), or null
// to compute them from the group boxes.
struct RankBoxes {
  const float *bmax = nullptr, *bmin = nullptr, *gmax = nullptr, *gmin = nullptr;
  int64_t bstride = 0, gstride = 0;
  const float* grank = nullptr;
};

// Block and group summaries of one (b, h): mean keys and values, (nkb, D)
// and (ng, D). `k`, `v` point at token 0 of the head's slice. With
// s.bound, also the per-dimension max and min of the keys of every block
// and group (same shapes), and each group's box as centre and radius,
// KgCR = [(max + min)/2 | (max - min)/2], (ng, 2D).
struct HeadSummaries {
  std::vector<float> Kb, Vb, Kg, Vg;
  std::vector<float> Kbmax, Kbmin, Kgmax, Kgmin, KgCR;
  // boxes: also the boxes (only with s.bound; ranking needs them, replaying
  // a saved choice does not).
  void compute(const DsaShape& s, const float* k, const float* v, int64_t ld, int64_t D, bool boxes = true);
  // The boxes for RowPlan::plan; null pointers (mean ranking) without s.bound.
  RankBoxes boxes(const DsaShape& s, int64_t D) const;

 private:
  static void means(std::vector<float>& mb, std::vector<float>& mg, const DsaShape& s, const float* x,
                    int64_t ld, int64_t D);
};

// Query rows whose group scores come from one sgemm.
constexpr int64_t kScoreRows = 64;

// Group scores of query rows [r0, r0 + nr) (q: the head's token 0, stride
// ld): CG[i][g] = q·K̄g/sqrt(D) + ln(len(g)), (nr, ng).
void score_groups(float* CG, const float* q, int64_t ld, const HeadSummaries& hs, const DsaShape& s,
                  int64_t r0, int64_t nr, int64_t D);

// Group bounds of query rows [r0, r0 + nr) with s.bound, (nr, ng), scaled by
// 1/sqrt(D): max(a·x, a·y) = a·(x + y)/2 + |a|·(x - y)/2 for x >= y, so the
// bound is [q | |q|] · KgCR and one sgemm per chunk serves every row, like
// the mean group scores. Qa: scratch of nr × 2D.
void rank_groups_by_bound(float* RG, std::vector<float>& Qa, const float* q, int64_t ld,
                          const HeadSummaries& hs, const DsaShape& s, int64_t r0, int64_t nr, int64_t D);

// ------------------------------------------------- ranking and the row plan (attention_dsa_row_plan.cpp)

// A ranked choice (key block or group): higher score first, ties to the
// smaller id, NaN counted as -inf so a corrupt score never wins.
struct Scored {
  float score;
  int32_t id;
};

// splitmix64: a well-mixed 64-bit hash, for noise that depends only on
// (seed, b, h, t, id) and so not on threading or call order.
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Exploration noise of one (row, choice): scale · Gumbel(0, 1). Choices are
// key blocks kb and groups nkb + g.
struct Exploration {
  uint64_t seed = 0;  // 0 = none
  float scale = 0.0f;
  float noise(int64_t row, int64_t id) const {
    const uint64_t h = mix64(mix64(seed ^ static_cast<uint64_t>(row)) + static_cast<uint64_t>(id));
    const double u = (static_cast<double>(h >> 11) + 0.5) * 0x1.0p-53;  // (0, 1)
    return scale * static_cast<float>(-std::log(-std::log(u)));
  }
};

// Keeps the n best of the offered items in `best` (sorted best first, as
// Scored ranks). Items must be offered in ascending id order: then a
// newcomer that ties a kept score loses (larger id), so plain float
// comparisons suffice once NaN counts as -inf, and once the buffer is full
// one comparison rejects most offers: O(offers) for a small n.
struct TopN {
  std::vector<Scored> best;
  int64_t n = 0;
  float worst = 0.0f;  // score of best.back() once full
  void reset(int64_t n_) {
    best.clear();
    best.reserve(static_cast<size_t>(n_));
    n = n_;
    worst = std::numeric_limits<float>::infinity();
  }
  void offer(float score, int32_t id) {
    if (std::isnan(score)) score = -std::numeric_limits<float>::infinity();
    if (static_cast<int64_t>(best.size()) == n) {
      if (!(score > worst)) return;
      best.pop_back();
    }
    size_t pos = best.size();
    best.push_back({score, id});
    for (; pos > 0 && best[pos - 1].score < score; --pos) best[pos] = best[pos - 1];
    best[pos] = {score, id};
    if (static_cast<int64_t>(best.size()) == n) worst = best.back().score;
  }
};

// The plan of one query row (attention_dsa.h): the far blocks it attends
// exactly and the entries of its summary key. Also holds the row's scratch,
// so one instance serves many rows without allocating.
struct RowPlan {
  std::vector<int32_t> far;     // selected far blocks, ascending
  std::vector<float> far_c;     // their scores c
  std::vector<int32_t> kept;    // groups kept by the coarse step, ascending (empty when it did not run)
  std::vector<int32_t> sum_id;  // the summary's block entries, ascending
  std::vector<float> sum_p;     // their softmax weights (the groups' are in plan's pg)
  float L = -std::numeric_limits<float>::infinity();  // summary logit (-inf: no summary)
  // scratch
  std::vector<int32_t> fine;
  std::vector<float> fine_c, fine_r;
  std::vector<char> chosen;
  TopN top;

  // Row t of a head: qt its query, cg its group scores (read for its whole
  // groups only), block mean keys at Kb + kb * kb_stride. With summary, pg
  // (ng floats, may be null when ng = 0) receives the summary's softmax
  // weight of every group (0 unless dropped by the coarse step): callers
  // apply the group part as one matrix product over many rows. With
  // s.bound, blocks and groups are ranked by the bound over `boxes` instead
  // of by c and cg.
  void plan(const DsaShape& s, int64_t t, const float* qt, const float* cg, const float* Kb,
            int64_t kb_stride, int64_t D, bool summary, float* pg, const RankBoxes& boxes,
            const Exploration& ex = {}, int64_t row_id = 0);

  // The same row again with the choices a plan() call made — its kept
  // groups (m of them, read only when the coarse step runs for this row) and
  // its far blocks [far0, far1) — without ranking anything: backward needs
  // the scores and the summary, not the ranking (which, with bound or
  // exploration, costs as much again). Same far, far_c, sum_id, sum_p, L and
  // pg as that call, bit for bit.
  // Returns false (and leaves the row unusable) when the kept groups are not
  // whole groups of the row or [far0, far1) are not among its candidates,
  // i.e. the plan was made for other inputs.
  bool replay(const DsaShape& s, int64_t t, const float* qt, const float* cg, const float* Kb,
              int64_t kb_stride, int64_t D, float* pg, const int32_t* kept_groups, const int32_t* far0,
              const int32_t* far1);

 private:
  // Row t's window [w0, w1], whole groups [0, gl) and [gr, ng), and whether
  // the coarse step runs for it.
  struct Where {
    int64_t w0, w1, gl, gr;
    bool coarse;
    Where(const DsaShape& s, int64_t t) {
      s.window(t, w0, w1);
      s.whole_groups(w0, w1, gl, gr);
      const int64_t ncand = w0 + (s.causal ? 0 : s.nkb - 1 - w1);
      coarse = s.top < ncand && gl + (s.ng - gr) > s.m;
    }
  };

  // Fine candidates: every candidate block outside an unkept group, with its
  // score c (fine_c) and, given boxes, its bound (fine_r).
  void gather(const DsaShape& s, const Where& w, const float* qt, const float* Kb, int64_t kb_stride,
              int64_t D, const RankBoxes* boxes);

  // far and the summary from `chosen`: one softmax over the unselected fine
  // blocks and the dropped groups, computed per part and joined by their
  // maxima and sums.
  void finish(const DsaShape& s, const Where& w, const float* cg, bool summary, float* pg);
};

// ------------------------------------------------- scorer gradients (attention_dsa_scorer_grad.cpp)

// Backward of the summary keys: given dL/d logit (B, H, T) and dL/d value
// (B, H, T, D) of plan's summaries, ADDS the gradients they imply to dq
// (each row's own query), dk and dv (tokens of the summarised blocks and
// groups). Per row, over its summary entries e (score c_e, mean key K̄_e,
// mean value V̄_e), with P = softmax(c), U = P·V̄, L = lse(c):
//   dc_e = P_e (dL + dU·V̄_e - dU·U),  dq += dc_e K̄_e/sqrt(D),
//   dK̄_e += dc_e q/sqrt(D),  dV̄_e += P_e dU;
// a mean spreads its gradient evenly over its tokens.
// With masses (scorer loss, see scorer_masses): per row t the scores of its
// selected far blocks and its summary logit L[t] form a distribution
// p̂ = softmax(c_sel..., L); the loss weight·KL(m̂ ‖ p̂), m̂ the normalised
// attention masses, adds weight·(p̂ - m̂) to those logits (the summary's
// share reaches the entries' scores through L = lse(c)).
struct ScorerMasses {
  std::vector<float> selected;  // aligned with plan.far.keys
  std::vector<float> summary;   // (B, H, T)
  float weight = 0.0f;          // loss weight · AttnDims::aux_grad_scale / number of rows
};

// Attention mass exp(score - lse_t) of each row on each of its selected far
// blocks (and on its summary key): where the row's attention actually went,
// recomputed from q, k and lse.
void scorer_masses(ScorerMasses& m, const DsaPlan& plan, const float* q, const float* k, const float* lse,
                   const AttnDims& d, const DsaConfig& cfg);

// The summary-key backward described above ScorerMasses; masses: null when
// the scorer loss is off. Throws when plan does not fit q, k, v and cfg.
void summary_backward(float* dq, float* dk, float* dv, const float* g_logit, const float* g_value,
                      const DsaPlan& plan, const float* q, const float* k, const float* v, const AttnDims& d,
                      const DsaConfig& cfg, const ScorerMasses* masses);

}  // namespace sparta::dsa_internal
