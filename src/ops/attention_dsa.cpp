#include "ops/attention_dsa.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/gemm.h"
#include "ops/attention_rows.h"
#include "ops/row_sparse_attention.h"
#include "ops/tile_gemm.h"
#include "ops/elementwise.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // see elementwise.h: vectors never cross a call boundary

namespace sparta {
namespace {

using ops::BlockSelection;

// A contiguous run of cached key positions [k0, k1) for decode.
struct KeyRange {
  int64_t k0, k1;
};

using ops::dot_row;
namespace simd = ops::simd;

SPARTA_KERNEL_CLONES void axpy_row(float* y, float a, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// y (D floats) = y0 + Σ_e a · w[e] · X[ids[e] * ldx .. + D), summed in the
// order e = 0, 1, ..., where y0 is y (accumulate) or 0. Per element the same
// arithmetic as a series of axpy_row calls, but the running sum stays in
// registers: one pass over y instead of one per entry (a row's summary has
// dozens of entries).
SPARTA_KERNEL_CLONES void weighted_rows_sum(float* y, bool accumulate, float a, const float* w, const int32_t* ids,
                                            int64_t n, const float* X, int64_t ldx, int64_t D) {
  constexpr int64_t kW = 4 * simd::kLanes;  // four vectors of running sums
  int64_t c0 = 0;
  for (; c0 + kW <= D; c0 += kW) {
    simd::f32v s0 = simd::splat(0.0f), s1 = s0, s2 = s0, s3 = s0;
    if (accumulate) {
      s0 = simd::load(y + c0);
      s1 = simd::load(y + c0 + simd::kLanes);
      s2 = simd::load(y + c0 + 2 * simd::kLanes);
      s3 = simd::load(y + c0 + 3 * simd::kLanes);
    }
    for (int64_t e = 0; e < n; ++e) {
      const float* x = X + ids[e] * ldx + c0;
      const simd::f32v we = simd::splat(a * w[e]);
      s0 += we * simd::load(x);
      s1 += we * simd::load(x + simd::kLanes);
      s2 += we * simd::load(x + 2 * simd::kLanes);
      s3 += we * simd::load(x + 3 * simd::kLanes);
    }
    simd::store(y + c0, s0);
    simd::store(y + c0 + simd::kLanes, s1);
    simd::store(y + c0 + 2 * simd::kLanes, s2);
    simd::store(y + c0 + 3 * simd::kLanes, s3);
  }
  if (c0 == D) return;
  if (!accumulate) std::fill(y + c0, y + D, 0.0f);
  for (int64_t e = 0; e < n; ++e) axpy_row(y + c0, a * w[e], X + ids[e] * ldx + c0, D - c0);
}

// Exact softmax attention of one query head against the keys in `ranges`
// of a (len, H, D) cache, plus an optional extra key (logit already scaled,
// -inf = none) as in ops::ExtraKeys; out: D floats. s is scratch for every
// selected score. Sequential per head, so results do not depend on threading.
void decode_head(float* out, const float* q, const float* k_cache, const float* v_cache, int64_t ld, int64_t D,
                 const std::vector<KeyRange>& ranges, std::vector<float>& s,
                 float extra_logit = -std::numeric_limits<float>::infinity(), const float* extra_value = nullptr) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  s.clear();
  float m = extra_logit;
  for (const KeyRange& r : ranges)
    for (int64_t j = r.k0; j < r.k1; ++j) {
      s.push_back(scale * dot_row(q, k_cache + j * ld, D));
      m = std::max(m, s.back());
    }
  std::fill(out, out + D, 0.0f);
  float l = 0.0f;
  if (extra_logit > -std::numeric_limits<float>::infinity()) {
    l = std::exp(extra_logit - m);
    axpy_row(out, l, extra_value, D);
  }
  size_t i = 0;
  for (const KeyRange& r : ranges)
    for (int64_t j = r.k0; j < r.k1; ++j, ++i) {
      const float p = std::exp(s[i] - m);
      l += p;
      axpy_row(out, p, v_cache + j * ld, D);
    }
  // l >= 1 whenever a key exists (the max contributes exp(0)); ranges are never empty here.
  const float inv = 1.0f / l;
  for (int64_t e = 0; e < D; ++e) out[e] *= inv;
}

void check_decode_args(int64_t len, int64_t H, int64_t D, const char* op) {
  SPARTA_CHECK(H >= 1 && D >= 1, "[", op, "] decode needs H, D >= 1, got H=", H, " D=", D);
  SPARTA_CHECK(len >= 1, "[", op, "] decode needs at least one cached position, got len=", len);
}

// A ranked choice (key block or group): higher score first, ties to the
// smaller id, NaN counted as -inf so a corrupt score never wins.
struct Scored {
  float score;
  int32_t id;
};

}  // namespace

BlockSelection local_window_selection(const AttnDims& d, int64_t block, int64_t window_blocks) {
  if (d.causal) return ops::window_selection(d, block, window_blocks);
  SPARTA_CHECK(block >= 1, "[attention.window] block size must be >= 1, got ", block);
  SPARTA_CHECK(window_blocks >= 1, "[attention.window] window_blocks must be >= 1, got ", window_blocks);
  BlockSelection sel;
  sel.block = block;
  sel.nqb = (d.T + block - 1) / block;
  sel.offsets.push_back(0);
  for (int64_t bh = 0; bh < d.B * d.H; ++bh)
    for (int64_t qb = 0; qb < sel.nqb; ++qb) {
      const int64_t last = std::min(sel.nqb - 1, qb + window_blocks - 1);
      for (int64_t kb = std::max<int64_t>(0, qb - window_blocks + 1); kb <= last; ++kb)
        sel.keys.push_back(static_cast<int32_t>(kb));
      sel.offsets.push_back(static_cast<int64_t>(sel.keys.size()));
    }
  return sel;
}

namespace {

// Where DSA looks, for one sequence length T (see attention_dsa.h): key
// blocks of `block` tokens, groups of G whole blocks for the coarse step;
// every query row selects on its own.
struct DsaShape {
  int64_t T, block, nkb, W, top, G, ng, m;
  bool causal;
  bool bound;  // rank = "bound"
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

SPARTA_KERNEL_CLONES void mean_rows(float* out, const float* x, int64_t t0, int64_t t1, int64_t ld, int64_t D) {
  std::fill(out, out + D, 0.0f);
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t e = 0; e < D; ++e) out[e] += x[t * ld + e];
  const float inv = 1.0f / static_cast<float>(t1 - t0);
  for (int64_t e = 0; e < D; ++e) out[e] *= inv;
}

// Mean over the tokens of group g from its blocks' means (row kb of
// block_means at kb * stride): forward and decode both derive group means
// this way, so they agree bit for bit.
void group_mean(float* out, const float* block_means, int64_t stride, const DsaShape& s, int64_t g, int64_t D) {
  std::fill(out, out + D, 0.0f);
  for (int64_t kb = g * s.G; kb < (g + 1) * s.G; ++kb)
    axpy_row(out, static_cast<float>(s.block_len(kb)), block_means + kb * stride, D);
  const float inv = 1.0f / static_cast<float>(s.group_len(g));
  for (int64_t e = 0; e < D; ++e) out[e] *= inv;
}

// Per-dimension max and min of rows [t0, t1) (t1 > t0) of x (stride ld).
SPARTA_KERNEL_CLONES void minmax_rows(float* mx, float* mn, const float* x, int64_t t0, int64_t t1, int64_t ld,
                                      int64_t D) {
  std::copy(x + t0 * ld, x + t0 * ld + D, mx);
  std::copy(x + t0 * ld, x + t0 * ld + D, mn);
  for (int64_t t = t0 + 1; t < t1; ++t)
    for (int64_t e = 0; e < D; ++e) {
      const float v = x[t * ld + e];
      mx[e] = v > mx[e] ? v : mx[e];
      mn[e] = v < mn[e] ? v : mn[e];
    }
}

// Max and min of group g from its blocks' (rows kb at kb * stride), as
// group_mean: forward and decode derive them the same way.
void group_minmax(float* mx, float* mn, const float* bmax, const float* bmin, int64_t stride, const DsaShape& s,
                  int64_t g, int64_t D) {
  std::copy(bmax + g * s.G * stride, bmax + g * s.G * stride + D, mx);
  std::copy(bmin + g * s.G * stride, bmin + g * s.G * stride + D, mn);
  for (int64_t kb = g * s.G + 1; kb < (g + 1) * s.G; ++kb)
    for (int64_t e = 0; e < D; ++e) {
      mx[e] = std::max(mx[e], bmax[kb * stride + e]);
      mn[e] = std::min(mn[e], bmin[kb * stride + e]);
    }
}

// Σ_e max(q_e·mx_e, q_e·mn_e): the largest q·k any key inside the box
// [mn, mx] can have, so at least the largest logit of the block's tokens.
SPARTA_KERNEL_CLONES float bound_row(const float* q, const float* mx, const float* mn, int64_t n) {
  const simd::f32v acc = simd::reduce_blocks(n, simd::splat(0.0f), simd::Sum{},
                                             [&](int64_t i, int64_t c, auto tag) SPARTA_SIMD_LAMBDA {
                                               constexpr bool kPartial = decltype(tag)::value;
                                               const simd::f32v qv = simd::load_n<kPartial>(q + i, c, 0.0f);
                                               return simd::vmax(qv * simd::load_n<kPartial>(mx + i, c, 0.0f),
                                                                 qv * simd::load_n<kPartial>(mn + i, c, 0.0f));
                                             });
  return simd::hsum(acc);
}

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
  void compute(const DsaShape& s, const float* k, const float* v, int64_t ld, int64_t D, bool boxes = true) {
    means(Kb, Kg, s, k, ld, D);
    if (v) means(Vb, Vg, s, v, ld, D);
    if (!s.bound || !boxes) return;
    Kbmax.resize(static_cast<size_t>(s.nkb * D));
    Kbmin.resize(Kbmax.size());
    for (int64_t kb = 0; kb < s.nkb; ++kb)
      minmax_rows(Kbmax.data() + kb * D, Kbmin.data() + kb * D, k, kb * s.block, kb * s.block + s.block_len(kb),
                  ld, D);
    Kgmax.resize(static_cast<size_t>(s.ng * D));
    Kgmin.resize(Kgmax.size());
    for (int64_t g = 0; g < s.ng; ++g)
      group_minmax(Kgmax.data() + g * D, Kgmin.data() + g * D, Kbmax.data(), Kbmin.data(), D, s, g, D);
    KgCR.resize(static_cast<size_t>(s.ng * 2 * D));
    for (int64_t g = 0; g < s.ng; ++g)
      for (int64_t e = 0; e < D; ++e) {
        const float mx = Kgmax[g * D + e], mn = Kgmin[g * D + e];
        KgCR[g * 2 * D + e] = 0.5f * (mx + mn);
        KgCR[g * 2 * D + D + e] = 0.5f * (mx - mn);
      }
  }
  // The boxes for RowPlan::plan; null pointers (mean ranking) without s.bound.
  RankBoxes boxes(const DsaShape& s, int64_t D) const {
    if (!s.bound) return {};
    return {Kbmax.data(), Kbmin.data(), Kgmax.data(), Kgmin.data(), D, D};
  }

