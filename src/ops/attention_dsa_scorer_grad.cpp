// Gradients through DSA's scorer: the backward of the summary key (how
// dL/d logit and dL/d value of each row's summary reach its query and the
// keys and values of the summarised blocks and groups) and the optional
// scorer loss that pulls the block scores toward where attention mass went.
// The top-k choice itself passes no gradient: these are what teach the
// scorer which blocks to select.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/gemm.h"
#include "ops/attention_dsa_internal.h"
#include "ops/attention_rows.h"
#include "ops/tile_gemm.h"

namespace sparta::dsa_internal {
namespace {

using ops::dot_row;

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

}  // namespace

void scorer_masses(ScorerMasses& m, const DsaPlan& plan, const float* q, const float* k, const float* lse,
                   const AttnDims& d, const DsaConfig& cfg) {
  const DsaShape s(cfg, d.T, d.causal);
  const int64_t BH = d.B * d.H, D = d.D, ld = d.ld, T = d.T;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  m.selected.assign(plan.far.keys.size(), 0.0f);
  m.summary.assign(static_cast<size_t>(BH * T), 0.0f);
  // Times aux_grad_scale (the loss scale dout carries, over the step's
  // micro-batches), so the scorer loss is unscaled and averaged with the main
  // loss's gradient (1: the same float as without it).
  m.weight = static_cast<float>(cfg.scorer_loss * d.aux_grad_scale / static_cast<double>(std::max<int64_t>(1, BH * T)));
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
        ops::tile_gemm_nn(nk, 1, D, scale, k + base + kb * s.block * ld, ld, q + base + t * ld, 1, 0.0f,
                          st.data(), 1);
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
    hs.compute(s, k + base, v + base, ld, D,
               /*boxes=*/false);  // the plan's choice is replayed, not ranked again
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
                      plan.far.keys.data() + plan.far.offsets[row],
                      plan.far.keys.data() + plan.far.offsets[row + 1])) {
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
  SPARTA_CHECK(replayed,
               "[attention.dsa] saved plan does not match these inputs (a row's far blocks are not among "
               "its candidates)");
}

}  // namespace sparta::dsa_internal
