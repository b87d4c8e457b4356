#include "ops/attention_dsa.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/gemm.h"
#include "ops/attention_rows.h"
#include "ops/row_sparse_attention.h"
#include "ops/tile_gemm.h"
#include "ops/elementwise.h"

namespace sparta {
namespace {

using ops::BlockSelection;

// A contiguous run of cached key positions [k0, k1) for decode.
struct KeyRange {
  int64_t k0, k1;
};

SPARTA_KERNEL_CLONES float dot_row(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

SPARTA_KERNEL_CLONES void axpy_row(float* y, float a, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
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

// Ranks candidate key blocks: higher score first, ties and NaN by block id
// (NaN counts as -inf so a corrupt score never wins and the order stays a
// strict weak ordering).
struct Scored {
  float score;
  int32_t id;
};
bool better(const Scored& a, const Scored& b) {
  const float sa = std::isnan(a.score) ? -std::numeric_limits<float>::infinity() : a.score;
  const float sb = std::isnan(b.score) ? -std::numeric_limits<float>::infinity() : b.score;
  if (sa != sb) return sa > sb;
  return a.id < b.id;
}

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
// blocks of `block` tokens; every query row selects on its own.
struct DsaShape {
  int64_t T, block, nkb, W, top;
  bool causal;
  DsaShape(const DsaConfig& c, int64_t T_, bool causal_)
      : T(T_),
        block(c.block),
        nkb((T_ + c.block - 1) / c.block),
        W(dsa_window_blocks(c)),
        top(dsa_top_blocks(c, T_)),
        causal(causal_) {}
  // Local window of query row t: key blocks [w0, w1].
  void window(int64_t t, int64_t& w0, int64_t& w1) const {
    const int64_t kb = t / block;
    w0 = std::max<int64_t>(0, kb - W + 1);
    w1 = causal ? kb : std::min(nkb - 1, kb + W - 1);
  }
  int64_t block_len(int64_t kb) const { return std::min(block, T - kb * block); }
};

// Candidates of query row t: causal, the key blocks before its window;
// bidirectional, every block outside it.
template <class F>
void for_each_candidate(const DsaShape& s, int64_t t, F&& f) {
  int64_t w0, w1;
  s.window(t, w0, w1);
  for (int64_t kb = 0; kb < w0; ++kb) f(kb);
  if (!s.causal)
    for (int64_t kb = w1 + 1; kb < s.nkb; ++kb) f(kb);
}

SPARTA_KERNEL_CLONES void mean_rows(float* out, const float* x, int64_t t0, int64_t t1, int64_t ld, int64_t D) {
  std::fill(out, out + D, 0.0f);
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t e = 0; e < D; ++e) out[e] += x[t * ld + e];
  const float inv = 1.0f / static_cast<float>(t1 - t0);
  for (int64_t e = 0; e < D; ++e) out[e] *= inv;
}

// Block summaries of one (b, h): mean keys and mean values (nkb, D).
// `k`, `v` point at token 0 of the head's slice.
struct HeadSummaries {
  std::vector<float> Kb, Vb;
  void compute(const DsaShape& s, const float* k, const float* v, int64_t ld, int64_t D) {
    Kb.resize(static_cast<size_t>(s.nkb * D));
    for (int64_t kb = 0; kb < s.nkb; ++kb)
      mean_rows(Kb.data() + kb * D, k, kb * s.block, kb * s.block + s.block_len(kb), ld, D);
    if (v) {
      Vb.resize(static_cast<size_t>(s.nkb * D));
      for (int64_t kb = 0; kb < s.nkb; ++kb)
        mean_rows(Vb.data() + kb * D, v, kb * s.block, kb * s.block + s.block_len(kb), ld, D);
    }
  }
};

// Query rows scored per sgemm: bounds the (rows × nkb) score scratch.
constexpr int64_t kScoreRows = 64;

// Scores of query rows [r0, r0 + nr) (q: the head's token 0, stride ld)
// against every key block: C[i][kb] = q·K̄/sqrt(D) + ln(len(kb)), (nr, nkb).
void score_rows(float* C, const float* q, int64_t ld, const HeadSummaries& hs, const DsaShape& s, int64_t r0,
                int64_t nr, int64_t D) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  sgemm(false, true, nr, s.nkb, D, scale, q + r0 * ld, ld, hs.Kb.data(), D, 0.0f, C, s.nkb);
  // Every block but a short last one has length `block`: one log each.
  const float full = std::log(static_cast<float>(s.block)), last = std::log(static_cast<float>(s.block_len(s.nkb - 1)));
  for (int64_t i = 0; i < nr; ++i) {
    float* c = C + i * s.nkb;
    for (int64_t kb = 0; kb + 1 < s.nkb; ++kb) c[kb] += full;
    c[s.nkb - 1] += last;
  }
}

// Summary of the unselected candidates of row t from its score row c (nkb)
// and its selection flags: P (nkb) = softmax of their scores (0
// elsewhere); returns their log-sum-exp (-inf when none).
// Vectorised over the (at most two) contiguous candidate ranges.
float summary_weights(float* P, const float* c, const char* selected, const DsaShape& s, int64_t t) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  std::fill(P, P + s.nkb, kNegInf);
  for_each_candidate(s, t, [&](int64_t kb) {
    if (!selected[kb] && !std::isnan(c[kb])) P[kb] = c[kb];
  });
  int64_t w0, w1;
  s.window(t, w0, w1);
  std::fill(P + w0, P + s.nkb, 0.0f);  // window and later blocks: no weight (bidirectional: redone below)
  float l = 0.0f;
  float m = ops::softmax_exp_row(P, w0, w0, &l);
  if (!s.causal && w1 + 1 < s.nkb) {
    float* P2 = P + w1 + 1;
    const int64_t n2 = s.nkb - w1 - 1;
    for (int64_t kb = w1 + 1; kb < s.nkb; ++kb) P[kb] = !selected[kb] && !std::isnan(c[kb]) ? c[kb] : kNegInf;
    float l2 = 0.0f;
    const float m2 = ops::softmax_exp_row(P2, n2, n2, &l2);
    const float mm = std::max(m, m2);
    if (mm == kNegInf) return kNegInf;  // both ranges empty: P is all 0
    const float a1 = std::exp(m - mm), a2 = std::exp(m2 - mm);
    for (int64_t kb = 0; kb < w0; ++kb) P[kb] *= a1;
    for (int64_t kb = 0; kb < n2; ++kb) P2[kb] *= a2;
    l = l * a1 + l2 * a2;
    m = mm;
  }
  if (m == kNegInf) return kNegInf;
  const float inv = 1.0f / l;
  for (int64_t kb = 0; kb < s.nkb; ++kb) P[kb] *= inv;
  return m + std::log(l);
}

// splitmix64: a well-mixed 64-bit hash, for noise that depends only on
// (seed, b, h, t, kb) and so not on threading or call order.
uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Exploration noise of one (row, key block): scale · Gumbel(0, 1).
struct Exploration {
  uint64_t seed = 0;  // 0 = none
  float scale = 0.0f;
  float noise(int64_t row, int64_t kb) const {
    const uint64_t h = mix64(mix64(seed ^ static_cast<uint64_t>(row)) + static_cast<uint64_t>(kb));
    const double u = (static_cast<double>(h >> 11) + 0.5) * 0x1.0p-53;  // (0, 1)
    return scale * static_cast<float>(-std::log(-std::log(u)));
  }
};

// Selection of row t from its score row: the top `s.top` candidates
// (ranked with exploration noise, if any), ascending, into `list` (the
// window is not included); flags of the selected blocks in `selected`.
// One pass keeping the best few in a small sorted buffer: most candidates
// fail the first comparison, so this is O(candidates) for a small top.
void select_row(std::vector<int32_t>& list, std::vector<Scored>& best, char* selected, const float* c,
                const DsaShape& s, int64_t t, const Exploration& ex = {}, int64_t row_id = 0) {
  best.clear();
  const auto offer = [&](const Scored& x) {
    if (static_cast<int64_t>(best.size()) == s.top) {
      if (!better(x, best.back())) return;
      best.pop_back();
    }
    best.insert(std::upper_bound(best.begin(), best.end(), x, better), x);
  };
  if (s.top > 0 && ex.seed) {
    for_each_candidate(s, t, [&](int64_t kb) { offer({c[kb] + ex.noise(row_id, kb), static_cast<int32_t>(kb)}); });
  } else if (s.top > 0) {
    // Candidates come in ascending id order, so once the buffer is full a
    // newcomer must score strictly higher than the worst kept one (a tie
    // loses to the smaller id; NaN never passes the comparison).
    float worst = 0.0f;
    bool full = false;
    for_each_candidate(s, t, [&](int64_t kb) {
      if (full && !(c[kb] > worst)) return;
      offer({c[kb], static_cast<int32_t>(kb)});
      full = static_cast<int64_t>(best.size()) == s.top;
      if (full) worst = std::isnan(best.back().score) ? -std::numeric_limits<float>::infinity() : best.back().score;
    });
  }
  list.clear();
  for (const Scored& x : best) list.push_back(x.id);
  std::sort(list.begin(), list.end());
  std::fill(selected, selected + s.nkb, 0);
  for (int32_t kb : list) selected[kb] = 1;
}

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
  std::vector<std::vector<int32_t>> keys(static_cast<size_t>(BH));
  std::vector<std::vector<int64_t>> counts(static_cast<size_t>(BH));
  const bool scored = s.top > 0 || summary;
  // One (b, h) per iteration, computed sequentially: the plan is the same
  // for any thread count.
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t bh = 0; bh < BH; ++bh) {
    const int64_t base = (bh / d.H) * T * d.ld + (bh % d.H) * D;
    HeadSummaries hs;
    if (scored) hs.compute(s, k + base, summary ? v + base : nullptr, d.ld, D);
    std::vector<float> C(static_cast<size_t>(kScoreRows * s.nkb), 0.0f);
    std::vector<float> P(static_cast<size_t>(summary ? kScoreRows * s.nkb : 0));
    std::vector<char> selected(static_cast<size_t>(s.nkb));
    std::vector<Scored> best;
    std::vector<int32_t> list;
    counts[bh].reserve(static_cast<size_t>(T));
    for (int64_t r0 = 0; r0 < T; r0 += kScoreRows) {
      const int64_t nr = std::min(kScoreRows, T - r0);
      if (scored) score_rows(C.data(), q + base, d.ld, hs, s, r0, nr, D);
      for (int64_t i = 0; i < nr; ++i) {
        const int64_t t = r0 + i;
        select_row(list, best, selected.data(), C.data() + i * s.nkb, s, t, ex, bh * T + t);
        keys[bh].insert(keys[bh].end(), list.begin(), list.end());
        counts[bh].push_back(static_cast<int64_t>(list.size()));
        if (summary)
          plan.summary_logit[bh * T + t] =
              summary_weights(P.data() + i * s.nkb, C.data() + i * s.nkb, selected.data(), s, t);
      }
      // Summary values of the chunk: P · V̄ (rows without a summary are 0).
      if (summary)
        sgemm(false, false, nr, D, s.nkb, 1.0f, P.data(), s.nkb, hs.Vb.data(), D, 0.0f,
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
// (each row's own query), dk and dv (tokens of the summarised blocks).
//   P = softmax(c) over the unselected candidates, U = P·V̄, L = lse(c):
//   dc = P ⊙ (dL + dU·V̄ᵀ - dU·U),  dq = dc·K̄/sqrt(D),  dK̄ = dcᵀ·q/sqrt(D),
//   dV̄ = Pᵀ·dU; a mean spreads its gradient evenly over its tokens.
// With masses (scorer loss, see scorer_masses): per row t the scores of its
// selected far blocks and its summary logit L[t] form a distribution
// p̂ = softmax(c_sel..., L); the loss weight·KL(m̂ ‖ p̂), m̂ the normalised
// attention masses, adds weight·(p̂ - m̂) to those logits (the summary's
// share reaches the unselected scores through L = lse(c)).
struct ScorerMasses {
  std::vector<float> selected;  // aligned with plan.far.keys
  std::vector<float> summary;   // (B, H, T)
  float weight = 0.0f;          // loss weight / number of rows
};

// The scorer-loss gradients of row `row` (= (b*H + h)*T + t): (kb, dc) for
// its selected far blocks into g_sel, and the return value for its summary
// logit. Nothing when the row has no far block at all or its attention put
// no mass outside the window.
float scorer_loss_grad(std::vector<std::pair<int32_t, float>>& g_sel, const ScorerMasses& m, const DsaPlan& plan,
                       const float* c, float L, int64_t row) {
  const int64_t x0 = plan.far.offsets[row], x1 = plan.far.offsets[row + 1];
  const bool has_sum = L > -std::numeric_limits<float>::infinity();
  float mx = has_sum ? L : -std::numeric_limits<float>::infinity(), total = has_sum ? m.summary[row] : 0.0f;
  for (int64_t x = x0; x < x1; ++x) {
    mx = std::max(mx, c[plan.far.keys[x]]);
    total += m.selected[x];
  }
  if (!(total > 0.0f) || !std::isfinite(mx)) return 0.0f;
  float z = has_sum ? std::exp(L - mx) : 0.0f;
  for (int64_t x = x0; x < x1; ++x) z += std::exp(c[plan.far.keys[x]] - mx);
  for (int64_t x = x0; x < x1; ++x) {
    const int32_t kb = plan.far.keys[x];
    g_sel.push_back({kb, m.weight * (std::exp(c[kb] - mx) / z - m.selected[x] / total)});
  }
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
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t bh = 0; bh < BH; ++bh) {
    const int64_t base = (bh / d.H) * T * ld + (bh % d.H) * D;
    HeadSummaries hs;
    hs.compute(s, k + base, v + base, ld, D);
    const size_t tile = static_cast<size_t>(kScoreRows * s.nkb);
    std::vector<float> C(tile), P(tile), dC(tile);
    std::vector<float> dKb(static_cast<size_t>(s.nkb * D), 0.0f), dVb(static_cast<size_t>(s.nkb * D), 0.0f);
    std::vector<char> selected(static_cast<size_t>(s.nkb));
    std::vector<std::pair<int32_t, float>> g_sel;
    const float* L = plan.summary_logit.data() + bh * T;
    const float* U = plan.summary_value.data() + bh * T * D;
    const float* gL = g_logit + bh * T;
    const float* gU = g_value + bh * T * D;
    for (int64_t r0 = 0; r0 < T; r0 += kScoreRows) {
      const int64_t nr = std::min(kScoreRows, T - r0);
      score_rows(C.data(), q + base, ld, hs, s, r0, nr, D);
      // dC first holds dU·V̄ᵀ.
      sgemm(false, true, nr, s.nkb, D, 1.0f, gU + r0 * D, D, hs.Vb.data(), D, 0.0f, dC.data(), s.nkb);
      for (int64_t i = 0; i < nr; ++i) {
        const int64_t t = r0 + i, row = bh * T + t;
        float* p = P.data() + i * s.nkb;
        float* dc = dC.data() + i * s.nkb;
        const float* c = C.data() + i * s.nkb;
        std::fill(p, p + s.nkb, 0.0f);
        float g_sum = 0.0f;  // scorer-loss gradient of L[t]
        g_sel.clear();
        if (masses) g_sum = scorer_loss_grad(g_sel, *masses, plan, c, L[t], row);
        if (L[t] > -std::numeric_limits<float>::infinity()) {
          std::fill(selected.begin(), selected.end(), 0);
          for (int64_t x = plan.far.offsets[row]; x < plan.far.offsets[row + 1]; ++x) selected[plan.far.keys[x]] = 1;
          float du_u = 0.0f;
          for (int64_t e = 0; e < D; ++e) du_u += gU[t * D + e] * U[t * D + e];
          std::fill(p, p + s.nkb, -std::numeric_limits<float>::infinity());
          for_each_candidate(s, t, [&](int64_t kb) {
            if (!selected[kb] && !std::isnan(c[kb])) p[kb] = c[kb];
          });
          ops::exp_shifted(p, s.nkb, L[t]);
          for (int64_t kb = 0; kb < s.nkb; ++kb) dc[kb] = p[kb] * (gL[t] + g_sum + dc[kb] - du_u);
        } else {
          std::fill(dc, dc + s.nkb, 0.0f);
        }
        for (const auto& [kb, g] : g_sel) dc[kb] += g;  // selected far blocks (p = 0 there)
      }
      sgemm(false, false, nr, D, s.nkb, scale, dC.data(), s.nkb, hs.Kb.data(), D, 1.0f, dq + base + r0 * ld, ld);
      sgemm(true, false, s.nkb, D, nr, scale, dC.data(), s.nkb, q + base + r0 * ld, ld, 1.0f, dKb.data(), D);
      sgemm(true, false, s.nkb, D, nr, 1.0f, P.data(), s.nkb, gU + r0 * D, D, 1.0f, dVb.data(), D);
    }
    for (int64_t kb = 0; kb < s.nkb; ++kb) {
      const int64_t n = s.block_len(kb);
      const float inv = 1.0f / static_cast<float>(n);
      for (int64_t t = kb * s.block; t < kb * s.block + n; ++t) {
        axpy_row(dk + base + t * ld, inv, dKb.data() + kb * D, D);
        axpy_row(dv + base + t * ld, inv, dVb.data() + kb * D, D);
      }
    }
  }
}

}  // namespace
// ---------------------------------------------------------------- window

WindowAttention::WindowAttention(const DsaConfig& cfg) : cfg_(cfg) { check_dsa_config(cfg_); }

void WindowAttention::forward(float* out, float* lse, const float* q, const float* k, const float* v,
                              const AttnDims& d) {
  check_attn_dims(d, "attention.window");
  ops::block_sparse_attention_forward(out, lse, q, k, v, d,
                                      local_window_selection(d, cfg_.block, dsa_window_blocks(cfg_)));
}

void WindowAttention::backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                               const float* lse, const float* q, const float* k, const float* v,
                               const AttnDims& d) {
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

// Two kernel calls share one softmax: the window part runs in tiles of
// `block` query rows (every row of a block has the same window), the far
// part on the row-sparse kernel (each row has its own selection and summary
// key); merge_parts joins them by their log-sum-exps.
void DsaAttention::forward(float* out, float* lse, const float* q, const float* k, const float* v,
                           const AttnDims& d) {
  const DsaPlan plan = dsa_plan(q, k, v, d, cfg_);
  ops::block_sparse_attention_forward(out, lse, q, k, v, d, local_window_selection(d, cfg_.block, dsa_window_blocks(cfg_)));
  if (!has_far_part(plan)) return;
  std::vector<float> out_f(static_cast<size_t>(d.B * d.T * d.H * d.D)), lse_f(static_cast<size_t>(d.B * d.H * d.T));
  ops::row_sparse_attention_forward(out_f.data(), lse_f.data(), q, k, v, d, plan.far, plan.extra());
  merge_parts(out, lse, out_f.data(), lse_f.data(), d);
}

void DsaAttention::backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                            const float* lse, const float* q, const float* k, const float* v, const AttnDims& d) {
  // Recomputing the plan from the same q, k, v reproduces forward's exactly
  // (dsa_plan is deterministic) and keeps the instance stateless. With the
  // merged out and lse, each part's backward is exactly its share of the
  // gradient of the joint softmax, so the far part simply accumulates.
  const DsaPlan plan = dsa_plan(q, k, v, d, cfg_);
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
// cache, (blocks, H, D) each, computed by the same mean_rows as forward so
// that decode gives the same bits with or without it.
class DsaDecodeMemo final : public DecodeMemo {
 public:
  explicit DsaDecodeMemo(int64_t block) : block_(block) {}
  void truncate(int64_t len) override { blocks_ = std::min(blocks_, len / block_); }
  // Makes blocks [0, need) available (need <= complete blocks of the cache).
  void extend(const float* k_cache, const float* v_cache, int64_t need, int64_t H, int64_t D) {
    if (H != H_ || D != D_) blocks_ = 0, H_ = H, D_ = D;
    if (need <= blocks_) return;
    const size_t size = static_cast<size_t>(need * H * D);
    if (kmean_.size() < size) kmean_.resize(std::max(size, 2 * kmean_.size())), vmean_.resize(kmean_.size());
    const int64_t ld = H * D, from = blocks_;
#pragma omp parallel for schedule(static) if ((need - from) * block_ * ld >= (int64_t{1} << 16))
    for (int64_t h = 0; h < H; ++h)
      for (int64_t kb = from; kb < need; ++kb) {
        mean_rows(kmean_.data() + (kb * H + h) * D, k_cache + h * D, kb * block_, (kb + 1) * block_, ld, D);
        mean_rows(vmean_.data() + (kb * H + h) * D, v_cache + h * D, kb * block_, (kb + 1) * block_, ld, D);
      }
    blocks_ = need;
  }
  const float* kmean(int64_t kb, int64_t h) const { return kmean_.data() + (kb * H_ + h) * D_; }
  const float* vmean(int64_t kb, int64_t h) const { return vmean_.data() + (kb * H_ + h) * D_; }

 private:
  int64_t block_, blocks_ = 0, H_ = 0, D_ = 0;
  std::vector<float> kmean_, vmean_;
};

}  // namespace