 private:
  static void means(std::vector<float>& mb, std::vector<float>& mg, const DsaShape& s, const float* x, int64_t ld,
                    int64_t D) {
    mb.resize(static_cast<size_t>(s.nkb * D));
    for (int64_t kb = 0; kb < s.nkb; ++kb)
      mean_rows(mb.data() + kb * D, x, kb * s.block, kb * s.block + s.block_len(kb), ld, D);
    mg.resize(static_cast<size_t>(s.ng * D));
    for (int64_t g = 0; g < s.ng; ++g) group_mean(mg.data() + g * D, mb.data(), D, s, g, D);
  }
};

// Query rows whose group scores come from one sgemm.
constexpr int64_t kScoreRows = 64;

// Group scores of query rows [r0, r0 + nr) (q: the head's token 0, stride
// ld): CG[i][g] = q·K̄g/sqrt(D) + ln(len(g)), (nr, ng).
void score_groups(float* CG, const float* q, int64_t ld, const HeadSummaries& hs, const DsaShape& s, int64_t r0,
                  int64_t nr, int64_t D) {
  const int64_t n = s.groups_read(r0, nr);  // columns [n, ng) are left unset
  if (n == 0) return;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  sgemm(false, true, nr, n, D, scale, q + r0 * ld, ld, hs.Kg.data(), D, 0.0f, CG, s.ng);
  for (int64_t g = 0; g < n; ++g) {
    const float lg = std::log(static_cast<float>(s.group_len(g)));
    for (int64_t i = 0; i < nr; ++i) CG[i * s.ng + g] += lg;
  }
}

// Group bounds of query rows [r0, r0 + nr) with s.bound, (nr, ng), scaled by
// 1/sqrt(D): max(a·x, a·y) = a·(x + y)/2 + |a|·(x - y)/2 for x >= y, so the
// bound is [q | |q|] · KgCR and one sgemm per chunk serves every row, like
// the mean group scores. Qa: scratch of nr × 2D.
void rank_groups_by_bound(float* RG, std::vector<float>& Qa, const float* q, int64_t ld, const HeadSummaries& hs,
                          const DsaShape& s, int64_t r0, int64_t nr, int64_t D) {
  const int64_t n = s.groups_read(r0, nr);  // as score_groups
  if (n == 0) return;
  Qa.resize(static_cast<size_t>(nr * 2 * D));
  for (int64_t i = 0; i < nr; ++i)
    for (int64_t e = 0; e < D; ++e) {
      const float x = q[(r0 + i) * ld + e];
      Qa[i * 2 * D + e] = x;
      Qa[i * 2 * D + D + e] = std::fabs(x);
    }
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  sgemm(false, true, nr, n, 2 * D, scale, Qa.data(), 2 * D, hs.KgCR.data(), 2 * D, 0.0f, RG, s.ng);
}

// splitmix64: a well-mixed 64-bit hash, for noise that depends only on
// (seed, b, h, t, id) and so not on threading or call order.
uint64_t mix64(uint64_t x) {
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

// Offers values[i] with id i for i in [i0, i1), ascending, to `top`, with
// the same result as offering them one by one, but cheaper for long ranges
// (a row offers all its groups, 128 at 64K tokens, and keeps 4): with τ the
// n-th largest of the range's per-vector maxima, at least n values are >= τ,
// so any value below τ is beaten by n others and is never kept — only values
// >= τ are offered. When τ is -inf (NaN counts as -inf, as in offer) every
// value is offered.
SPARTA_KERNEL_CLONES void offer_range(TopN& top, const float* values, int64_t i0, int64_t i1) {
  constexpr int64_t kMaxVectors = 64;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int64_t nv = (i1 - i0) / simd::kLanes;
  float tau = kNegInf;
  if (top.n >= 1 && nv > top.n && nv <= kMaxVectors) {
    float vmax[kMaxVectors];
    for (int64_t v = 0; v < nv; ++v) {
      const simd::f32v x = simd::load(values + i0 + v * simd::kLanes);
      vmax[v] = simd::hmax(x == x ? x : simd::splat(kNegInf));
    }
    std::nth_element(vmax, vmax + top.n - 1, vmax + nv, std::greater<float>());
    tau = vmax[top.n - 1];
  }
  for (int64_t i = i0; i < i1; ++i)
    if (tau == kNegInf || values[i] >= tau) top.offer(values[i], static_cast<int32_t>(i));
}

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
  void plan(const DsaShape& s, int64_t t, const float* qt, const float* cg, const float* Kb, int64_t kb_stride,
            int64_t D, bool summary, float* pg, const RankBoxes& boxes, const Exploration& ex = {},
            int64_t row_id = 0) {
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    const Where w(s, t);
    kept.clear();
    if (w.coarse) {  // keep the m best whole groups, summarise the others
      top.reset(s.m);
      const auto offer_group = [&](int64_t g) {
        const float r = !s.bound      ? cg[g]
                        : boxes.grank ? boxes.grank[g]
                                      : scale * bound_row(qt, boxes.gmax + g * boxes.gstride,
                                                          boxes.gmin + g * boxes.gstride, D);
        top.offer(ex.seed ? r + ex.noise(row_id, s.nkb + g) : r, static_cast<int32_t>(g));
      };
      const float* ready = !s.bound ? cg : boxes.grank;  // every group's ranking value, if computed
      if (ready && !ex.seed) {
        offer_range(top, ready, 0, w.gl);
        offer_range(top, ready, w.gr, s.ng);
      } else {
        for (int64_t g = 0; g < w.gl; ++g) offer_group(g);
        for (int64_t g = w.gr; g < s.ng; ++g) offer_group(g);
      }
      for (const Scored& x : top.best) kept.push_back(x.id);
      std::sort(kept.begin(), kept.end());
    }
    gather(s, w, qt, Kb, kb_stride, D, s.bound ? &boxes : nullptr);
    const int64_t n = static_cast<int64_t>(fine.size());
    chosen.assign(static_cast<size_t>(n), 0);
    if (s.top >= n) {
      std::fill(chosen.begin(), chosen.end(), 1);
    } else if (s.top > 0) {
      top.reset(s.top);  // ids index `fine`, which ascends, so ties still go to the smaller block
      const std::vector<float>& rank = s.bound ? fine_r : fine_c;
      for (int64_t i = 0; i < n; ++i)
        top.offer(ex.seed ? rank[i] + ex.noise(row_id, fine[i]) : rank[i], static_cast<int32_t>(i));
      for (const Scored& x : top.best) chosen[x.id] = 1;
    }
    finish(s, w, cg, summary, pg);
  }

  // The same row again with the choices a plan() call made — its kept
  // groups (m of them, read only when the coarse step runs for this row) and
  // its far blocks [far0, far1) — without ranking anything: backward needs
  // the scores and the summary, not the ranking (which, with bound or
  // exploration, costs as much again). Same far, far_c, sum_id, sum_p, L and
  // pg as that call, bit for bit.
  // Returns false (and leaves the row unusable) when the kept groups are not
  // whole groups of the row or [far0, far1) are not among its candidates,
  // i.e. the plan was made for other inputs.
  bool replay(const DsaShape& s, int64_t t, const float* qt, const float* cg, const float* Kb, int64_t kb_stride,
              int64_t D, float* pg, const int32_t* kept_groups, const int32_t* far0, const int32_t* far1) {
    const Where w(s, t);
    kept.clear();
    if (w.coarse) {
      kept.assign(kept_groups, kept_groups + s.m);
      for (int32_t g : kept)  // the plan's groups must be this row's whole groups
        if (g < 0 || g >= s.ng || (g >= w.gl && g < w.gr)) return false;
    }
    gather(s, w, qt, Kb, kb_stride, D, nullptr);
    const int64_t n = static_cast<int64_t>(fine.size());
    chosen.assign(static_cast<size_t>(n), 0);
    for (int64_t i = 0; i < n && far0 != far1; ++i)  // both ascend
      if (fine[i] == *far0) chosen[i] = 1, ++far0;
    if (far0 != far1) return false;
    finish(s, w, cg, true, pg);
    return true;
  }

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
  void gather(const DsaShape& s, const Where& w, const float* qt, const float* Kb, int64_t kb_stride, int64_t D,
              const RankBoxes* boxes) {
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    fine.clear();
    fine_c.clear();
    fine_r.clear();
    const auto visit = [&](int64_t kb0, int64_t kb1) {  // blocks [kb0, kb1), ascending
      for (int64_t kb = kb0; kb < kb1; ++kb) {
        fine.push_back(static_cast<int32_t>(kb));
        fine_c.push_back(scale * dot_row(qt, Kb + kb * kb_stride, D) + s.log_len(kb));
        if (boxes)
          fine_r.push_back(scale *
                           bound_row(qt, boxes->bmax + kb * boxes->bstride, boxes->bmin + kb * boxes->bstride, D));
      }
    };
    const auto visit_groups = [&](int64_t g0, int64_t g1) {  // the kept ones among groups [g0, g1)
      for (int32_t g : kept)
        if (g >= g0 && g < g1) visit(g * s.G, (g + 1) * s.G);
    };
    if (!w.coarse) {
      visit(0, w.w0);
      if (!s.causal) visit(w.w1 + 1, s.nkb);
    } else {
      visit_groups(0, w.gl);
      visit(w.gl * s.G, w.w0);
      if (!s.causal) {
        visit(w.w1 + 1, std::max(w.w1 + 1, w.gr * s.G));
        visit_groups(w.gr, s.ng);
        visit(std::max(w.w1 + 1, s.ng * s.G), s.nkb);
      }
    }
  }

  // far and the summary from `chosen`: one softmax over the unselected fine
  // blocks and the dropped groups, computed per part and joined by their
  // maxima and sums.
  void finish(const DsaShape& s, const Where& w, const float* cg, bool summary, float* pg) {
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    const int64_t n = static_cast<int64_t>(fine.size());
    far.clear();
    far_c.clear();
    sum_id.clear();
    sum_p.clear();
    L = kNegInf;
    for (int64_t i = 0; i < n; ++i)
      if (chosen[i]) {
        far.push_back(fine[i]);
        far_c.push_back(fine_c[i]);
      } else if (summary && !std::isnan(fine_c[i])) {
        sum_id.push_back(fine[i]);
        sum_p.push_back(fine_c[i]);
      }
    if (!summary) return;
    const int64_t nf = static_cast<int64_t>(sum_p.size());
    float lf = 0.0f, lg = 0.0f, mg = kNegInf;
    const float mf = ops::softmax_exp_row(sum_p.data(), nf, nf, &lf);
    // Groups a causal row does not read (from gl on) get weight 0 without
    // entering the softmax: half of them on average.
    const int64_t ng_read = s.causal ? w.gl : s.ng;
    if (pg && s.ng > 0) {
      if (w.coarse) {  // the whole groups not kept, NaN scores left out
        std::copy(cg, cg + w.gl, pg);
        std::fill(pg + w.gl, pg + w.gr, kNegInf);
        std::copy(cg + w.gr, cg + s.ng, pg + w.gr);
        for (int32_t g : kept) pg[g] = kNegInf;
        for (int64_t g = 0; g < ng_read; ++g) pg[g] = pg[g] == pg[g] ? pg[g] : kNegInf;
        mg = ops::softmax_exp_row(pg, ng_read, ng_read, &lg);
        std::fill(pg + ng_read, pg + s.ng, 0.0f);
      } else {
        std::fill(pg, pg + s.ng, 0.0f);
      }
    }
    const float mx = std::max(mf, mg);
    if (mx == kNegInf) return;  // nothing to summarise (or every score -inf): weights are 0
    const float af = mf == kNegInf ? 0.0f : std::exp(mf - mx), ag = mg == kNegInf ? 0.0f : std::exp(mg - mx);
    const float l = lf * af + lg * ag;
    for (float& p : sum_p) p *= af / l;
    if (mg != kNegInf)
      for (int64_t g = 0; g < ng_read; ++g) pg[g] *= ag / l;
    L = mx + std::log(l);
  }
};

}  // namespace

