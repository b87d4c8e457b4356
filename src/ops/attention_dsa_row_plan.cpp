// RowPlan: how one query row chooses what it attends exactly and what
// enters its summary key (steps 2-5 of DsaAttention in attention_dsa.h):
// the coarse group step, the ranking of its fine candidates by score or by
// the bound over their key boxes (with optional exploration noise), and the
// summary softmax. Forward (dsa_plan), backward (replay of a saved choice)
// and decode all plan rows through this one class, so they select the same
// blocks.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "ops/attention_dsa_internal.h"
#include "ops/attention_rows.h"
#include "ops/elementwise.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // see elementwise.h: vectors never cross a call boundary

namespace sparta::dsa_internal {
namespace {

using ops::dot_row;
namespace simd = ops::simd;

// Σ_e max(q_e·mx_e, q_e·mn_e): the largest q·k any key inside the box
// [mn, mx] can have, so at least the largest logit of the block's tokens.
SPARTA_KERNEL_CLONES float bound_row(const float* q, const float* mx, const float* mn, int64_t n) {
  const simd::f32v acc = simd::reduce_blocks(
      n, simd::splat(0.0f), simd::Sum{}, [&](int64_t i, int64_t c, auto tag) SPARTA_SIMD_LAMBDA {
        constexpr bool kPartial = decltype(tag)::value;
        const simd::f32v qv = simd::load_n<kPartial>(q + i, c, 0.0f);
        return simd::vmax(qv * simd::load_n<kPartial>(mx + i, c, 0.0f),
                          qv * simd::load_n<kPartial>(mn + i, c, 0.0f));
      });
  return simd::hsum(acc);
}

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

}  // namespace

void RowPlan::plan(const DsaShape& s, int64_t t, const float* qt, const float* cg, const float* Kb,
                   int64_t kb_stride, int64_t D, bool summary, float* pg, const RankBoxes& boxes,
                   const Exploration& ex, int64_t row_id) {
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

bool RowPlan::replay(const DsaShape& s, int64_t t, const float* qt, const float* cg, const float* Kb,
                     int64_t kb_stride, int64_t D, float* pg, const int32_t* kept_groups, const int32_t* far0,
                     const int32_t* far1) {
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

void RowPlan::gather(const DsaShape& s, const Where& w, const float* qt, const float* Kb, int64_t kb_stride,
                     int64_t D, const RankBoxes* boxes) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  fine.clear();
  fine_c.clear();
  fine_r.clear();
  const auto visit = [&](int64_t kb0, int64_t kb1) {  // blocks [kb0, kb1), ascending
    for (int64_t kb = kb0; kb < kb1; ++kb) {
      fine.push_back(static_cast<int32_t>(kb));
      fine_c.push_back(scale * dot_row(qt, Kb + kb * kb_stride, D) + s.log_len(kb));
      if (boxes)
        fine_r.push_back(
            scale * bound_row(qt, boxes->bmax + kb * boxes->bstride, boxes->bmin + kb * boxes->bstride, D));
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

void RowPlan::finish(const DsaShape& s, const Where& w, const float* cg, bool summary, float* pg) {
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

}  // namespace sparta::dsa_internal
