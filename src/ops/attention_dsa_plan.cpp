// The DSA selection plan of a whole (B, T) problem: dsa_plan runs RowPlan
// for every query row, one (b, h) per parallel iteration, and gathers each
// row's far blocks and summary key (logit and value) into the DsaPlan that
// forward feeds the row-sparse kernel and backward replays; dsa_select adds
// each row's window for callers that want the full selection.
#include <algorithm>
#include <limits>
#include <vector>

#include "core/gemm.h"
#include "ops/attention_dsa_internal.h"

namespace sparta {

using namespace dsa_internal;
using ops::BlockSelection;

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
        const int64_t noise_row = ((d.first_sequence + bh / d.H) * d.H + bh % d.H) * T + t;
        if (s.bound) boxes.grank = RG.data() + i * s.ng;
        r.plan(s, t, q + base + t * d.ld, CG.data() + i * s.ng, hs.Kb.data(), D, D, summary,
               summary ? PG.data() + i * s.ng : nullptr, boxes, ex, noise_row);
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

}  // namespace sparta