DsaPlan dsa_plan(const float* q, const float* k, const float* v, const AttnDims& d, const DsaConfig& cfg) {
  check_attn_dims(d, "attention.dsa");
  check_dsa_config(cfg);
  const DsaShape s(cfg, d.T, d.causal);
  const int64_t BH = d.B * d.H, D = d.D, T = d.T;
  const bool summary = cfg.summary && v != nullptr;
  DsaPlan plan;
  plan.far.block = s.block;
  plan.far.qblock = 1;
  plan.far.nqb = T;
  if (summary) {
    plan.summary_logit.assign(static_cast<size_t>(BH * T), -std::numeric_limits<float>::infinity());
    plan.summary_value.assign(static_cast<size_t>(BH * T * D), 0.0f);
  }
  Exploration ex;
  if (cfg.explore > 0.0 && d.selection_seed != 0) ex = {d.selection_seed, static_cast<float>(cfg.explore)};
  if (s.ng > s.m) {  // the coarse step can run for some rows
    plan.groups_kept = s.m;
    plan.kept_groups.assign(static_cast<size_t>(BH * T * s.m), -1);
  }
  std::vector<std::vector<int32_t>> keys(static_cast<size_t>(BH));
  std::vector<std::vector<int64_t>> counts(static_cast<size_t>(BH));
  const bool scored = s.top > 0 || summary;
  // One (b, h) per iteration, computed sequentially: the plan is the same
  // for any thread count.
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t bh = 0; bh < BH; ++bh) {
    counts[bh].assign(static_cast<size_t>(T), 0);
    if (!scored) continue;
    const int64_t base = (bh / d.H) * T * d.ld + (bh % d.H) * D;
    HeadSummaries hs;
    hs.compute(s, k + base, summary ? v + base : nullptr, d.ld, D);
    const size_t tile = static_cast<size_t>(kScoreRows * s.ng);
    std::vector<float> CG(tile), PG(summary ? tile : 0), RG(s.bound ? tile : 0), Qa;
    RankBoxes boxes = hs.boxes(s, D);
    RowPlan r;
    for (int64_t r0 = 0; r0 < T; r0 += kScoreRows) {
      const int64_t nr = std::min(kScoreRows, T - r0);
      score_groups(CG.data(), q + base, d.ld, hs, s, r0, nr, D);
      if (s.bound) rank_groups_by_bound(RG.data(), Qa, q + base, d.ld, hs, s, r0, nr, D);
      for (int64_t i = 0; i < nr; ++i) {
        const int64_t t = r0 + i, row = bh * T + t;
        if (s.bound) boxes.grank = RG.data() + i * s.ng;
        r.plan(s, t, q + base + t * d.ld, CG.data() + i * s.ng, hs.Kb.data(), D, D, summary,
               summary ? PG.data() + i * s.ng : nullptr, boxes, ex, row);
        keys[bh].insert(keys[bh].end(), r.far.begin(), r.far.end());
        counts[bh][t] = static_cast<int64_t>(r.far.size());
        if (!r.kept.empty()) std::copy(r.kept.begin(), r.kept.end(), plan.kept_groups.begin() + row * s.m);
        if (!summary) continue;
        plan.summary_logit[row] = r.L;
        weighted_rows_sum(plan.summary_value.data() + row * D, false, 1.0f, r.sum_p.data(), r.sum_id.data(),
                          static_cast<int64_t>(r.sum_id.size()), hs.Vb.data(), D, D);
      }
      // The dropped groups' part of the chunk's summary values: PG · V̄g.
      // (PG is 0 beyond the groups the rows read.)
      if (const int64_t n = s.groups_read(r0, nr); summary && n > 0)
        sgemm(false, false, nr, D, n, 1.0f, PG.data(), s.ng, hs.Vg.data(), D, 1.0f,
              plan.summary_value.data() + (bh * T + r0) * D, D);
    }
  }
  plan.far.offsets.reserve(static_cast<size_t>(BH * T + 1));
  plan.far.offsets.push_back(0);
  for (int64_t bh = 0; bh < BH; ++bh) {
    plan.far.keys.insert(plan.far.keys.end(), keys[bh].begin(), keys[bh].end());
    for (int64_t c : counts[bh]) plan.far.offsets.push_back(plan.far.offsets.back() + c);
  }
  return plan;
}