std::unique_ptr<DecodeMemo> DsaAttention::make_decode_memo() const {
  return std::make_unique<DsaDecodeMemo>(cfg_.block);
}

void DsaAttention::decode(float* out, const float* q_cache, const float* k_cache, const float* v_cache,
                          int64_t len, int64_t H, int64_t D, DecodeMemo* memo_base) {
  check_decode_args(len, H, D, "attention.dsa");
  DsaDecodeMemo* memo = nullptr;
  if (memo_base) {
    memo = dynamic_cast<DsaDecodeMemo*>(memo_base);
    SPARTA_CHECK(memo, "[attention.dsa] decode memo was made by another attention implementation");
  }
  // The last row of a causal sequence of len tokens, exactly as dsa_plan and
  // the kernel treat it, for one head at a time.
  const DsaShape s(cfg_, len, true);
  const int64_t ld = H * D, t = len - 1;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  int64_t w0, w1;
  s.window(t, w0, w1);
  const bool scored = s.top > 0 || cfg_.summary;
  // Without a caller's memo a fresh one serves this call, so that both ways
  // run the same code on the block means and give the same bits.
  DsaDecodeMemo local(cfg_.block);
  if (!memo) memo = &local;
  if (scored) memo->extend(k_cache, v_cache, w0, H, D);  // the candidates: blocks [0, w0)
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < H; ++h) {
    std::vector<float> c(static_cast<size_t>(s.nkb), 0.0f), P(static_cast<size_t>(s.nkb));
    std::vector<char> selected(static_cast<size_t>(s.nkb));
    std::vector<Scored> best;
    std::vector<int32_t> ids;
    const float* qt = q_cache + t * ld + h * D;
    if (scored) {
      for_each_candidate(s, t, [&](int64_t kb) {
        c[kb] = scale * dot_row(qt, memo->kmean(kb, h), D) + std::log(static_cast<float>(s.block_len(kb)));
      });
    }
    select_row(ids, best, selected.data(), c.data(), s, t);
    float extra_logit = -std::numeric_limits<float>::infinity();
    std::vector<float> extra_value(static_cast<size_t>(D), 0.0f);
    if (cfg_.summary) {
      extra_logit = summary_weights(P.data(), c.data(), selected.data(), s, t);
      for (int64_t kb = 0; kb < s.nkb; ++kb)  // P is 0 outside the candidates [0, w0)
        if (P[kb] != 0.0f) axpy_row(extra_value.data(), P[kb], memo->vmean(kb, h), D);
    }
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
    decode_head(out + h * D, q_cache + t * ld + h * D, k_cache + h * D, v_cache + h * D, ld, D, ranges, sc,
                extra_logit, extra_value.data());
  }
}

std::unique_ptr<Attention> make_window_attention(const DsaConfig& cfg) {
  return std::make_unique<WindowAttention>(cfg);
}

std::unique_ptr<Attention> make_dsa_attention(const DsaConfig& cfg) { return std::make_unique<DsaAttention>(cfg); }

}  // namespace sparta
