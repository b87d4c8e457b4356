// Window and dynamic sparse attention (attention_dsa.h) and the DSA key
// budget (dsa_budget.h): against the dense kernel when the budget covers
// every key, against the double-precision reference with the mask of the
// selection actually made, against an independent re-derivation of the
// selection rule, against finite differences, and for decode consistency,
// determinism and input validation.
#include "ops/attention_dsa.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "ops/attention.h"
#include "ops/attention_reference.h"
#include "ops/dsa_budget.h"
#include "attention_test_util.h"
#include "op_test_harness.h"

namespace sparta {
namespace {

using test::all_finite;
using test::AttnResult;
using test::expect_rel_close;
using test::expect_results_close;
using test::mask_of;

using ops::BlockSelection;

// q, k, v either fused per token as (B, T, 3, H, D) (ld = 3*H*D, the model's
// layout) or as three separate (B, T, H, D) tensors one after another in the
// same buffer (ld = H*D, the KV-cache layout when B = 1).
struct Problem {
  AttnDims d;
  std::vector<float> qkv;
  int64_t qo = 0, ko = 0, vo = 0;
  Problem(int64_t B, int64_t T, int64_t H, int64_t D, bool causal, bool fused, uint64_t seed, double amp = 1.5) {
    const int64_t hd = H * D;
    d.B = B, d.T = T, d.H = H, d.D = D, d.causal = causal;
    if (fused) {
      d.ld = 3 * hd, qo = 0, ko = hd, vo = 2 * hd;
    } else {
      d.ld = hd, qo = 0, ko = B * T * hd, vo = 2 * B * T * hd;
    }
    Rng rng(seed);
    qkv = test::random_normal(static_cast<size_t>(3 * B * T * hd), rng, amp);
  }
  float* q() { return qkv.data() + qo; }
  float* k() { return qkv.data() + ko; }
  const float* q() const { return qkv.data() + qo; }
  const float* k() const { return qkv.data() + ko; }
  const float* v() const { return qkv.data() + vo; }
  size_t out_size() const { return static_cast<size_t>(d.B * d.T * d.H * d.D); }
  size_t lse_size() const { return static_cast<size_t>(d.B * d.H * d.T); }
};

// Forward + backward of `att`; dqkv has the layout of qkv (every element is
// a gradient slice, so a sentinel left anywhere means it was not written).
AttnResult run(Attention& att, const Problem& p, const std::vector<float>& dout) {
  constexpr float kSentinel = 777.0f;
  AttnResult r{std::vector<float>(p.out_size(), kSentinel), std::vector<float>(p.lse_size(), kSentinel),
           std::vector<float>(p.qkv.size(), kSentinel)};
  att.forward(r.out.data(), r.lse.data(), p.q(), p.k(), p.v(), p.d);
  att.backward(r.dqkv.data() + p.qo, r.dqkv.data() + p.ko, r.dqkv.data() + p.vo, dout.data(), r.out.data(),
               r.lse.data(), p.q(), p.k(), p.v(), p.d);
  return r;
}

AttnResult run_reference(const Problem& p, const AttnMask& mask, const std::vector<float>& dout) {
  AttnResult r{std::vector<float>(p.out_size()), std::vector<float>(p.lse_size()), std::vector<float>(p.qkv.size())};
  attention_reference_forward(r.out.data(), r.lse.data(), p.q(), p.k(), p.v(), p.d, mask);
  attention_reference_backward(r.dqkv.data() + p.qo, r.dqkv.data() + p.ko, r.dqkv.data() + p.vo, dout.data(),
                               p.q(), p.k(), p.v(), p.d, mask);
  return r;
}

// Sparse-vs-dense comparisons use 1e-5: both compute the same sums, but
// through sgemm calls of other shapes, so oneDNN may block K differently
// (seen: 2e-6 of the tensor's scale with ONEDNN_MAX_CPU_ISA=AVX2).
constexpr double kSameSumsTol = 1e-5;



std::vector<int32_t> list_of(const BlockSelection& sel, int64_t list) {
  return {sel.keys.begin() + sel.offsets[list], sel.keys.begin() + sel.offsets[list + 1]};
}


// The default config with the budget formula from the first token
// (dense_len = 0): at the short lengths these tests use, the default would
// attend every key and run the dense kernel.
DsaConfig formula_budget() {
  DsaConfig c;
  c.dense_len = 0;
  return c;
}

// A config whose budget is every key at any T (top_k huge).
DsaConfig covering(int64_t block, int64_t window) {
  DsaConfig c = formula_budget();
  c.block = block, c.window = window, c.top_k = int64_t{1} << 40;
  return c;
}

// Small-scale config with a real budget: key blocks of 16, 2 window blocks,
// and at T = 200: budget max(32 + 48, 43) = 80 keys -> 3 top blocks.
DsaConfig small_budget(bool summary = true) {
  DsaConfig c = formula_budget();
  c.block = 16, c.window = 32, c.top_k = 48, c.keep_short = 0.5, c.keep_long = 0.25,
  c.short_len = 32, c.long_len = 64, c.summary = summary;
  return c;
}

// small_budget with the coarse step: groups of 2 blocks, 2 kept (m = 2 at
// T = 200, where the last rows have 5 whole groups before their window).
DsaConfig coarse_budget(bool summary = true) {
  DsaConfig c = small_budget(summary);
  c.group = 2, c.group_keep = 2;
  return c;
}

// Mean over tokens [t0, t1) of row slice x (strided by ld), in double.
std::vector<double> mean_rows(const float* x, int64_t t0, int64_t t1, int64_t ld, int64_t D) {
  std::vector<double> m(static_cast<size_t>(D), 0.0);
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t e = 0; e < D; ++e) m[static_cast<size_t>(e)] += x[t * ld + e];
  for (double& e : m) e /= static_cast<double>(t1 - t0);
  return m;
}

// Mean over the tokens of block `blk` of row slice x (strided by ld), in double.
std::vector<double> mean_of_block(const float* x, int64_t T, int64_t ld, int64_t D, int64_t block, int64_t blk) {
  return mean_rows(x, blk * block, std::min(T, (blk + 1) * block), ld, D);
}

// The query of row t (strided by ld), in double.
std::vector<double> row_query(const float* q, int64_t t, int64_t ld, int64_t D) { return mean_rows(q, t, t + 1, ld, D); }

double dotd(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// ------------------------------------------------------------------ budget

TEST(DsaBudget, DefaultNumbers) {
  const DsaConfig c = formula_budget();
  // T <= short_len: 80%, but never below window + top_k = 192 nor above T.
  EXPECT_EQ(dsa_key_budget(c, 0), 0);
  EXPECT_EQ(dsa_key_budget(c, 1), 1);
  EXPECT_EQ(dsa_key_budget(c, 150), 150);
  EXPECT_EQ(dsa_key_budget(c, 200), 192);
  EXPECT_EQ(dsa_key_budget(c, 256), 205);  // ceil(0.8 * 256 = 204.8)
  // Log-linear fraction between 256 and 1024: with these defaults f(T)·T is
  // 204.8 throughout.
  EXPECT_EQ(dsa_key_budget(c, 512), 205);
  EXPECT_EQ(dsa_key_budget(c, 1024), 205);  // ceil(0.2 * 1024)
  // Beyond long_len: 204.8 * ln(T) / ln(1024).
  EXPECT_EQ(dsa_key_budget(c, 2048), 226);
  EXPECT_EQ(dsa_key_budget(c, 4096), 246);
  EXPECT_EQ(dsa_key_budget(c, 16384), 287);
  EXPECT_EQ(dsa_key_budget(c, 65536), 328);
  // O(log T) growth: 4x the tokens add only 2/14 of the budget.
  EXPECT_LT(dsa_key_budget(c, 65536), 1.15 * dsa_key_budget(c, 16384));
  EXPECT_NEAR(static_cast<double>(dsa_key_budget(c, 256)) / 256, 0.8, 0.005);
  EXPECT_NEAR(static_cast<double>(dsa_key_budget(c, 1024)) / 1024, 0.2, 0.001);
  // Top blocks = ceil((budget - 128) / 64), 0 when the window covers the budget.
  EXPECT_EQ(dsa_window_blocks(c), 2);
  EXPECT_EQ(dsa_top_blocks(c, 100), 0);
  EXPECT_EQ(dsa_top_blocks(c, 200), 1);
  EXPECT_EQ(dsa_top_blocks(c, 1024), 2);
  EXPECT_EQ(dsa_top_blocks(c, 4096), 2);
  EXPECT_EQ(dsa_top_blocks(c, 16384), 3);
  EXPECT_EQ(dsa_top_blocks(c, 65536), 4);
  // The default dense_len = 1536: every key up to 1536 tokens, the formula beyond.
  const DsaConfig d;
  EXPECT_EQ(d.dense_len, 1536);
  for (int64_t T : {1, 200, 256, 512, 1000, 1024, 1536}) {
    EXPECT_EQ(dsa_key_budget(d, T), T) << T;
    EXPECT_TRUE(dsa_attends_all(d, T)) << T;
  }
  for (int64_t T : {1537, 2048, 4096, 65536}) {
    EXPECT_EQ(dsa_key_budget(d, T), dsa_key_budget(c, T)) << T;
    EXPECT_FALSE(dsa_attends_all(d, T)) << T;
  }
  // Without dense_len the formula covers every candidate only while the
  // window plus the top blocks span the sequence (256 = 2 + 2 blocks).
  EXPECT_TRUE(dsa_attends_all(c, 256));
  EXPECT_FALSE(dsa_attends_all(c, 257));
  EXPECT_FALSE(dsa_attends_all(c, 512));
}

TEST(DsaBudget, InterpolatesLogLinearly) {
  DsaConfig c = formula_budget();
  c.block = 10, c.window = 1, c.top_k = 0, c.keep_short = 0.5, c.keep_long = 0.125,
  c.short_len = 100, c.long_len = 1600;
  EXPECT_EQ(dsa_key_budget(c, 100), 50);
  EXPECT_EQ(dsa_key_budget(c, 400), 100);   // u = 1/2: f = 0.5 * 0.25^0.5 = 0.25
  EXPECT_EQ(dsa_key_budget(c, 800), 142);   // u = 3/4: ceil(0.5 * 0.25^0.75 * 800 = 141.42)
  EXPECT_EQ(dsa_key_budget(c, 1600), 200);
  EXPECT_EQ(dsa_key_budget(c, 6400), 238);  // ceil(200 * ln 6400 / ln 1600 = 237.58)
  EXPECT_EQ(dsa_window_blocks(c), 1);
  EXPECT_EQ(dsa_top_blocks(c, 400), 10);    // ceil(99 / 10)
}

TEST(DsaBudget, RejectsBadConfigs) {
  const auto expect_msg = [](DsaConfig c, const std::string& needle) {
    try {
      check_dsa_config(c);
      ADD_FAILURE() << "accepted config, expected '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  DsaConfig c = formula_budget();
  c.block = 0;
  expect_msg(c, "[attention.dsa] block must be >= 1, got 0");
  c = {}, c.window = 0;
  expect_msg(c, "[attention.dsa] window must be >= 1, got 0");
  c = {}, c.top_k = -1;
  expect_msg(c, "[attention.dsa] top_k must be >= 0, got -1");
  c = {}, c.keep_long = 0.9;
  expect_msg(c, "need 0 < keep_long <= keep_short <= 1, got keep_short=0.8 keep_long=0.9");
  c = {}, c.long_len = 256;
  expect_msg(c, "need 2 <= short_len < long_len, got short_len=256 long_len=256");
  c = {}, c.group = 0;
  expect_msg(c, "[attention.dsa] group must be >= 1, got 0");
  c = {}, c.group_keep = -2;
  expect_msg(c, "[attention.dsa] group_keep must be >= 1, got -2");
  c = {}, c.dense_len = -1;
  expect_msg(c, "[attention.dsa] dense_len must be >= 0, got -1");
  c = {}, c.rank = "max";
  expect_msg(c, "[attention.dsa] rank must be \"mean\" or \"bound\", got 'max'");
  EXPECT_THROW(dsa_key_budget(formula_budget(), -1), Error);
  c = {}, c.block = 0;
  EXPECT_THROW(DsaAttention{c}, Error);
  EXPECT_THROW(make_attention("window", c), Error);
}

// ------------------------------------------------------------------ factory

TEST(AttentionDsaFactory, MakesAllThreeAndPassesTheConfig) {
  EXPECT_EQ(make_attention("dense")->name(), "dense");
  EXPECT_EQ(make_attention("window")->name(), "window");
  auto a = make_attention("dsa");
  EXPECT_EQ(a->name(), "dsa");
  ASSERT_NE(dynamic_cast<DsaAttention*>(a.get()), nullptr);
  EXPECT_EQ(dynamic_cast<DsaAttention*>(a.get())->config().block, 64);
  DsaConfig c = formula_budget();
  c.block = 32;
  auto b = make_attention("dsa", c);
  EXPECT_EQ(dynamic_cast<DsaAttention&>(*b).config().block, 32);
  try {
    make_attention("sparse", c);
    FAIL() << "expected sparta::Error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[attention] unknown implementation 'sparse' (available: dense, window, dsa)");
  }
}

// ------------------------------------------------------------------ window

TEST(AttentionWindow, MatchesSlidingWindowReference) {
  for (bool causal : {true, false})
    for (int64_t window : {16, 40, 64}) {  // 1, 3 and 4 blocks of 16
      const Problem p(2, 170, 2, 8, causal, true, 50 + window);
      const int64_t block = 16, W = (window + block - 1) / block;
      DsaConfig c = formula_budget();
      c.block = block, c.window = window;
      WindowAttention att(c);
      const AttnMask band = [&](int64_t, int64_t, int64_t i, int64_t j) {
        const int64_t gap = i / block - j / block;
        return causal ? gap >= 0 && gap < W : std::abs(gap) < W;
      };
      Rng rng(9);
      const std::vector<float> dout = test::random_normal(p.out_size(), rng);
      expect_results_close(run(att, p, dout), run_reference(p, band, dout), 1e-5, 1e-4,
                           cat("window causal=", causal, " window=", window));
    }
}

TEST(AttentionWindow, DecodeEqualsForwardAtEveryPrefix) {
  const int64_t H = 2, D = 8, T = 150;
  const Problem p(1, T, H, D, true, false, 61);
  DsaConfig c = formula_budget();
  c.block = 16, c.window = 40;
  WindowAttention att(c);
  std::vector<float> out(p.out_size()), lse(p.lse_size()), dec(H * D);
  att.forward(out.data(), lse.data(), p.q(), p.k(), p.v(), p.d);
  for (int64_t len = 1; len <= T; ++len) {
    att.decode(dec.data(), p.q() + (len - 1) * H * D, p.k(), p.v(), len, H, D);
    const std::vector<float> want(out.begin() + (len - 1) * H * D, out.begin() + len * H * D);
    expect_rel_close(dec, want, 1e-5, cat("window decode len=", len));
  }
}

TEST(AttentionWindow, WindowCoveringEverythingEqualsDense) {
  for (bool causal : {true, false}) {
    const Problem p(1, 200, 3, 16, causal, true, 71);
    DsaConfig c = formula_budget();
    c.block = 64, c.window = 256;
    WindowAttention att(c);
    auto dense = make_attention("dense");
    Rng rng(72);
    const std::vector<float> dout = test::random_normal(p.out_size(), rng);
    expect_results_close(run(att, p, dout), run(*dense, p, dout), kSameSumsTol, kSameSumsTol, cat("causal=", causal));
  }
}

TEST(AttentionWindow, ResultsIndependentOfThreadCount) {
  const int64_t H = 3, D = 16, T = 300;
  const Problem p(2, T, H, D, true, false, 81);
  Rng rng(82);
  const std::vector<float> dout = test::random_normal(p.out_size(), rng);
  DsaConfig c = formula_budget();
  c.block = 32, c.window = 80;
  AttnResult r[2];
  std::vector<float> dec[2];
  for (int run_i = 0; run_i < 2; ++run_i)
    test::with_threads(run_i + 1, [&] {
      WindowAttention att(c);
      r[run_i] = run(att, p, dout);
      dec[run_i].resize(H * D);
      att.decode(dec[run_i].data(), p.q() + (T - 1) * H * D, p.k(), p.v(), T, H, D);
    });
  test::expect_bitwise_equal("out", r[0].out, r[1].out);
  test::expect_bitwise_equal("lse", r[0].lse, r[1].lse);
  test::expect_bitwise_equal("dqkv", r[0].dqkv, r[1].dqkv);
  test::expect_bitwise_equal("decode", dec[0], dec[1]);
}

// ------------------------------------------------------------------ dsa

TEST(AttentionDsa, FullBudgetRunsTheDenseKernel) {
  auto dense = make_attention("dense");
  for (bool causal : {true, false})
    for (int64_t T : {256, 200, 70}) {
      const Problem p(2, T, 3, 16, causal, true, 300 + T);
      Rng rng(7);
      const std::vector<float> dout = test::random_normal(p.out_size(), rng);
      const AttnResult want = run(*dense, p, dout);
      // Covered by the window alone, and by the top-k budget alone.
      DsaConfig by_window = formula_budget();
      by_window.window = 256;
      // And the default, which attends every key up to dense_len = 1536 tokens.
      for (const DsaConfig& c : {by_window, covering(64, 64), covering(32, 32), DsaConfig{}}) {
        ASSERT_TRUE(dsa_attends_all(c, T));
        // DSA then runs the dense kernel itself: the same bits, not just close.
        DsaAttention att(c);
        const AttnResult got = run(att, p, dout);
        const std::string where = cat("causal=", causal, " T=", T, " block=", c.block, " window=", c.window);
        test::expect_bitwise_equal("out " + where, got.out, want.out);
        test::expect_bitwise_equal("lse " + where, got.lse, want.lse);
        test::expect_bitwise_equal("dqkv " + where, got.dqkv, want.dqkv);
      }
    }
}

TEST(AttentionDsa, HardSelectionMatchesMaskedReference) {
  // Without the summary, DSA is exact attention over the selected blocks.
  for (bool causal : {true, false})
    for (int64_t T : {200, 45}) {
      const Problem p(2, T, 2, 8, causal, true, 400 + T + causal);
      const DsaConfig c = small_budget(false);
      const BlockSelection sel = dsa_select(p.q(), p.k(), p.d, c);
      EXPECT_NO_THROW(ops::check_block_selection(p.d, sel, "test"));
      EXPECT_EQ(sel.qblock, 1);  // every row selects on its own
      if (T == 200) {  // the budget really is sparse: window (2 blocks) + 3 top blocks of 13
        ASSERT_EQ(dsa_top_blocks(c, T), 3);
        const int64_t last = sel.nqb - 1;
        EXPECT_EQ(sel.offsets[last + 1] - sel.offsets[last], 5) << "causal=" << causal;
      }
      DsaAttention att(c);
      Rng rng(8);
      const std::vector<float> dout = test::random_normal(p.out_size(), rng);
      const AttnResult got = run(att, p, dout);
      expect_results_close(got, run_reference(p, mask_of(p.d, sel), dout), 1e-5, 1e-4,
                           cat("causal=", causal, " T=", T));
      EXPECT_TRUE(all_finite(got.out) && all_finite(got.lse) && all_finite(got.dqkv));
    }
}

TEST(AttentionDsa, PlanFollowsTheScoringAndSummaryRules) {
  // Re-derive the rules independently in double: the window is always
  // selected, nothing causal-future is; with the coarse step active (more
  // whole groups than m = max(group_keep, ceil(top / group))) only the m
  // best-scoring whole groups stay candidates; exactly min(top, candidates
  // left) are selected and each scores at least as high as every unselected
  // one; the summary is the log-sum-exp and softmax-weighted mean value over
  // the unselected blocks and the dropped groups. rank = "bound" ranks
  // blocks and groups by Σ_d max(q_d·max k_d, q_d·min k_d)/sqrt(D) over
  // their keys instead; the summary keeps the mean scores.
  // T = 4000 (groups of 2 only) gives rows more than 16·(m + 1) whole
  // groups, where the coarse step skips whole vectors of group values that
  // cannot enter the top m.
  for (const char* rank : {"mean", "bound"})
  for (int64_t group : {1, 2, 3})
    for (bool causal : {true, false})
      for (int64_t T : {200, 203, 4000}) {
        if (T == 4000 && group != 2) continue;
        const Problem p(1, T, 2, 8, causal, false, 500 + causal + T + 10 * group);
        DsaConfig c = small_budget();
        c.group = group, c.group_keep = 2, c.rank = rank;
        const bool bound = c.rank == "bound";
        const DsaPlan plan = dsa_plan(p.q(), p.k(), p.v(), p.d, c);
        const BlockSelection sel = dsa_select(p.q(), p.k(), p.d, c);
        const int64_t D = p.d.D, HD = p.d.H * D, W = dsa_window_blocks(c), top = dsa_top_blocks(c, T);
        const int64_t nkb = (T + c.block - 1) / c.block, G = group, ng = G >= 2 ? nkb / G : 0;
        const int64_t m = std::max<int64_t>(c.group_keep, (top + G - 1) / G);
        if (T == 4000) {
          ASSERT_GT((ng - W) / 16, m) << "the long case must reach the vector skip of the group ranking";
        }
        ASSERT_EQ(sel.nqb, T);
        ASSERT_EQ(plan.far.nqb, T);
        ASSERT_EQ(plan.summary_logit.size(), static_cast<size_t>(p.d.H * T));
        int64_t summaries = 0, coarse_rows = 0, close_calls = 0;
        for (int64_t h = 0; h < p.d.H; ++h)
          for (int64_t j = 0; j < T; ++j) {  // every query row
            const std::string where =
                cat("rank=", rank, " group=", G, " causal=", causal, " T=", T, " h=", h, " row=", j);
            const std::vector<int32_t> got = list_of(sel, h * T + j);
            const std::set<int32_t> chosen(got.begin(), got.end());
            const auto qt = row_query(p.q() + h * D, j, HD, D);
            const int64_t qkb = j / c.block;
            const auto is_candidate = [&](int64_t kb) { return causal ? qkb - kb >= W : std::abs(qkb - kb) >= W; };
            // The far part the kernel runs is the selection minus the window.
            std::vector<int32_t> far_want;
            for (int32_t kb : got)
              if (is_candidate(kb)) far_want.push_back(kb);
            EXPECT_EQ(list_of(plan.far, h * T + j), far_want) << where;
            // Coarse step, in double.
            int64_t ncand = 0;
            for (int64_t kb = 0; kb < nkb; ++kb) ncand += is_candidate(kb);
            // Ranking by bound: the largest q·k over the box of keys [t0, t1).
            const auto box_bound = [&](int64_t t0, int64_t t1) {
              double b = 0.0;
              for (int64_t e = 0; e < D; ++e) {
                double mx = -1e300, mn = 1e300;
                for (int64_t t = t0; t < t1; ++t) {
                  mx = std::max<double>(mx, p.k()[t * HD + h * D + e]);
                  mn = std::min<double>(mn, p.k()[t * HD + h * D + e]);
                }
                b += std::max(qt[e] * mx, qt[e] * mn);
              }
              return b / std::sqrt(double(D));
            };
            std::vector<std::pair<double, int64_t>> whole;  // (ranking score, group)
            std::vector<double> group_score(static_cast<size_t>(ng));  // the summary's (mean) score
            for (int64_t g = 0; g < ng; ++g) {
              bool all = true;
              for (int64_t kb = g * G; kb < (g + 1) * G; ++kb) all = all && is_candidate(kb);
              if (!all) continue;
              const int64_t t0 = g * G * c.block, t1 = std::min(T, (g + 1) * G * c.block);
              group_score[g] = dotd(qt, mean_rows(p.k() + h * D, t0, t1, HD, D)) / std::sqrt(double(D)) +
                               std::log(static_cast<double>(t1 - t0));
              whole.push_back({bound ? box_bound(t0, t1) : group_score[g], g});
            }
            std::vector<char> dropped(static_cast<size_t>(ng), 0);
            std::vector<std::pair<double, int64_t>> unselected;  // summary entries: (score, block or nkb + group)
            if (top < ncand && static_cast<int64_t>(whole.size()) > m) {
              ++coarse_rows;
              std::sort(whole.begin(), whole.end(), [](auto& a, auto& b) { return a.first > b.first; });
              if (whole[m - 1].first - whole[m].first < 1e-4) {  // float32 may rank these differently
                ++close_calls;
                continue;
              }
              for (size_t i = m; i < whole.size(); ++i) {
                dropped[whole[i].second] = 1;
                unselected.push_back({group_score[whole[i].second], nkb + whole[i].second});
              }
            }
            std::vector<double> picked, rejected;
            for (int64_t kb = 0; kb < nkb; ++kb) {
              const int64_t gap = qkb - kb;
              const bool in_window = causal ? gap >= 0 && gap < W : std::abs(gap) < W;
              if (in_window) {
                EXPECT_TRUE(chosen.count(static_cast<int32_t>(kb))) << where << " window block " << kb;
              }
              if (!in_window && !is_candidate(kb)) {
                EXPECT_FALSE(chosen.count(static_cast<int32_t>(kb))) << where;
              }
              if (!is_candidate(kb)) continue;
              if (kb / G < ng && dropped[kb / G]) {
                EXPECT_FALSE(chosen.count(static_cast<int32_t>(kb))) << where << " block of a dropped group";
                continue;
              }
              const int64_t len = std::min(T, (kb + 1) * c.block) - kb * c.block;
              const double s = dotd(qt, mean_of_block(p.k() + h * D, T, HD, D, c.block, kb)) / std::sqrt(double(D)) +
                               std::log(static_cast<double>(len));
              const double r = bound ? box_bound(kb * c.block, kb * c.block + len) : s;
              if (chosen.count(static_cast<int32_t>(kb))) {
                picked.push_back(r);
              } else {
                rejected.push_back(r);
                unselected.push_back({s, kb});
              }
            }
            EXPECT_EQ(static_cast<int64_t>(picked.size()),
                      std::min<int64_t>(top, static_cast<int64_t>(picked.size() + rejected.size())))
                << where;
            if (!picked.empty() && !rejected.empty()) {
              EXPECT_GE(*std::min_element(picked.begin(), picked.end()) + 1e-5,
                        *std::max_element(rejected.begin(), rejected.end()))
                  << where;
            }
            const float L = plan.summary_logit[h * T + j];
            const float* U = plan.summary_value.data() + (h * T + j) * D;
            if (unselected.empty()) {
              EXPECT_EQ(L, -std::numeric_limits<float>::infinity()) << where;
              for (int64_t e = 0; e < D; ++e) EXPECT_EQ(U[e], 0.0f) << where;
              continue;
            }
            ++summaries;
            double mx = -1e300, l = 0.0;
            for (const auto& u : unselected) mx = std::max(mx, u.first);
            std::vector<double> want(static_cast<size_t>(D), 0.0);
            for (const auto& [score, id] : unselected) {
              const double w = std::exp(score - mx);
              l += w;
              const auto vm = id < nkb ? mean_of_block(p.v() + h * D, T, HD, D, c.block, id)
                                       : mean_rows(p.v() + h * D, (id - nkb) * G * c.block,
                                                   std::min(T, (id - nkb + 1) * G * c.block), HD, D);
              for (int64_t e = 0; e < D; ++e) want[e] += w * vm[e];
            }
            EXPECT_NEAR(L, mx + std::log(l), 1e-5 * (1 + std::fabs(mx))) << where;
            for (int64_t e = 0; e < D; ++e) EXPECT_NEAR(U[e], want[e] / l, 1e-5) << where << " e=" << e;
          }
        EXPECT_GT(summaries, 0) << "the budget should leave far blocks to summarise";
        if (G == 1) {
          EXPECT_EQ(coarse_rows, 0);
        } else {
          EXPECT_GT(coarse_rows, T / 5) << "group=" << G << ": the coarse step should act on many rows";
        }
        EXPECT_LE(close_calls, coarse_rows / 50 + 1);
      }
}

TEST(AttentionDsa, PlantedKeyBlockIsSelected) {
  // 16 key blocks of 64; in head 1 the queries of the last key block get +3
  // along e_0 and the keys of block 2, far before the window, +4 along e_0;
  // the rest is N(0, 0.3²) noise. Default config at T = 1024: 2 window
  // blocks + 2 top blocks per row.
  for (bool causal : {true, false}) {
    const int64_t T = 1024, H = 2, D = 16;
    Problem p(1, T, H, D, causal, true, 600 + causal, 0.3);
    const int64_t hd = H * D;
    for (int64_t t = 15 * 64; t < T; ++t) p.q()[t * p.d.ld + hd - D] += 3.0f;
    for (int64_t t = 2 * 64; t < 3 * 64; ++t) p.k()[t * p.d.ld + hd - D] += 4.0f;
    const BlockSelection sel = dsa_select(p.q(), p.k(), p.d, formula_budget());
    ASSERT_EQ(sel.nqb, T);
    for (int64_t j = 15 * 64; j < T; ++j) {  // the rows of key block 15
      const std::vector<int32_t> h1 = list_of(sel, 1 * T + j);
      EXPECT_NE(std::find(h1.begin(), h1.end(), 2), h1.end()) << "causal=" << causal << " row=" << j;
      EXPECT_EQ(h1.size(), 4u);
      EXPECT_EQ(list_of(sel, j).size(), 4u);  // head 0 (no plant): same count
    }
  }
}

TEST(AttentionDsa, CoarseStepKeepsTheGroupOfAPlantedKeyBlock) {
  // Default config at T = 4096: 64 key blocks, groups of 8, the last rows
  // have 7 whole groups of which 4 are kept, and 2 top blocks. Keys of block
  // 5 (group 0) get +4 along e_0 and the queries of the last key block +3:
  // the coarse step must keep group 0 and the fine step pick block 5 —
  // in head 1 only; head 0 has no plant.
  const int64_t T = 4096, H = 2, D = 16;
  Problem p(1, T, H, D, true, true, 1180, 0.3);
  const int64_t hd = H * D;
  for (int64_t t = 63 * 64; t < T; ++t) p.q()[t * p.d.ld + hd - D] += 3.0f;
  for (int64_t t = 5 * 64; t < 6 * 64; ++t) p.k()[t * p.d.ld + hd - D] += 4.0f;
  const DsaConfig c = formula_budget();
  ASSERT_EQ(c.group, 8);
  ASSERT_EQ(dsa_top_blocks(c, T), 2);
  const DsaPlan plan = dsa_plan(p.q(), p.k(), p.v(), p.d, c);
  for (int64_t j = 63 * 64; j < T; ++j) {
    const std::vector<int32_t> h1 = list_of(plan.far, 1 * T + j);
    EXPECT_NE(std::find(h1.begin(), h1.end(), 5), h1.end()) << "row " << j;
    EXPECT_EQ(h1.size(), 2u);
  }
}

TEST(AttentionDsa, BoundRankingFindsASingleMatchingTokenThatTheMeanDilutes) {
  // Passkey-like: one token of key block 5 (group 0) matches the queries of
  // the last key block strongly (+8 along e_0 against +3), every other
  // number is N(0, 1) noise. The block mean carries 1/64 of the match, so mean
  // ranking rarely picks block 5 (nor its group, 1/512 of it); the bound
  // over the block's keys is at least the matching token's own logit, so
  // bound ranking keeps group 0 and picks block 5 on every row — through
  // the coarse step at T = 4096 (default config otherwise), in forward and
  // in decode.
  const int64_t T = 4096, H = 2, D = 16;
  Problem p(1, T, H, D, true, false, 1190, 1.0);  // (T, H, D) rows, as a KV cache holds them
  const int64_t hd = H * D, needle = 5 * 64 + 37;
  for (int64_t t = 63 * 64; t < T; ++t) p.q()[t * p.d.ld + hd - D] += 3.0f;
  p.k()[needle * p.d.ld + hd - D] += 8.0f;
  DsaConfig mean_cfg = formula_budget(), bound_cfg = formula_budget();
  mean_cfg.rank = "mean";
  bound_cfg.rank = "bound";
  const DsaPlan by_mean = dsa_plan(p.q(), p.k(), p.v(), p.d, mean_cfg);
  const DsaPlan by_bound = dsa_plan(p.q(), p.k(), p.v(), p.d, bound_cfg);
  int64_t mean_hits = 0;
  for (int64_t j = 63 * 64; j < T; ++j) {
    const std::vector<int32_t> b = list_of(by_bound.far, 1 * T + j), m = list_of(by_mean.far, 1 * T + j);
    EXPECT_NE(std::find(b.begin(), b.end(), 5), b.end()) << "bound, row " << j;
    EXPECT_EQ(b.size(), 2u);
    mean_hits += std::find(m.begin(), m.end(), 5) != m.end();
  }
  EXPECT_LT(mean_hits, 32) << "the mean should dilute a single token";
  DsaAttention att(bound_cfg);
  std::vector<float> out(p.out_size()), lse(p.lse_size()), dec(hd);
  att.forward(out.data(), lse.data(), p.q(), p.k(), p.v(), p.d);
  att.decode(dec.data(), p.q() + (T - 1) * H * D, p.k(), p.v(), T, H, D);
  expect_rel_close(dec, std::vector<float>(out.end() - hd, out.end()), 1e-5, "bound decode vs forward");
}

TEST(AttentionDsa, TiesPickSmallerBlockIds) {
  // All-zero queries and keys: every score ties, so the top blocks are the
  // earliest candidates (3 top blocks, 2 window blocks of 16).
  Problem p(1, 200, 1, 8, true, true, 700);
  for (int64_t t = 0; t < 200; ++t)
    for (int64_t e = 0; e < 8; ++e) p.q()[t * p.d.ld + e] = 0.0f, p.k()[t * p.d.ld + e] = 0.0f;
  const BlockSelection sel = dsa_select(p.q(), p.k(), p.d, small_budget());
  EXPECT_EQ(list_of(sel, 199), (std::vector<int32_t>{0, 1, 2, 11, 12}));
  EXPECT_EQ(list_of(sel, 83), (std::vector<int32_t>{0, 1, 2, 4, 5}));
  EXPECT_EQ(list_of(sel, 51), (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(list_of(sel, 0), (std::vector<int32_t>{0}));
}

TEST(AttentionDsa, NonFiniteScoresRankLast) {
  // A NaN in one key block's summary must neither win nor break the ranking,
  // nor reach the summary key.
  Problem p(1, 200, 1, 8, true, true, 710);
  p.k()[3 * 16 * p.d.ld] = std::numeric_limits<float>::quiet_NaN();  // key block 3
  const DsaPlan plan = dsa_plan(p.q(), p.k(), p.v(), p.d, small_budget());
  const std::vector<int32_t> last = list_of(plan.far, 199);  // far blocks of the last row
  EXPECT_EQ(last.size(), 3u);
  EXPECT_EQ(std::find(last.begin(), last.end(), 3), last.end());
  EXPECT_TRUE(std::isfinite(plan.summary_logit[199]));
  EXPECT_TRUE(all_finite(plan.summary_value));
}

TEST(AttentionDsa, GradientsMatchFiniteDifferences) {
  // Tiny problem with a real budget: key blocks of 2, one window block, one
  // top block, so most earlier blocks are summarised; the gradient through
  // the summary (scores -> each row's query and the mean keys; mean values)
  // is checked along with the selected tokens'.
  // group = 2: the coarse step acts on the later rows (up to 3 whole groups
  // of 2 blocks, 1 kept), so gradients also flow through group summaries.
  // rank = "bound" changes only which blocks are chosen (backward must
  // re-derive the same choice for the summary's gradient).
  for (const char* rank : {"mean", "bound"})
  for (int64_t group : {1, 2})
  for (bool causal : {true, false})
    for (bool summary : {true, false})
      for (int64_t seed : {1, 2}) {
        Problem p(1, 13, 2, 4, causal, true, 800 + causal + 2 * summary + 4 * seed + 100 * (group - 1), 1.0);
        DsaConfig c = formula_budget();
        c.block = 2, c.window = 2, c.top_k = 1, c.keep_short = 0.2, c.keep_long = 0.1,
        c.short_len = 2, c.long_len = 4, c.summary = summary;  // budget at T = 13: window + top_k = 3
        c.group = group, c.group_keep = 1, c.rank = rank;
        ASSERT_EQ(dsa_top_blocks(c, 13), 1);
        const std::string what = cat("rank=", rank, " group=", group, " causal=", causal, " summary=", summary, " seed=", seed);
        const BlockSelection sel = dsa_select(p.q(), p.k(), p.d, c);
        DsaAttention att(c);
        Rng rng(81);
        const std::vector<float> R = test::random_normal(p.out_size(), rng);
        const AttnResult r = run(att, p, R);
        const DsaPlan plan0 = dsa_plan(p.q(), p.k(), p.v(), p.d, c);
        bool selection_moved = false;
        const auto objective = [&] {
          if (dsa_select(p.q(), p.k(), p.d, c).keys != sel.keys) selection_moved = true;
          // A kept group that changes moves the summary's make-up: compare
          // which rows have a summary and roughly where its logit is.
          const DsaPlan now = dsa_plan(p.q(), p.k(), p.v(), p.d, c);
          for (size_t i = 0; i < now.summary_logit.size(); ++i)
            if (std::isinf(now.summary_logit[i]) != std::isinf(plan0.summary_logit[i]) ||
                std::fabs(now.summary_logit[i] - plan0.summary_logit[i]) > 0.1f)
              selection_moved = true;
          std::vector<float> out(p.out_size()), lse(p.lse_size());
          att.forward(out.data(), lse.data(), p.q(), p.k(), p.v(), p.d);
          return test::dot(out, R);
        };
        test::with_threads(1, [&] { test::expect_grad_matches_fd(what, p.qkv, r.dqkv, objective); });
        EXPECT_FALSE(selection_moved) << what << ": perturbation changed the selection; pick another seed";
      }
}

TEST(AttentionDsa, ScorerLossGradientMatchesFiniteDifferencesOfItsKl) {
  // The scorer loss adds to backward the gradient of
  //   weight/N · Σ_j KL(m̂_j ‖ softmax(c_selected-far(q, k), L_j(q, k)))
  // with the attention masses m̂ held fixed. Re-derive that objective in
  // double (scores, summary logit, masses from the unperturbed forward) and
  // compare its finite differences with (backward with the loss) - (without).
  for (bool causal : {true, false}) {
    Problem p(1, 24, 2, 4, causal, true, 870 + causal, 1.0);
    DsaConfig c = formula_budget();
    c.block = 4, c.window = 4, c.top_k = 2, c.keep_short = 0.2, c.keep_long = 0.1,
    c.short_len = 4, c.long_len = 8;
    ASSERT_EQ(dsa_top_blocks(c, 24), 1);
    DsaConfig with = c;
    with.scorer_loss = 2.5;
    const std::vector<float> zero(p.out_size(), 0.0f);  // no main-loss gradient: only the scorer loss remains
    DsaAttention att_with(with);
    const AttnResult r = run(att_with, p, zero);
    const DsaPlan plan = dsa_plan(p.q(), p.k(), p.v(), p.d, c);
    const int64_t T = 24, H = 2, D = 4, ld = p.d.ld, W = dsa_window_blocks(c);
    const double scale = 1.0 / std::sqrt(double(D));
    // Masses from the unperturbed forward (lse), in double.
    std::vector<float> out(p.out_size()), lse(p.lse_size());
    DsaAttention(c).forward(out.data(), lse.data(), p.q(), p.k(), p.v(), p.d);
    struct Entry {
      int64_t h, j;
      std::vector<int64_t> far_sel, unsel;
      std::vector<double> target;  // normalised masses: far selected..., summary
    };
    std::vector<Entry> entries;
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < T; ++j) {  // every query row
        Entry e{h, j, {}, {}, {}};
        const std::vector<int32_t> sel = list_of(plan.far, h * T + j);
        const int64_t qkb = j / 4;
        for (int64_t kb = 0; kb < 6; ++kb) {
          const int64_t gap = qkb - kb;
          const bool in_window = causal ? gap >= 0 && gap < W : std::abs(gap) < W;
          const bool candidate = causal ? gap >= W : !in_window;
          if (!candidate) continue;
          (std::count(sel.begin(), sel.end(), kb) ? e.far_sel : e.unsel).push_back(kb);
        }
        if (e.far_sel.empty() && e.unsel.empty()) continue;
        double total = 0.0;
        const auto row_mass = [&](int64_t kb) {
          double m = 0.0;
          for (int64_t i = kb * 4; i < kb * 4 + 4; ++i) {
            double dot = 0.0;
            for (int64_t x = 0; x < D; ++x) dot += double(p.q()[j * ld + h * D + x]) * p.k()[i * ld + h * D + x];
            m += std::exp(dot * scale - lse[h * T + j]);
          }
          return m;
        };
        for (int64_t kb : e.far_sel) e.target.push_back(row_mass(kb)), total += e.target.back();
        if (!e.unsel.empty()) {  // the summary's mass: exp(L - lse)
          const double sum_mass = std::exp(double(plan.summary_logit[h * T + j]) - lse[h * T + j]);
          e.target.push_back(sum_mass), total += sum_mass;
        }
        for (double& m : e.target) m /= total;
        entries.push_back(e);
      }
    const double weight = 2.5 / double(H * T);
    const auto objective = [&] {
      double f = 0.0;
      for (const Entry& e : entries) {
        const auto qt = row_query(p.q() + e.h * D, e.j, ld, D);
        const auto score = [&](int64_t kb) {
          return dotd(qt, mean_of_block(p.k() + e.h * D, T, ld, D, 4, kb)) * scale + std::log(4.0);
        };
        std::vector<double> logits;
        for (int64_t kb : e.far_sel) logits.push_back(score(kb));
        if (!e.unsel.empty()) {
          double m = -1e300, z = 0.0;
          for (int64_t kb : e.unsel) m = std::max(m, score(kb));
          for (int64_t kb : e.unsel) z += std::exp(score(kb) - m);
          logits.push_back(m + std::log(z));
        }
        double m = -1e300, z = 0.0;
        for (double l : logits) m = std::max(m, l);
        for (double l : logits) z += std::exp(l - m);
        for (size_t i = 0; i < logits.size(); ++i)
          if (e.target[i] > 0) f += weight * e.target[i] * (std::log(e.target[i]) - (logits[i] - m - std::log(z)));
      }
      return f;
    };
    std::vector<float> g_aux = r.dqkv;  // dout = 0: backward is the scorer loss alone
    for (int64_t t = 0; t < T; ++t)
      for (int64_t x = 0; x < H * D; ++x) EXPECT_EQ(g_aux[t * ld + 2 * H * D + x], 0.0f) << "dv t=" << t;
    test::with_threads(1, [&] { test::expect_grad_matches_fd(cat("scorer loss causal=", causal), p.qkv, g_aux, objective); });
    bool any = false;
    for (float g : g_aux) any = any || g != 0.0f;
    EXPECT_TRUE(any) << "the scorer loss produced no gradient";
  }
}

TEST(AttentionDsa, ScorerLossGradientCarriesTheLossScale) {
  // fp16 loss scaling multiplies dout by S and, through AttnDims::aux_grad_scale,
  // the scorer loss's own gradient too: backward with (S·dout, S) is S times
  // backward with (dout, 1), so unscaling by 1/S gives the unscaled run.
  for (bool causal : {true, false}) {
    Problem p(2, 200, 2, 8, causal, true, 890 + causal);
    DsaConfig c = coarse_budget();
    c.scorer_loss = 100.0;  // weight / 800 rows: a visible share of the gradient
    DsaAttention att(c);
    Rng rng(91);
    const std::vector<float> R = test::random_normal(p.out_size(), rng);
    const AttnResult base = run(att, p, R);
    // The scorer loss is a visible part of the gradient (so a backward that
    // ignored aux_grad_scale would miss the check below by far).
    DsaConfig off = c;
    off.scorer_loss = 0.0;
    DsaAttention att_off(off);
    const AttnResult plain = run(att_off, p, R);
    double scale = 0.0, diff = 0.0;
    for (size_t i = 0; i < base.dqkv.size(); ++i) {
      scale = std::max(scale, std::fabs(double(base.dqkv[i])));
      diff = std::max(diff, std::fabs(double(base.dqkv[i]) - plain.dqkv[i]));
    }
    EXPECT_GT(diff, 1e-3 * scale) << "causal=" << causal << ": the scorer loss barely moves the gradient";
    for (double S : {65536.0, 3000.0}) {
      const std::string what = cat("causal=", causal, " S=", S);
      std::vector<float> SR(R.size());
      for (size_t i = 0; i < R.size(); ++i) SR[i] = static_cast<float>(S * R[i]);
      Problem ps = p;
      ps.d.aux_grad_scale = S;
      const AttnResult scaled = run(att, ps, SR);
      EXPECT_EQ(scaled.out, base.out) << what;  // forward ignores the scale
      EXPECT_EQ(scaled.lse, base.lse) << what;
      std::vector<float> want(base.dqkv.size());
      for (size_t i = 0; i < want.size(); ++i) want[i] = static_cast<float>(S * base.dqkv[i]);
      expect_rel_close(scaled.dqkv, want, 1e-5, what + " dqkv");
    }
    // S = 1 spelled out is the default: bit for bit.
    Problem p1 = p;
    p1.d.aux_grad_scale = 1.0;
    EXPECT_EQ(run(att, p1, R).dqkv, base.dqkv) << "causal=" << causal;
  }
}

TEST(AttentionDsa, ExplorationPerturbsTheRankingOnlyInTraining) {
  Problem p(2, 200, 2, 8, true, true, 880);
  DsaConfig c = small_budget();
  c.explore = 3.0;
  const BlockSelection plain = dsa_select(p.q(), p.k(), p.d, c);  // selection_seed 0: no noise
  EXPECT_EQ(plain.keys, dsa_select(p.q(), p.k(), p.d, small_budget()).keys);
  AttnDims train = p.d;
  train.selection_seed = 12345;
  const DsaPlan a = dsa_plan(p.q(), p.k(), p.v(), train, c), b = dsa_plan(p.q(), p.k(), p.v(), train, c);
  const BlockSelection plain_far = dsa_plan(p.q(), p.k(), p.v(), p.d, c).far;
  EXPECT_EQ(a.far.keys, b.far.keys);  // a pure function of the seed
  EXPECT_NE(a.far.keys, plain_far.keys);  // ... that does change the choice
  EXPECT_EQ(a.far.offsets, plain_far.offsets);  // never the number of blocks
  AttnDims other = train;
  other.selection_seed = 777;
  EXPECT_NE(dsa_plan(p.q(), p.k(), p.v(), other, c).far.keys, a.far.keys);
  // Forward and backward of one step agree (backward recomputes the same
  // noisy choice): gradients match finite differences with the seed set.
  Problem small(1, 13, 2, 4, true, true, 881, 1.0);
  DsaConfig t = formula_budget();
  t.block = 2, t.window = 2, t.top_k = 1, t.keep_short = 0.2, t.keep_long = 0.1,
  t.short_len = 2, t.long_len = 4, t.explore = 2.0;
  small.d.selection_seed = 99;
  DsaAttention att(t);
  Rng rng(882);
  const std::vector<float> R = test::random_normal(small.out_size(), rng);
  const AttnResult r = run(att, small, R);
  const auto objective = [&] {
    std::vector<float> out(small.out_size()), lse(small.lse_size());
    att.forward(out.data(), lse.data(), small.q(), small.k(), small.v(), small.d);
    return test::dot(out, R);
  };
  test::with_threads(1, [&] { test::expect_grad_matches_fd("explore", small.qkv, r.dqkv, objective); });
}

TEST(AttentionDsa, CoarseStepOverGroupConstantKeysEqualsTheFlatSelection) {
  // With every key and value constant inside each group of 2 blocks, a
  // group's score is its blocks' score + ln 2 (the log-sum-exp of its two
  // block entries) and its mean value theirs: the groups kept contain the
  // best blocks, and a dropped group enters the summary exactly as its two
  // blocks would. So the coarse step must reproduce the flat computation
  // (group = 1), forward and gradients, up to rounding.
  for (bool causal : {true, false}) {
    const int64_t T = 192, H = 2, D = 8;  // 12 blocks of 16, 6 groups
    Problem p(1, T, H, D, causal, true, 1160 + causal);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < H * D; ++e) {
        const int64_t t0 = (t / 32) * 32;  // first token of t's group
        p.k()[t * p.d.ld + e] = p.k()[t0 * p.d.ld + e];
        p.qkv[p.vo + t * p.d.ld + e] = p.qkv[p.vo + t0 * p.d.ld + e];
      }
    Rng rng(1161);
    const std::vector<float> dout = test::random_normal(p.out_size(), rng);
    DsaConfig flat = coarse_budget();
    flat.group = 1;
    DsaAttention coarse_att(coarse_budget()), flat_att(flat);
    expect_results_close(run(coarse_att, p, dout), run(flat_att, p, dout), 1e-5, 1e-4, cat("causal=", causal));
    // And the coarse step did act: its plan drops groups (fewer entries in
    // the summary is invisible in the output, so check the selection rule's
    // precondition instead: the last row has more whole groups than m = 2).
    EXPECT_GT((T / 16 - dsa_window_blocks(flat)) / 2, 2);
  }
}

TEST(AttentionDsa, SummaryChangesTheResultOnlyWhenBlocksAreLeftOut) {
  const Problem p(1, 200, 2, 8, true, true, 850);
  Rng rng(851);
  const std::vector<float> dout = test::random_normal(p.out_size(), rng);
  DsaAttention with(small_budget(true)), without(small_budget(false));
  const AttnResult a = run(with, p, dout), b = run(without, p, dout);
  // Rows whose candidates all fit the budget (the first 5 key blocks) are
  // identical; later ones see the summary.
  const int64_t HD = 2 * 8;
  for (int64_t t = 0; t < 5 * 16; ++t)
    for (int64_t e = 0; e < HD; ++e) ASSERT_EQ(a.out[t * HD + e], b.out[t * HD + e]) << "t=" << t;
  double diff = 0.0;
  for (int64_t t = 100; t < 200; ++t)
    for (int64_t e = 0; e < HD; ++e) diff = std::max(diff, double(std::fabs(a.out[t * HD + e] - b.out[t * HD + e])));
  EXPECT_GT(diff, 1e-3);
}

TEST(AttentionDsa, ShortSequences) {
  // T < block and T = 1: a single block, equal to dense; no NaN.
  auto dense = make_attention("dense");
  for (bool causal : {true, false})
    for (int64_t T : {1, 2, 40}) {
      const Problem p(2, T, 2, 8, causal, true, 900 + T);
      Rng rng(91);
      const std::vector<float> dout = test::random_normal(p.out_size(), rng);
      DsaAttention att{formula_budget()};
      const AttnResult got = run(att, p, dout);
      expect_results_close(got, run(*dense, p, dout), kSameSumsTol, kSameSumsTol, cat("T=", T, " causal=", causal));
      EXPECT_TRUE(all_finite(got.out) && all_finite(got.lse) && all_finite(got.dqkv));
    }
  // B = 0 / T = 0: nothing to do, nothing thrown.
  Problem p(1, 0, 2, 8, true, true, 1);
  DsaAttention att{formula_budget()};
  EXPECT_NO_THROW(att.forward(nullptr, nullptr, p.q(), p.k(), p.v(), p.d));
}

TEST(AttentionDsa, DecodeEqualsForwardWhenBudgetCoversAll) {
  const int64_t H = 2, D = 8, T = 150;
  const Problem p(1, T, H, D, true, false, 1001);
  DsaAttention att(covering(16, 16));
  std::vector<float> out(p.out_size()), lse(p.lse_size()), dec(H * D);
  att.forward(out.data(), lse.data(), p.q(), p.k(), p.v(), p.d);
  for (int64_t len = 1; len <= T; ++len) {
    att.decode(dec.data(), p.q() + (len - 1) * H * D, p.k(), p.v(), len, H, D);
    const std::vector<float> want(out.begin() + (len - 1) * H * D, out.begin() + len * H * D);
    expect_rel_close(dec, want, 1e-5, cat("dsa decode len=", len));
  }
}

TEST(AttentionDsa, DecodeRunsTheDenseKernelWhileTheBudgetCoversAll) {
  // dense_len 1024: every cache length up to it decodes exactly as dense
  // attention does, bit for bit; past it the selection takes over and the
  // memo, untouched until then, catches up.
  const int64_t H = 2, D = 8, T = 1100, HD = H * D;
  const Problem p(1, T, H, D, true, false, 1003);
  DsaConfig c;
  c.block = 16, c.window = 16, c.top_k = 16, c.dense_len = 1024;
  DsaAttention att(c);
  const auto dense = make_attention("dense");
  std::unique_ptr<DecodeMemo> memo = att.make_decode_memo();
  std::vector<float> got(HD), want(HD), without(HD);
  for (int64_t len : {1, 2, 17, 500, 1023, 1024}) {
    att.decode(got.data(), p.q() + (len - 1) * HD, p.k(), p.v(), len, H, D, memo.get());
    dense->decode(want.data(), p.q() + (len - 1) * HD, p.k(), p.v(), len, H, D);
    test::expect_bitwise_equal(cat("len=", len), got, want);
  }
  for (int64_t len : {1025, 1100}) {
    ASSERT_FALSE(dsa_attends_all(c, len));
    att.decode(got.data(), p.q() + (len - 1) * HD, p.k(), p.v(), len, H, D, memo.get());
    att.decode(without.data(), p.q() + (len - 1) * HD, p.k(), p.v(), len, H, D);
    test::expect_bitwise_equal(cat("memo len=", len), got, without);
    dense->decode(want.data(), p.q() + (len - 1) * HD, p.k(), p.v(), len, H, D);
    EXPECT_NE(got, want) << "len " << len << " should select, not attend every key";
  }
}

TEST(AttentionDsa, DecodeEqualsLastRowOfForwardOnEveryPrefix) {
  // What generation with a KV cache relies on: decoding position len-1
  // gives what a whole-sequence forward over the first len tokens gives for
  // its last row, with a real budget and the summary (and without).
  const int64_t H = 2, D = 8, T = 200, HD = H * D;
  const Problem p(1, T, H, D, true, false, 1101);
  for (const char* rank : {"mean", "bound"})
  for (bool coarse : {false, true})
  for (bool summary : {true, false}) {
    if (rank == std::string("bound") && !coarse) continue;  // the coarse config exercises both ranking steps
    DsaConfig c = coarse ? coarse_budget(summary) : small_budget(summary);
    c.rank = rank;
    DsaAttention att(c);
    std::vector<float> out(p.out_size()), lse(p.lse_size()), dec(HD);
    for (int64_t len = 1; len <= T; len += (len < 40 || coarse ? 1 : 7)) {
      AttnDims prefix = p.d;
      prefix.T = len;  // (T, H, D) rows: the first len rows are the prefix
      att.forward(out.data(), lse.data(), p.q(), p.k(), p.v(), prefix);
      att.decode(dec.data(), p.q() + (len - 1) * H * D, p.k(), p.v(), len, H, D);
      const std::vector<float> want(out.begin() + (len - 1) * HD, out.begin() + len * HD);
      expect_rel_close(dec, want, 1e-5, cat("rank=", rank, " coarse=", coarse, " summary=", summary, " len=", len));
    }
  }
}

TEST(AttentionDsa, DecodeMemoGivesTheSameBitsAndFollowsTruncation) {
  for (const char* rank : {"mean", "bound"}) {
  SCOPED_TRACE(rank);
  const int64_t H = 2, D = 8, T = 200, HD = H * D;
  Problem p(1, T, H, D, true, false, 1150);
  DsaConfig c = coarse_budget();
  c.rank = rank;
  DsaAttention att(c);  // block and group means (and boxes) all come from the memo
  std::unique_ptr<DecodeMemo> memo = att.make_decode_memo();
  ASSERT_NE(memo, nullptr);
  std::vector<float> with(HD), without(HD);
  for (int64_t len = 1; len <= T; ++len) {  // one generation: the memo fills as the cache grows
    att.decode(with.data(), p.q() + (len - 1) * H * D, p.k(), p.v(), len, H, D, memo.get());
    att.decode(without.data(), p.q() + (len - 1) * H * D, p.k(), p.v(), len, H, D);
    test::expect_bitwise_equal(cat("len=", len), with, without);
  }
  // Rewind to 70 tokens and change everything after: blocks past 70 must be
  // recomputed from the new contents.
  memo->truncate(70);
  for (int64_t t = 70; t < T; ++t)
    for (int64_t e = 0; e < HD; ++e) p.k()[t * HD + e] *= -1.0f, p.q()[t * HD + e] += 0.5f;
  att.decode(with.data(), p.q() + (T - 1) * H * D, p.k(), p.v(), T, H, D, memo.get());
  att.decode(without.data(), p.q() + (T - 1) * H * D, p.k(), p.v(), T, H, D);
  test::expect_bitwise_equal("after truncate", with, without);
  // Another implementation's memo is refused; dense and window keep none.
  EXPECT_EQ(make_attention("dense")->make_decode_memo(), nullptr);
  EXPECT_EQ(make_attention("window")->make_decode_memo(), nullptr);
  struct Foreign final : DecodeMemo {
    void truncate(int64_t) override {}
  } foreign;
  EXPECT_THROW(att.decode(with.data(), p.q() + (T - 1) * H * D, p.k(), p.v(), T, H, D, &foreign), Error);
  }
}

TEST(AttentionDsa, ResultsIndependentOfThreadCount) {
  const int64_t H = 3, D = 16, T = 400;
  for (bool causal : {true, false}) {
    const Problem p(2, T, H, D, causal, false, 1200 + causal);
    Rng rng(1201);
    const std::vector<float> dout = test::random_normal(p.out_size(), rng);
    AttnResult r[2];
    std::vector<float> dec[2];
    for (int run_i = 0; run_i < 2; ++run_i)
      test::with_threads(run_i + 1, [&] {
        DsaAttention att(small_budget());
        r[run_i] = run(att, p, dout);
        dec[run_i].resize(H * D);  // batch 0 is a (T, H, D) cache
        att.decode(dec[run_i].data(), p.q() + (T - 1) * H * D, p.k(), p.v(), T, H, D);
      });
    test::expect_bitwise_equal("out", r[0].out, r[1].out);
    test::expect_bitwise_equal("lse", r[0].lse, r[1].lse);
    test::expect_bitwise_equal("dqkv", r[0].dqkv, r[1].dqkv);
    test::expect_bitwise_equal("decode", dec[0], dec[1]);
  }
}

TEST(AttentionDsa, BackwardWithForwardsSavedPlanGivesTheSameBits) {
  // Training passes forward's plan to backward instead of recomputing it;
  // both ways must agree exactly (the plan is a deterministic function of
  // q, k, v), and a foreign or mismatched saved state is refused. Backward
  // replays the saved choice (far blocks and kept groups) without ranking;
  // without a saved plan it ranks again — same bits for either ranking.
  const int64_t H = 2, D = 8;
  for (const char* rank : {"mean", "bound"})
  for (bool causal : {true, false}) {
    const Problem p(2, 200, H, D, causal, true, 1170 + causal);
    Rng rng(1171);
    const std::vector<float> dout = test::random_normal(p.out_size(), rng);
    DsaConfig c = coarse_budget();
    c.rank = rank;
    ASSERT_FALSE(dsa_plan(p.q(), p.k(), p.v(), p.d, c).kept_groups.empty()) << "the coarse step must run";
    DsaAttention att(c);
    const AttnResult plain = run(att, p, dout);
    std::unique_ptr<AttnSaved> saved;
    std::vector<float> out(p.out_size()), lse(p.lse_size()), dqkv(p.qkv.size(), 777.0f);
    att.forward(out.data(), lse.data(), p.q(), p.k(), p.v(), p.d, &saved);
    ASSERT_NE(saved, nullptr);
    att.backward(dqkv.data() + p.qo, dqkv.data() + p.ko, dqkv.data() + p.vo, dout.data(), out.data(), lse.data(),
                 p.q(), p.k(), p.v(), p.d, saved.get());
    test::expect_bitwise_equal("out", out, plain.out);
    test::expect_bitwise_equal("dqkv", dqkv, plain.dqkv);
    struct Foreign final : AttnSaved {} foreign;
    EXPECT_THROW(att.backward(dqkv.data() + p.qo, dqkv.data() + p.ko, dqkv.data() + p.vo, dout.data(), out.data(),
                              lse.data(), p.q(), p.k(), p.v(), p.d, &foreign),
                 Error);
    // A plan made under other coarse-step settings (here more kept groups
    // per row) cannot be replayed.
    DsaConfig more_kept = c;
    more_kept.group_keep = 5;
    EXPECT_THROW(DsaAttention(more_kept).backward(dqkv.data() + p.qo, dqkv.data() + p.ko, dqkv.data() + p.vo,
                                                  dout.data(), out.data(), lse.data(), p.q(), p.k(), p.v(), p.d,
                                                  saved.get()),
                 Error);
    AttnDims shorter = p.d;
    shorter.T = 100;
    EXPECT_THROW(att.backward(dqkv.data() + p.qo, dqkv.data() + p.ko, dqkv.data() + p.vo, dout.data(), out.data(),
                              lse.data(), p.q(), p.k(), p.v(), shorter, saved.get()),
                 Error);
  }
  // Dense and window keep nothing.
  const Problem p(1, 64, H, D, true, true, 1172);
  std::vector<float> out(p.out_size()), lse(p.lse_size());
  for (const char* name : {"dense", "window"}) {
    std::unique_ptr<AttnSaved> saved = std::make_unique<AttnSaved>();
    make_attention(name)->forward(out.data(), lse.data(), p.q(), p.k(), p.v(), p.d, &saved);
    EXPECT_EQ(saved, nullptr) << name;
  }
}

TEST(AttentionDsa, RejectsBadArguments) {
  DsaAttention att{formula_budget()};
  std::vector<float> buf(64, 0.0f);
  const AttnDims d{1, 2, 2, 4, 6, true};  // ld = 6 < H*D = 8
  try {
    att.forward(buf.data(), buf.data(), buf.data(), buf.data(), buf.data(), d);
    FAIL() << "expected sparta::Error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[attention.dsa] token stride ld=6 is smaller than H*D=8");
  }
  try {
    att.decode(buf.data(), buf.data(), buf.data(), buf.data(), 0, 2, 4);
    FAIL() << "expected sparta::Error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[attention.dsa] decode needs at least one cached position, got len=0");
  }
  WindowAttention win{formula_budget()};
  EXPECT_THROW(win.forward(buf.data(), buf.data(), buf.data(), buf.data(), buf.data(), d), Error);
  EXPECT_THROW(win.decode(buf.data(), buf.data(), buf.data(), buf.data(), 1, 0, 4), Error);
}

}  // namespace
}  // namespace sparta