BlockSelection dsa_select(const float* q, const float* k, const AttnDims& d, const DsaConfig& cfg) {
  const BlockSelection far = dsa_plan(q, k, nullptr, d, cfg).far;
  const DsaShape s(cfg, d.T, d.causal);
  BlockSelection sel;
  sel.block = far.block;
  sel.qblock = 1;
  sel.nqb = d.T;
  sel.offsets.reserve(far.offsets.size());
  sel.offsets.push_back(0);
  std::vector<int32_t> list;
  for (int64_t row = 0; row < d.B * d.H * d.T; ++row) {
    int64_t w0, w1;
    s.window(row % d.T, w0, w1);
    list.assign(far.keys.begin() + far.offsets[row], far.keys.begin() + far.offsets[row + 1]);
    for (int64_t kb = w0; kb <= w1; ++kb) list.push_back(static_cast<int32_t>(kb));
    std::sort(list.begin(), list.end());
    sel.keys.insert(sel.keys.end(), list.begin(), list.end());
    sel.offsets.push_back(static_cast<int64_t>(sel.keys.size()));
  }
  return sel;
}

namespace {

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
  float weight = 0.0f;          // loss weight / number of rows
};

// The scorer-loss gradients of row `row` (= (b*H + h)*T + t): dc of its
// selected far blocks (far_c: their scores, aligned with the row's list in
// plan.far) into g_sel, and the return value for its summary logit.
// Nothing when the row has no far block at all or its attention put no mass
// outside the window.
float scorer_loss_grad(std::vector<float>& g_sel, const ScorerMasses& m, const DsaPlan& plan,
                       const std::vector<float>& far_c, float L, int64_t row) {
  const int64_t x0 = plan.far.offsets[row], x1 = plan.far.offsets[row + 1];
  g_sel.assign(static_cast<size_t>(x1 - x0), 0.0f);
  const bool has_sum = L > -std::numeric_limits<float>::infinity();
  float mx = has_sum ? L : -std::numeric_limits<float>::infinity(), total = has_sum ? m.summary[row] : 0.0f;
  for (int64_t x = x0; x < x1; ++x) {
    mx = std::max(mx, far_c[x - x0]);
    total += m.selected[x];
  }
  if (!(total > 0.0f) || !std::isfinite(mx)) return 0.0f;
  float z = has_sum ? std::exp(L - mx) : 0.0f;
  for (int64_t x = x0; x < x1; ++x) z += std::exp(far_c[x - x0] - mx);
  for (int64_t x = x0; x < x1; ++x)
    g_sel[x - x0] = m.weight * (std::exp(far_c[x - x0] - mx) / z - m.selected[x] / total);
  return has_sum ? m.weight * (std::exp(L - mx) / z - m.summary[row] / total) : 0.0f;
}

