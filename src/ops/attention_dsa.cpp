// DsaAttention's forward and backward (attention_dsa.h): the window part on
// the block-sparse kernel, the far part (selected blocks + summary key) on
// the row-sparse kernel, joined by their log-sum-exps; backward reuses
// forward's plan (DsaSaved) and adds the summary's gradients. The pieces
// live next door: attention_dsa_plan.cpp (selection),
// attention_dsa_row_plan.cpp (per-row choice), attention_dsa_summaries.cpp
// (block and group means), attention_dsa_scorer_grad.cpp (summary
// backward), attention_dsa_decode.cpp (decoding), attention_window.cpp.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "core/error.h"
#include "ops/attention_dense.h"
#include "ops/attention_dsa_internal.h"
#include "ops/row_sparse_attention.h"

namespace sparta {

using namespace dsa_internal;

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
// When the budget covers every candidate (dsa_attends_all), DSA is dense
// attention: no summary remains and every key is attended, so the dense
// kernel computes it in one pass, without scoring blocks nobody drops.
void DsaAttention::forward(float* out, float* lse, const float* q, const float* k, const float* v,
                           const AttnDims& d, std::unique_ptr<AttnSaved>* saved) {
  if (saved) saved->reset();  // a failed call must not leave a stale plan behind
  check_attn_dims(d, "attention.dsa");
  if (dsa_attends_all(cfg_, d.T)) {
    DenseAttention().forward(out, lse, q, k, v, d, saved);
    return;
  }
  DsaPlan plan = dsa_plan(q, k, v, d, cfg_);
  ops::block_sparse_attention_forward(out, lse, q, k, v, d,
                                      local_window_selection(d, cfg_.block, dsa_window_blocks(cfg_)));
  if (has_far_part(plan)) {
    std::vector<float> out_f(static_cast<size_t>(d.B * d.T * d.H * d.D)),
        lse_f(static_cast<size_t>(d.B * d.H * d.T));
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
                            const float* lse, const float* q, const float* k, const float* v,
                            const AttnDims& d, const AttnSaved* saved) {
  // The plan is forward's (saved) or recomputed from the same q, k, v —
  // dsa_plan is deterministic, so both are the same. With the merged out
  // and lse, each part's backward is exactly its share of the gradient of
  // the joint softmax, so the far part simply accumulates.
  check_attn_dims(d, "attention.dsa");
  if (dsa_attends_all(cfg_, d.T)) {
    DenseAttention().backward(dq, dk, dv, dout, out, lse, q, k, v, d, saved);
    return;
  }
  DsaPlan recomputed;
  const DsaPlan* plan_ptr = nullptr;
  if (saved) {
    const auto* s = dynamic_cast<const DsaSaved*>(saved);
    SPARTA_CHECK(s, "[attention.dsa] saved state was made by another attention implementation");
    SPARTA_CHECK(
        s->plan.far.nqb == d.T && s->plan.far.offsets.size() == static_cast<size_t>(d.B * d.H * d.T + 1),
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

}  // namespace sparta