// Attention mass exp(score - lse_t) of each row on each of its selected far
// blocks (and on its summary key): where the row's attention actually went,
// recomputed from q, k and lse.
void scorer_masses(ScorerMasses& m, const DsaPlan& plan, const float* q, const float* k, const float* lse,
                   const AttnDims& d, const DsaConfig& cfg) {
  const DsaShape s(cfg, d.T, d.causal);
  const int64_t BH = d.B * d.H, D = d.D, ld = d.ld, T = d.T;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  m.selected.assign(plan.far.keys.size(), 0.0f);
  m.summary.assign(static_cast<size_t>(BH * T), 0.0f);
  m.weight = static_cast<float>(cfg.scorer_loss / static_cast<double>(std::max<int64_t>(1, BH * T)));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t bh = 0; bh < BH; ++bh) {
    const int64_t base = (bh / d.H) * T * ld + (bh % d.H) * D;
    std::vector<float> st(static_cast<size_t>(s.block));
    for (int64_t t = 0; t < T; ++t) {
      const int64_t row = bh * T + t;
      const float lt = lse[row];
      if (!std::isfinite(lt)) continue;
      const float L = plan.summary_logit[row];
      if (L > -std::numeric_limits<float>::infinity()) m.summary[row] = std::exp(L - lt);
      for (int64_t x = plan.far.offsets[row]; x < plan.far.offsets[row + 1]; ++x) {
        const int64_t kb = plan.far.keys[x], nk = s.block_len(kb);
        // Far blocks lie wholly before (causal) or outside the window: no mask.
        // st (nk × 1) = K_block · q_t.
        ops::tile_gemm_nn(nk, 1, D, scale, k + base + kb * s.block * ld, ld, q + base + t * ld, 1, 0.0f, st.data(), 1);
        float mass = 0.0f;
        for (int64_t i = 0; i < nk; ++i) mass += std::exp(st[i] - lt);
        m.selected[x] = mass;
      }
    }
  }
}

void summary_backward(float* dq, float* dk, float* dv, const float* g_logit, const float* g_value,
                      const DsaPlan& plan, const float* q, const float* k, const float* v, const AttnDims& d,
                      const DsaConfig& cfg, const ScorerMasses* masses) {
  const DsaShape s(cfg, d.T, d.causal);
  const int64_t BH = d.B * d.H, D = d.D, ld = d.ld, T = d.T;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  SPARTA_CHECK(plan.kept_groups.size() == static_cast<size_t>(s.ng > s.m ? BH * T * s.m : 0) &&
                   plan.groups_kept == (s.ng > s.m ? s.m : 0),
               "[attention.dsa] saved plan was made with other coarse-step settings than this backward call");
  bool replayed = true;  // false once a row's saved choice does not fit it
#pragma omp parallel for schedule(dynamic, 1) reduction(&& : replayed)
  for (int64_t bh = 0; bh < BH; ++bh) {
    const int64_t base = (bh / d.H) * T * ld + (bh % d.H) * D;
    HeadSummaries hs;
    hs.compute(s, k + base, v + base, ld, D, /*boxes=*/false);  // the plan's choice is replayed, not ranked again
    const size_t tile = static_cast<size_t>(kScoreRows * s.ng);
    std::vector<float> CG(tile), PG(tile), dCG(tile), row_grad(static_cast<size_t>(kScoreRows));
    // Gradients of the block means (rows 0..nkb-1) and group means (after).
    std::vector<float> dK(static_cast<size_t>((s.nkb + s.ng) * D), 0.0f), dV(dK.size(), 0.0f);
    float* dKg = dK.data() + s.nkb * D;
    float* dVg = dV.data() + s.nkb * D;
    std::vector<float> g_sel, dc;  // dc: d loss / d c of the row's summary entries
    RowPlan r;
    const float* L = plan.summary_logit.data() + bh * T;
    const float* U = plan.summary_value.data() + bh * T * D;
    const float* gL = g_logit + bh * T;
    const float* gU = g_value + bh * T * D;
    for (int64_t r0 = 0; r0 < T; r0 += kScoreRows) {
      const int64_t nr = std::min(kScoreRows, T - r0);
      score_groups(CG.data(), q + base, ld, hs, s, r0, nr, D);
      for (int64_t i = 0; i < nr; ++i) {
        const int64_t t = r0 + i, row = bh * T + t;
        const float* qt = q + base + t * ld;
        float* dqt = dq + base + t * ld;
        const int32_t* kept = plan.kept_groups.empty() ? nullptr : plan.kept_groups.data() + row * s.m;
        if (!r.replay(s, t, qt, CG.data() + i * s.ng, hs.Kb.data(), D, D, PG.data() + i * s.ng, kept,
                      plan.far.keys.data() + plan.far.offsets[row], plan.far.keys.data() + plan.far.offsets[row + 1])) {
          replayed = false;
          std::fill(PG.begin() + i * s.ng, PG.begin() + (i + 1) * s.ng, 0.0f);
          row_grad[i] = 0.0f;
          continue;
        }
        row_grad[i] = 0.0f;
        float g_sum = 0.0f;  // scorer-loss gradient of L[t]
        if (masses) {
          g_sum = scorer_loss_grad(g_sel, *masses, plan, r.far_c, L[t], row);
          for (size_t x = 0; x < r.far.size(); ++x) {  // selected far blocks: only the scorer loss
            if (g_sel[x] == 0.0f) continue;
            axpy_row(dqt, scale * g_sel[x], hs.Kb.data() + r.far[x] * D, D);
            axpy_row(dK.data() + r.far[x] * D, scale * g_sel[x], qt, D);
          }
        }
        if (!(L[t] > -std::numeric_limits<float>::infinity())) continue;
        const float* gu = gU + t * D;
        const float base_grad = gL[t] + g_sum - dot_row(gu, U + t * D, D);
        row_grad[i] = base_grad;
        dc.resize(r.sum_id.size());
        for (size_t e = 0; e < r.sum_id.size(); ++e) {
          const float p = r.sum_p[e];
          const int32_t kb = r.sum_id[e];
          dc[e] = p == 0.0f ? 0.0f : p * (base_grad + dot_row(gu, hs.Vb.data() + kb * D, D));
          if (p == 0.0f) continue;
          axpy_row(dK.data() + kb * D, scale * dc[e], qt, D);
          axpy_row(dV.data() + kb * D, p, gu, D);
        }
        weighted_rows_sum(dqt, true, scale, dc.data(), r.sum_id.data(), static_cast<int64_t>(dc.size()),
                          hs.Kb.data(), D, D);
      }
      const int64_t n = s.groups_read(r0, nr);  // PG is 0 beyond
      if (n == 0) continue;
      // The dropped groups' entries of the whole chunk as matrix products:
      // dCG = PG ⊙ (row_grad + dU·V̄gᵀ), then dq, dK̄g and dV̄g.
      sgemm(false, true, nr, n, D, 1.0f, gU + r0 * D, D, hs.Vg.data(), D, 0.0f, dCG.data(), s.ng);
      for (int64_t i = 0; i < nr; ++i)
        for (int64_t g = 0; g < n; ++g) {
          float& x = dCG[i * s.ng + g];
          x = PG[i * s.ng + g] * (row_grad[i] + x);
        }
      sgemm(false, false, nr, D, n, scale, dCG.data(), s.ng, hs.Kg.data(), D, 1.0f, dq + base + r0 * ld, ld);
      sgemm(true, false, n, D, nr, scale, dCG.data(), s.ng, q + base + r0 * ld, ld, 1.0f, dKg, D);
      sgemm(true, false, n, D, nr, 1.0f, PG.data(), s.ng, gU + r0 * D, D, 1.0f, dVg, D);
    }
    // Each mean spreads its gradient evenly over its tokens.
    const auto spread = [&](int64_t row, int64_t t0, int64_t n) {
      const float inv = 1.0f / static_cast<float>(n);
      for (int64_t t = t0; t < t0 + n; ++t) {
        axpy_row(dk + base + t * ld, inv, dK.data() + row * D, D);
        axpy_row(dv + base + t * ld, inv, dV.data() + row * D, D);
      }
    };
    for (int64_t kb = 0; kb < s.nkb; ++kb) spread(kb, kb * s.block, s.block_len(kb));
    for (int64_t g = 0; g < s.ng; ++g) spread(s.nkb + g, g * s.G * s.block, s.group_len(g));
  }
  SPARTA_CHECK(replayed, "[attention.dsa] saved plan does not match these inputs (a row's far blocks are not among "
                         "its candidates)");
}

}  // namespace
// ---------------------------------------------------------------- window

WindowAttention::WindowAttention(const DsaConfig& cfg) : cfg_(cfg) { check_dsa_config(cfg_); }

void WindowAttention::forward(float* out, float* lse, const float* q, const float* k, const float* v,
                              const AttnDims& d, std::unique_ptr<AttnSaved>* saved) {
  check_attn_dims(d, "attention.window");
  if (saved) saved->reset();
  ops::block_sparse_attention_forward(out, lse, q, k, v, d,
                                      local_window_selection(d, cfg_.block, dsa_window_blocks(cfg_)));
}

void WindowAttention::backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                               const float* lse, const float* q, const float* k, const float* v,
                               const AttnDims& d, const AttnSaved*) {
  check_attn_dims(d, "attention.window");
  ops::block_sparse_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, d,
                                       local_window_selection(d, cfg_.block, dsa_window_blocks(cfg_)));
}

void WindowAttention::decode(float* out, const float* q_cache, const float* k_cache, const float* v_cache,
                             int64_t len, int64_t H, int64_t D, DecodeMemo*) {
  check_decode_args(len, H, D, "attention.window");
  const float* q = q_cache + (len - 1) * H * D;
  const int64_t qb = (len - 1) / cfg_.block;
  const int64_t k0 = std::max<int64_t>(0, qb - dsa_window_blocks(cfg_) + 1) * cfg_.block;
  const std::vector<KeyRange> ranges{{k0, len}};
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < H; ++h) {
    std::vector<float> s;
    decode_head(out + h * D, q + h * D, k_cache + h * D, v_cache + h * D, H * D, D, ranges, s);
  }
}

// ---------------------------------------------------------------- dsa

DsaAttention::DsaAttention(const DsaConfig& cfg) : cfg_(cfg) { check_dsa_config(cfg_); }

namespace {

// Merges the far part (out_f, lse_f) into the window part (out, lse), in
// place: both are softmax attention over disjoint key sets, so the union is
// their lse-weighted mix. Rows the far part left empty (lse -inf) keep the
// window result bit for bit.
void merge_parts(float* out, float* lse, const float* out_f, const float* lse_f, const AttnDims& d) {
  const int64_t H = d.H, D = d.D, T = d.T;
#pragma omp parallel for schedule(static)
  for (int64_t bt = 0; bt < d.B * T; ++bt)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t r = ((bt / T) * H + h) * T + bt % T;
      const float lf = lse_f[r];
      if (!(lf > -std::numeric_limits<float>::infinity())) continue;
      const float lw = lse[r], m = std::max(lw, lf);
      const float aw = std::exp(lw - m), af = std::exp(lf - m), z = aw + af;
      float* o = out + (bt * H + h) * D;
      const float* of = out_f + (bt * H + h) * D;
      for (int64_t e = 0; e < D; ++e) o[e] = (aw * o[e] + af * of[e]) / z;
      lse[r] = m + std::log(z);
    }
}

bool has_far_part(const DsaPlan& plan) {
  if (!plan.far.keys.empty()) return true;
  for (float l : plan.summary_logit)
    if (l > -std::numeric_limits<float>::infinity()) return true;
  return false;
}

}  // namespace

// What DsaAttention::forward keeps for backward: its plan.
struct DsaSaved final : AttnSaved {
  DsaPlan plan;
};

// Two kernel calls share one softmax: the window part runs in tiles of
// `block` query rows (every row of a block has the same window), the far
// part on the row-sparse kernel (each row has its own selection and summary
// key); merge_parts joins them by their log-sum-exps.
void DsaAttention::forward(float* out, float* lse, const float* q, const float* k, const float* v,
                           const AttnDims& d, std::unique_ptr<AttnSaved>* saved) {
  if (saved) saved->reset();  // a failed call must not leave a stale plan behind
  DsaPlan plan = dsa_plan(q, k, v, d, cfg_);
  ops::block_sparse_attention_forward(out, lse, q, k, v, d, local_window_selection(d, cfg_.block, dsa_window_blocks(cfg_)));
  if (has_far_part(plan)) {
    std::vector<float> out_f(static_cast<size_t>(d.B * d.T * d.H * d.D)), lse_f(static_cast<size_t>(d.B * d.H * d.T));
    ops::row_sparse_attention_forward(out_f.data(), lse_f.data(), q, k, v, d, plan.far, plan.extra());
    merge_parts(out, lse, out_f.data(), lse_f.data(), d);
  }
  if (saved) {
    auto keep = std::make_unique<DsaSaved>();
    keep->plan = std::move(plan);
    *saved = std::move(keep);
  }
}

void DsaAttention::backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                            const float* lse, const float* q, const float* k, const float* v, const AttnDims& d,
                            const AttnSaved* saved) {
  // The plan is forward's (saved) or recomputed from the same q, k, v —
  // dsa_plan is deterministic, so both are the same. With the merged out
  // and lse, each part's backward is exactly its share of the gradient of
  // the joint softmax, so the far part simply accumulates.
  check_attn_dims(d, "attention.dsa");
  DsaPlan recomputed;
  const DsaPlan* plan_ptr = nullptr;
  if (saved) {
    const auto* s = dynamic_cast<const DsaSaved*>(saved);
    SPARTA_CHECK(s, "[attention.dsa] saved state was made by another attention implementation");
    SPARTA_CHECK(s->plan.far.nqb == d.T && s->plan.far.offsets.size() == static_cast<size_t>(d.B * d.H * d.T + 1),
                 "[attention.dsa] saved plan is for another problem shape than this backward call");
    plan_ptr = &s->plan;
  } else {
    recomputed = dsa_plan(q, k, v, d, cfg_);
    plan_ptr = &recomputed;
  }
  const DsaPlan& plan = *plan_ptr;
  ops::block_sparse_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, d,
                                       local_window_selection(d, cfg_.block, dsa_window_blocks(cfg_)));
  if (!has_far_part(plan)) return;
  if (plan.summary_logit.empty()) {
    ops::row_sparse_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, d, plan.far, {}, nullptr, nullptr,
                                       /*accumulate=*/true);
    return;
  }
  std::vector<float> g_logit(plan.summary_logit.size()), g_value(plan.summary_value.size());
  ops::row_sparse_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, d, plan.far, plan.extra(),
                                     g_logit.data(), g_value.data(), /*accumulate=*/true);
  ScorerMasses masses;
  if (cfg_.scorer_loss > 0.0) scorer_masses(masses, plan, q, k, lse, d, cfg_);
  summary_backward(dq, dk, dv, g_logit.data(), g_value.data(), plan, q, k, v, d, cfg_,
                   cfg_.scorer_loss > 0.0 ? &masses : nullptr);
}

namespace {

// Mean key and value of the complete blocks [0, blocks) of one sequence's
// cache, (blocks, H, D) each, and of the groups made of them, (groups, H,
// D), computed by the same mean_rows and group_mean as forward; with bound
// ranking also the keys' per-dimension max and min (minmax_rows,
// group_minmax).
class DsaDecodeMemo final : public DecodeMemo {
 public:
  DsaDecodeMemo(int64_t block, bool bound) : block_(block), bound_(bound) {}
  void truncate(int64_t len) override {
    blocks_ = std::min(blocks_, len / block_);
    groups_ = 0;  // recomputed from the block means on the next extend (cheap)
  }
  // Makes blocks [0, need) available (need <= complete blocks of the cache)
  // and every group of s made of them.
  void extend(const float* k_cache, const float* v_cache, int64_t need, const DsaShape& s, int64_t H, int64_t D) {
    if (H != H_ || D != D_ || s.G != G_) blocks_ = 0, groups_ = 0, H_ = H, D_ = D, G_ = s.G;
    const int64_t ld = H * D;
    if (need > blocks_) {
      grow(kmean_, vmean_, need * ld);
      if (bound_) grow(kmax_, kmin_, need * ld);
      const int64_t from = blocks_;
#pragma omp parallel for schedule(static) if ((need - from) * block_ * ld >= (int64_t{1} << 16))
      for (int64_t h = 0; h < H; ++h)
        for (int64_t kb = from; kb < need; ++kb) {
          mean_rows(kmean_.data() + (kb * H + h) * D, k_cache + h * D, kb * block_, (kb + 1) * block_, ld, D);
          mean_rows(vmean_.data() + (kb * H + h) * D, v_cache + h * D, kb * block_, (kb + 1) * block_, ld, D);
          if (bound_)
            minmax_rows(kmax_.data() + (kb * H + h) * D, kmin_.data() + (kb * H + h) * D, k_cache + h * D,
                        kb * block_, (kb + 1) * block_, ld, D);
        }
      blocks_ = need;
    }
    const int64_t groups = s.ng > 0 ? std::min(s.ng, need / s.G) : 0;
    if (groups > groups_) {
      grow(kgroup_, vgroup_, groups * ld);
      if (bound_) grow(gmax_, gmin_, groups * ld);
      for (int64_t g = groups_; g < groups; ++g)
        for (int64_t h = 0; h < H; ++h) {
          group_mean(kgroup_.data() + (g * H + h) * D, kmean_.data() + h * D, ld, s, g, D);
          group_mean(vgroup_.data() + (g * H + h) * D, vmean_.data() + h * D, ld, s, g, D);
          if (bound_)
            group_minmax(gmax_.data() + (g * H + h) * D, gmin_.data() + (g * H + h) * D, kmax_.data() + h * D,
                         kmin_.data() + h * D, ld, s, g, D);
        }
      groups_ = groups;
    }
  }
  // Head h's rows (stride H * D): block kb at kmean(h) + kb * H * D, group g
  // at kgroup(h) + g * H * D.
  const float* kmean(int64_t h) const { return kmean_.data() + h * D_; }
  const float* vmean(int64_t h) const { return vmean_.data() + h * D_; }
  const float* kgroup(int64_t h) const { return kgroup_.data() + h * D_; }
  const float* vgroup(int64_t h) const { return vgroup_.data() + h * D_; }
  // Head h's boxes for bound ranking (empty without it).
  RankBoxes boxes(int64_t h) const {
    if (!bound_) return {};
    return {kmax_.data() + h * D_, kmin_.data() + h * D_, gmax_.data() + h * D_, gmin_.data() + h * D_,
            H_ * D_, H_ * D_};
  }

 private:
  static void grow(std::vector<float>& a, std::vector<float>& b, int64_t size) {
    if (static_cast<int64_t>(a.size()) >= size) return;
    a.resize(std::max(static_cast<size_t>(size), 2 * a.size()));
    b.resize(a.size());
  }
  int64_t block_;
  bool bound_;
  int64_t blocks_ = 0, groups_ = 0, H_ = 0, D_ = 0, G_ = 0;
  std::vector<float> kmean_, vmean_, kgroup_, vgroup_, kmax_, kmin_, gmax_, gmin_;
};

}  // namespace

std::unique_ptr<DecodeMemo> DsaAttention::make_decode_memo() const {
  return std::make_unique<DsaDecodeMemo>(cfg_.block, cfg_.rank == "bound");
}

void DsaAttention::decode(float* out, const float* q_cache, const float* k_cache, const float* v_cache,
                          int64_t len, int64_t H, int64_t D, DecodeMemo* memo_base) {
  check_decode_args(len, H, D, "attention.dsa");
  DsaDecodeMemo* memo = nullptr;
  if (memo_base) {
    memo = dynamic_cast<DsaDecodeMemo*>(memo_base);
    SPARTA_CHECK(memo, "[attention.dsa] decode memo was made by another attention implementation");
  }
  // The last row of a causal sequence of len tokens, exactly as dsa_plan
  // treats it, for one head at a time.
  const DsaShape s(cfg_, len, true);
  const int64_t ld = H * D, t = len - 1;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  int64_t w0, w1, gl, gr;
  s.window(t, w0, w1);
  s.whole_groups(w0, w1, gl, gr);
  const bool scored = s.top > 0 || cfg_.summary;
  // Without a caller's memo a fresh one serves this call, so that both ways
  // run the same code on the means and give the same bits.
  DsaDecodeMemo local(cfg_.block, cfg_.rank == "bound");
  if (!memo) memo = &local;
  if (scored) memo->extend(k_cache, v_cache, w0, s, H, D);  // the candidates: blocks [0, w0)
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < H; ++h) {
    const float* qt = q_cache + t * ld + h * D;
    RowPlan r;
    std::vector<float> cg(static_cast<size_t>(gl)), pg(static_cast<size_t>(s.ng)), extra_value(static_cast<size_t>(D), 0.0f);
    if (scored) {
      for (int64_t g = 0; g < gl; ++g)  // the whole groups: every one before the window
        cg[g] = scale * dot_row(qt, memo->kgroup(h) + g * ld, D) + std::log(static_cast<float>(s.group_len(g)));
      r.plan(s, t, qt, cg.data(), memo->kmean(h), ld, D, cfg_.summary, pg.data(), memo->boxes(h));
      weighted_rows_sum(extra_value.data(), false, 1.0f, r.sum_p.data(), r.sum_id.data(),
                        static_cast<int64_t>(r.sum_id.size()), memo->vmean(h), ld, D);
      for (int64_t g = 0; g < gl && cfg_.summary; ++g)  // pg is 0 beyond the whole groups
        if (pg[g] != 0.0f) axpy_row(extra_value.data(), pg[g], memo->vgroup(h) + g * ld, D);
    }
    std::vector<int32_t> ids = r.far;
    for (int64_t kb = w0; kb <= w1; ++kb) ids.push_back(static_cast<int32_t>(kb));  // after every far block
    std::vector<KeyRange> ranges;
    for (int32_t kb : ids) {  // merge adjacent blocks; the last one ends at len
      const int64_t a = kb * s.block, e = std::min(len, a + s.block);
      if (!ranges.empty() && ranges.back().k1 == a)
        ranges.back().k1 = e;
      else
        ranges.push_back({a, e});
    }
    std::vector<float> sc;
    decode_head(out + h * D, qt, k_cache + h * D, v_cache + h * D, ld, D, ranges, sc, r.L, extra_value.data());
  }
}

}  // namespace sparta
