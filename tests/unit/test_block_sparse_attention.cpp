// Block-sparse attention kernel: against the dense kernel (full selection),
// against the double-precision reference with an equivalent AttnMask (any
// selection), against finite differences, and for determinism and input
// validation.
#include "ops/block_sparse_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/convert.h"
#include "core/error.h"
#include "core/rng.h"
#include "ops/attention.h"
#include "ops/attention_reference.h"
#include "attention_test_util.h"
#include "op_test_harness.h"

namespace sparta::ops {
namespace {

using test::all_finite;
using test::AttnResult;
using test::expect_rel_close;
using test::expect_results_close;
using test::mask_of;

constexpr float kSentinel = 777.0f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// q, k, v fused per token as (B, T, 3, H, D) (ld = 3*H*D, the model's
// layout), slices filled with N(0, amp^2).
struct Problem {
  AttnDims d;
  std::vector<float> qkv;
  Problem(int64_t B, int64_t T, int64_t H, int64_t D, bool causal, uint64_t seed, double amp = 1.5) {
    d.B = B, d.T = T, d.H = H, d.D = D, d.ld = 3 * H * D, d.causal = causal;
    Rng rng(seed);
    qkv = test::random_normal(static_cast<size_t>(B * T * d.ld), rng, amp);
  }
  const float* q() const { return qkv.data(); }
  const float* k() const { return qkv.data() + d.H * d.D; }
  const float* v() const { return qkv.data() + 2 * d.H * d.D; }
  size_t out_size() const { return static_cast<size_t>(d.B * d.T * d.H * d.D); }
  size_t lse_size() const { return static_cast<size_t>(d.B * d.H * d.T); }
};

AttnResult run_sparse(const Problem& p, const BlockSelection& sel, const std::vector<float>& dout) {
  AttnResult r{std::vector<float>(p.out_size(), kSentinel), std::vector<float>(p.lse_size(), kSentinel),
           std::vector<float>(p.qkv.size(), kSentinel)};
  block_sparse_attention_forward(r.out.data(), r.lse.data(), p.q(), p.k(), p.v(), p.d, sel);
  const int64_t hd = p.d.H * p.d.D;
  block_sparse_attention_backward(r.dqkv.data(), r.dqkv.data() + hd, r.dqkv.data() + 2 * hd, dout.data(),
                                  r.out.data(), r.lse.data(), p.q(), p.k(), p.v(), p.d, sel);
  return r;
}

AttnResult run_dense(const Problem& p, const std::vector<float>& dout) {
  AttnResult r{std::vector<float>(p.out_size(), kSentinel), std::vector<float>(p.lse_size(), kSentinel),
           std::vector<float>(p.qkv.size(), kSentinel)};
  auto att = make_attention("dense");
  att->forward(r.out.data(), r.lse.data(), p.q(), p.k(), p.v(), p.d);
  const int64_t hd = p.d.H * p.d.D;
  att->backward(r.dqkv.data(), r.dqkv.data() + hd, r.dqkv.data() + 2 * hd, dout.data(), r.out.data(),
                r.lse.data(), p.q(), p.k(), p.v(), p.d);
  return r;
}

AttnResult run_reference(const Problem& p, const AttnMask& mask, const std::vector<float>& dout) {
  AttnResult r{std::vector<float>(p.out_size(), kSentinel), std::vector<float>(p.lse_size(), kSentinel),
           std::vector<float>(p.qkv.size(), kSentinel)};
  attention_reference_forward(r.out.data(), r.lse.data(), p.q(), p.k(), p.v(), p.d, mask);
  const int64_t hd = p.d.H * p.d.D;
  attention_reference_backward(r.dqkv.data(), r.dqkv.data() + hd, r.dqkv.data() + 2 * hd, dout.data(), p.q(),
                               p.k(), p.v(), p.d, mask);
  return r;
}



// Each list picks every permitted key block (not after the query block's
// last row when causal) with probability `density`, and block 0 always, so
// that every query block shares it; list `empty_list` (if >= 0) selects
// nothing. Non-causal lists may pick later blocks; causal lists occasionally
// pick one too (it must be ignored). qblock 0 = query blocks of `block`.
BlockSelection random_selection(const AttnDims& d, int64_t block, double density, int64_t empty_list,
                                uint64_t seed, int64_t qblock = 0) {
  Rng rng(seed);
  BlockSelection sel;
  sel.block = block;
  sel.qblock = qblock;
  sel.nqb = (d.T + query_block(sel) - 1) / query_block(sel);
  const int64_t nkb = (d.T + block - 1) / block;
  sel.offsets.push_back(0);
  for (int64_t list = 0; list < d.B * d.H * sel.nqb; ++list) {
    const int64_t qb = list % sel.nqb;
    const int64_t last_row = std::min(d.T, (qb + 1) * query_block(sel)) - 1;
    if (list != empty_list)
      for (int64_t kb = 0; kb < nkb; ++kb) {
        const bool permitted = !d.causal || kb * block <= last_row;
        const double pr = kb == 0 ? 1.0 : permitted ? density : 0.05;
        if (rng.uniform() < pr) sel.keys.push_back(static_cast<int32_t>(kb));
      }
    sel.offsets.push_back(static_cast<int64_t>(sel.keys.size()));
  }
  return sel;
}


TEST(BlockSparseAttention, FullSelectionEqualsDenseKernel) {
  for (bool causal : {true, false})
    for (int64_t T : {256, 200})
      for (int64_t block : {64, 32, 48, 96}) {
        const Problem p(2, T, 3, 16, causal, 100 + T + block);
        Rng rng(7);
        const std::vector<float> dout = test::random_normal(p.out_size(), rng);
        const std::string what = cat("causal=", causal, " T=", T, " block=", block);
        // Block 64 tiles the keys exactly like the dense kernel; other block
        // sizes sum the same terms in another order (float32 rounding ~1e-6
        // relative, seen up to 1.3e-6 at -O2 under sanitizers), hence 1e-5.
        const double tol = block == 64 ? 1e-6 : 1e-5;
        expect_results_close(run_sparse(p, full_selection(p.d, block), dout), run_dense(p, dout), tol, tol, what);
      }
}

TEST(BlockSparseAttention, RandomSelectionsMatchMaskedReference) {
  struct Case {
    int64_t B, T, H, D, block;
    bool causal;
    double density;
  };
  const Case cases[] = {
      {2, 160, 2, 8, 16, true, 0.3},  {1, 200, 3, 16, 32, true, 0.4}, {1, 300, 2, 8, 64, true, 0.5},
      {2, 130, 2, 8, 16, false, 0.3}, {1, 190, 2, 16, 32, false, 0.4},
      {2, 10, 2, 8, 16, true, 0.5},   {1, 40, 2, 8, 64, false, 0.5},  // T < block
      // Blocks larger than the kernel's query (64) and key (512) tiles.
      {1, 1300, 1, 8, 600, true, 0.5}, {1, 1300, 1, 8, 600, false, 0.5}, {1, 250, 2, 8, 100, true, 0.5},
  };
  uint64_t seed = 1;
  for (const Case& c : cases) {
    const Problem p(c.B, c.T, c.H, c.D, c.causal, 1000 + seed);
    const int64_t nqb = (c.T + c.block - 1) / c.block;
    // An empty list in the middle of the first head (the only one when T < block).
    const BlockSelection sel = random_selection(p.d, c.block, c.density, nqb / 2, ++seed);
    Rng rng(seed);
    const std::vector<float> dout = test::random_normal(p.out_size(), rng);
    const std::string what = cat("B=", c.B, " T=", c.T, " block=", c.block, " causal=", c.causal);
    const AttnResult got = run_sparse(p, sel, dout);
    const AttnResult want = run_reference(p, mask_of(p.d, sel), dout);
    expect_rel_close(got.out, want.out, 1e-5, what + " out");
    expect_rel_close(got.lse, want.lse, 1e-5, what + " lse");
    expect_rel_close(got.dqkv, want.dqkv, 1e-4, what + " dqkv");
    // The empty query block: out 0 and lse -inf, and no NaN anywhere.
    const int64_t q0 = nqb / 2 * c.block;
    for (int64_t t = q0; t < std::min(c.T, q0 + c.block); ++t) {
      EXPECT_EQ(got.lse[static_cast<size_t>(t)], kNegInf) << what << " t=" << t;
      for (int64_t e = 0; e < c.D; ++e) EXPECT_EQ(got.out[static_cast<size_t>(t * c.H * c.D + e)], 0.0f) << what;
    }
    EXPECT_TRUE(all_finite(got.out)) << what;
    EXPECT_TRUE(all_finite(got.dqkv)) << what;
  }
}

TEST(BlockSparseAttention, EverySelectionEmptyGivesZeros) {
  const Problem p(1, 50, 2, 8, true, 5);
  BlockSelection sel = random_selection(p.d, 16, 0.0, -1, 6);
  sel.keys.clear();
  std::fill(sel.offsets.begin(), sel.offsets.end(), 0);
  Rng rng(3);
  const AttnResult r = run_sparse(p, sel, test::random_normal(p.out_size(), rng));
  for (float x : r.out) EXPECT_EQ(x, 0.0f);
  for (float x : r.lse) EXPECT_EQ(x, kNegInf);
  for (float x : r.dqkv) EXPECT_EQ(x, 0.0f);
}

TEST(BlockSparseAttention, WindowSelectionMatchesSlidingWindowReference) {
  for (bool causal : {true, false})
    for (int64_t window : {1, 2, 3}) {
      const Problem p(1, 170, 2, 16, causal, 40 + window);
      const int64_t block = 32;
      const AttnMask sliding = [&](int64_t, int64_t, int64_t i, int64_t j) {
        return j / block <= i / block && i / block - j / block < window;
      };
      Rng rng(9);
      const std::vector<float> dout = test::random_normal(p.out_size(), rng);
      expect_results_close(run_sparse(p, window_selection(p.d, block, window), dout),
                           run_reference(p, sliding, dout), 1e-5, 1e-4,
                           cat("causal=", causal, " window=", window));
    }
}

TEST(BlockSparseAttention, GradientsMatchFiniteDifferences) {
  for (bool causal : {true, false}) {
    Problem p(1, 9, 2, 4, causal, 77, 1.0);
    const BlockSelection sel = random_selection(p.d, 2, 0.5, 3, 78);
    Rng rng(79);
    const std::vector<float> R = test::random_normal(p.out_size(), rng);
    const AttnResult r = run_sparse(p, sel, R);
    const auto objective = [&] {
      std::vector<float> out(p.out_size()), lse(p.lse_size());
      block_sparse_attention_forward(out.data(), lse.data(), p.q(), p.k(), p.v(), p.d, sel);
      return test::dot(out, R);
    };
    // One thread: ~1300 tiny forwards would otherwise pay a pool wake-up each
    // (results are thread-count independent, see below).
    test::with_threads(1, [&] {
      test::expect_grad_matches_fd(cat("block sparse causal=", causal), p.qkv, r.dqkv, objective);
    });
  }
}

TEST(BlockSparseAttention, ResultsIndependentOfThreadCount) {
  // Heavy sharing (block 0 and dense picks) makes many query blocks feed the
  // same dK/dV rows.
  const Problem p(1, 640, 2, 32, true, 31);
  const BlockSelection sel = random_selection(p.d, 32, 0.6, -1, 32);
  Rng rng(33);
  const std::vector<float> dout = test::random_normal(p.out_size(), rng);
  AttnResult r1, r2;
  test::with_threads(1, [&] { r1 = run_sparse(p, sel, dout); });
  test::with_threads(2, [&] { r2 = run_sparse(p, sel, dout); });
  test::expect_bitwise_equal("out", r1.out, r2.out);
  test::expect_bitwise_equal("lse", r1.lse, r2.lse);
  test::expect_bitwise_equal("dqkv", r1.dqkv, r2.dqkv);
}

// BF16 products (AttnDims::bf16_products): q, k, v and dout are rounded to
// BF16 before any product, so the double reference on the rounded inputs
// differs from the kernel only by what the kernel rounds inside (the
// probabilities for p·v, the score gradients for the backward products):
// relative 2^-9 per term. Odd head dims, odd blocks and odd lengths put the
// zero padding of the k pairs and the separately packed odd-position tiles
// to work.
TEST(BlockSparseAttention, Bf16ProductsMatchReferenceOnRoundedInputs) {
  struct Case {
    int64_t B, T, H, D, block, qblock;
    bool causal;
  };
  const Case cases[] = {{2, 160, 2, 8, 16, 0, true},  {1, 300, 2, 64, 64, 0, true}, {1, 131, 2, 7, 5, 0, true},
                        {1, 97, 1, 9, 15, 7, false}, {1, 1300, 1, 8, 600, 0, true}};
  uint64_t seed = 70;
  for (const Case& c : cases) {
    Problem p(c.B, c.T, c.H, c.D, c.causal, ++seed);
    const BlockSelection sel = random_selection(p.d, c.block, 0.5, -1, ++seed, c.qblock);
    Rng rng(seed);
    std::vector<float> dout = test::random_normal(p.out_size(), rng);
    const std::string what = cat("T=", c.T, " D=", c.D, " block=", c.block, " causal=", c.causal);
    const AttnResult fp32 = run_sparse(p, sel, dout);
    for (float& x : p.qkv) x = bf16_bits_to_f32(f32_to_bf16_bits(x));
    for (float& x : dout) x = bf16_bits_to_f32(f32_to_bf16_bits(x));
    const AttnResult want = run_reference(p, mask_of(p.d, sel), dout);
    p.d.bf16_products = true;
    const AttnResult got = run_sparse(p, sel, dout);
    expect_rel_close(got.out, want.out, 1e-2, what + " out");
    expect_rel_close(got.lse, want.lse, 1e-5, what + " lse");
    expect_rel_close(got.dqkv, want.dqkv, 3e-2, what + " dqkv");
    EXPECT_NE(got.out, fp32.out) << what << ": bf16 products must not be the FP32 kernel";
    AttnResult one_thread;
    test::with_threads(1, [&] { one_thread = run_sparse(p, sel, dout); });
    test::expect_bitwise_equal("out", one_thread.out, got.out);
    test::expect_bitwise_equal("dqkv", one_thread.dqkv, got.dqkv);
  }
}

TEST(BlockSparseAttention, QueryBlocksOfOtherSizeMatchMaskedReference) {
  struct Case {
    int64_t T, block, qblock;
    bool causal;
  };
  const Case cases[] = {{200, 16, 4, true},   {200, 32, 8, false},  {203, 64, 16, true},
                        {150, 16, 48, true},  {150, 16, 48, false}, {700, 512, 100, true}};
  uint64_t seed = 50;
  for (const Case& c : cases) {
    const Problem p(2, c.T, 2, 8, c.causal, ++seed);
    const BlockSelection sel = random_selection(p.d, c.block, 0.4, 3, ++seed, c.qblock);
    Rng rng(seed);
    const std::vector<float> dout = test::random_normal(p.out_size(), rng);
    expect_results_close(run_sparse(p, sel, dout), run_reference(p, mask_of(p.d, sel), dout), 1e-5, 1e-4,
                         cat("T=", c.T, " block=", c.block, " qblock=", c.qblock, " causal=", c.causal));
  }
}

// Extra keys (ExtraKeys): one more softmax entry per query block.
struct Extra {
  std::vector<float> logit, value;
  ExtraKeys keys() const { return {logit.data(), value.data()}; }
};

// Random extra keys for sel: logits N(0, 1) (a few -inf = none), values N(0, 1).
Extra random_extra(const AttnDims& d, const BlockSelection& sel, uint64_t seed) {
  Rng rng(seed);
  Extra x;
  const size_t lists = static_cast<size_t>(d.B * d.H * sel.nqb);
  x.logit = test::random_normal(lists, rng, 1.0);
  x.value = test::random_normal(lists * static_cast<size_t>(d.D), rng, 1.0);
  for (size_t i = 0; i < lists; i += 5) x.logit[i] = kNegInf;
  return x;
}

struct ExtraResult {
  AttnResult r;
  std::vector<float> d_logit, d_value;
};

ExtraResult run_sparse_extra(const Problem& p, const BlockSelection& sel, const Extra& x,
                             const std::vector<float>& dout) {
  ExtraResult e{{std::vector<float>(p.out_size(), kSentinel), std::vector<float>(p.lse_size(), kSentinel),
                 std::vector<float>(p.qkv.size(), kSentinel)},
                std::vector<float>(x.logit.size(), kSentinel),
                std::vector<float>(x.value.size(), kSentinel)};
  block_sparse_attention_forward(e.r.out.data(), e.r.lse.data(), p.q(), p.k(), p.v(), p.d, sel, x.keys());
  const int64_t hd = p.d.H * p.d.D;
  block_sparse_attention_backward(e.r.dqkv.data(), e.r.dqkv.data() + hd, e.r.dqkv.data() + 2 * hd, dout.data(),
                                  e.r.out.data(), e.r.lse.data(), p.q(), p.k(), p.v(), p.d, sel, x.keys(),
                                  e.d_logit.data(), e.d_value.data());
  return e;
}

// Double-precision oracle written from the definition: row t of (b, h)
// takes a softmax over its allowed keys plus the extra key of its query
// block, out = Σ p·v; the gradients of <out, dout> by hand.
ExtraResult reference_extra(const Problem& p, const BlockSelection& sel, const Extra& x,
                            const std::vector<float>& dout) {
  const AttnDims& d = p.d;
  const int64_t H = d.H, D = d.D, T = d.T, ld = d.ld, hd = H * D, qblock = query_block(sel);
  const AttnMask mask = mask_of(d, sel);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> out(p.out_size()), lse(p.lse_size()), dqkv(p.qkv.size(), 0.0), dl(x.logit.size(), 0.0),
      dvx(x.value.size(), 0.0);
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t list = (b * H + h) * sel.nqb + t / qblock;
        const float* qt = p.q() + (b * T + t) * ld + h * D;
        std::vector<int64_t> keys;
        std::vector<double> s;
        for (int64_t j = 0; j < T; ++j)
          if ((!d.causal || j <= t) && mask(b, h, t, j)) {
            double dot = 0.0;
            for (int64_t e = 0; e < D; ++e) dot += double(qt[e]) * p.k()[(b * T + j) * ld + h * D + e];
            keys.push_back(j);
            s.push_back(dot * scale);
          }
        const bool has_x = x.logit[list] > kNegInf;
        double m = has_x ? x.logit[list] : -INFINITY;
        for (double v : s) m = std::max(m, v);
        double* o = out.data() + ((b * T + t) * H + h) * D;
        if (m == -INFINITY) {
          lse[(b * H + h) * T + t] = -INFINITY;
          continue;
        }
        double l = has_x ? std::exp(x.logit[list] - m) : 0.0;
        for (double v : s) l += std::exp(v - m);
        const double L = m + std::log(l);
        lse[(b * H + h) * T + t] = L;
        const double px = has_x ? std::exp(x.logit[list] - L) : 0.0;
        for (int64_t e = 0; e < D; ++e) o[e] = px * x.value[list * D + e];
        for (size_t i = 0; i < keys.size(); ++i)
          for (int64_t e = 0; e < D; ++e) o[e] += std::exp(s[i] - L) * p.v()[(b * T + keys[i]) * ld + h * D + e];
        const float* go = dout.data() + ((b * T + t) * H + h) * D;
        double di = 0.0;
        for (int64_t e = 0; e < D; ++e) di += go[e] * o[e];
        if (has_x) {
          double gv = 0.0;
          for (int64_t e = 0; e < D; ++e) gv += go[e] * x.value[list * D + e], dvx[list * D + e] += px * go[e];
          dl[list] += px * (gv - di);
        }
        for (size_t i = 0; i < keys.size(); ++i) {
          const int64_t row = (b * T + keys[i]) * ld + h * D;
          const double pi = std::exp(s[i] - L);
          double dp = 0.0;
          for (int64_t e = 0; e < D; ++e) dp += go[e] * p.v()[row + e];
          const double ds = pi * (dp - di) * scale;
          for (int64_t e = 0; e < D; ++e) {
            dqkv[(b * T + t) * ld + h * D + e] += ds * p.k()[row + e];
            dqkv[row + hd + e] += ds * qt[e];
            dqkv[row + 2 * hd + e] += pi * go[e];
          }
        }
      }
  const auto f = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  return {{f(out), f(lse), f(dqkv)}, f(dl), f(dvx)};
}

TEST(BlockSparseAttention, ExtraKeysMatchReference) {
  struct Case {
    int64_t T, block, qblock;
    bool causal;
  };
  const Case cases[] = {{100, 16, 4, true}, {100, 16, 16, false}, {130, 32, 8, true}, {90, 64, 16, false}};
  uint64_t seed = 70;
  for (const Case& c : cases) {
    const Problem p(2, c.T, 2, 8, c.causal, ++seed);
    // List 2 selects nothing: its rows see only their extra key.
    const BlockSelection sel = random_selection(p.d, c.block, 0.4, 2, ++seed, c.qblock);
    const Extra x = random_extra(p.d, sel, ++seed);
    Rng rng(seed);
    const std::vector<float> dout = test::random_normal(p.out_size(), rng);
    const std::string what = cat("T=", c.T, " block=", c.block, " qblock=", c.qblock, " causal=", c.causal);
    const ExtraResult got = run_sparse_extra(p, sel, x, dout), want = reference_extra(p, sel, x, dout);
    expect_results_close(got.r, want.r, 1e-5, 1e-4, what);
    expect_rel_close(got.d_logit, want.d_logit, 1e-4, what + " d_logit");
    expect_rel_close(got.d_value, want.d_value, 1e-4, what + " d_value");
    EXPECT_TRUE(all_finite(got.r.out) && all_finite(got.r.dqkv) && all_finite(got.d_logit)) << what;
  }
}

TEST(BlockSparseAttention, ExtraKeyGradientsMatchFiniteDifferences) {
  Problem p(1, 12, 2, 4, true, 90, 1.0);
  const BlockSelection sel = random_selection(p.d, 4, 0.5, 1, 91, 2);
  Extra x = random_extra(p.d, sel, 92);
  Rng rng(93);
  const std::vector<float> R = test::random_normal(p.out_size(), rng);
  const ExtraResult r = run_sparse_extra(p, sel, x, R);
  const auto objective = [&] {
    std::vector<float> out(p.out_size()), lse(p.lse_size());
    block_sparse_attention_forward(out.data(), lse.data(), p.q(), p.k(), p.v(), p.d, sel, x.keys());
    return test::dot(out, R);
  };
  test::with_threads(1, [&] {
    test::expect_grad_matches_fd("extra keys: qkv", p.qkv, r.r.dqkv, objective);
    test::expect_grad_matches_fd("extra keys: value", x.value, r.d_value, objective);
    // Finite logits only (a -inf logit has no neighbourhood).
    std::vector<float> finite, grads;
    for (size_t i = 0; i < x.logit.size(); ++i)
      if (x.logit[i] > kNegInf) finite.push_back(x.logit[i]), grads.push_back(r.d_logit[i]);
    std::vector<float> saved = x.logit;
    const auto logit_objective = [&] {
      for (size_t i = 0, f = 0; i < x.logit.size(); ++i)
        if (saved[i] > kNegInf) x.logit[i] = finite[f++];
      return objective();
    };
    test::expect_grad_matches_fd("extra keys: logit", finite, grads, logit_objective);
    x.logit = saved;
  });
  for (size_t i = 0; i < x.logit.size(); ++i)
    if (x.logit[i] == kNegInf) {
      EXPECT_EQ(r.d_logit[i], 0.0f) << i;
    }
}

TEST(BlockSparseAttention, ExtraKeysNeedBothHalvesAndGradientBuffers) {
  const Problem p(1, 32, 1, 4, true, 3);
  const BlockSelection sel = window_selection(p.d, 16, 1);
  std::vector<float> out(p.out_size()), lse(p.lse_size()), g(p.qkv.size()), xl(2, 0.0f), xv(8, 0.0f);
  EXPECT_THROW(block_sparse_attention_forward(out.data(), lse.data(), p.q(), p.k(), p.v(), p.d, sel,
                                              ExtraKeys{xl.data(), nullptr}),
               Error);
  try {
    block_sparse_attention_backward(g.data(), g.data() + 4, g.data() + 8, out.data(), out.data(), lse.data(),
                                    p.q(), p.k(), p.v(), p.d, sel, ExtraKeys{xl.data(), xv.data()});
    ADD_FAILURE() << "backward accepted extra keys without gradient buffers";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs buffers for their gradients"), std::string::npos) << e.what();
  }
}

// Expects forward and backward to throw sparta::Error containing `needle`.
void expect_rejected(const Problem& p, const BlockSelection& sel, const std::string& needle) {
  std::vector<float> out(p.out_size()), lse(p.lse_size()), g(p.qkv.size());
  const int64_t hd = p.d.H * p.d.D;
  for (int pass = 0; pass < 2; ++pass) {
    try {
      if (pass == 0)
        block_sparse_attention_forward(out.data(), lse.data(), p.q(), p.k(), p.v(), p.d, sel);
      else
        block_sparse_attention_backward(g.data(), g.data() + hd, g.data() + 2 * hd, out.data(), out.data(),
                                        lse.data(), p.q(), p.k(), p.v(), p.d, sel);
      ADD_FAILURE() << "no error for '" << needle << "' (pass " << pass << ")";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("[attention.block_sparse]"), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg << "\nexpected: " << needle;
    }
  }
}

TEST(BlockSparseAttention, RejectsBadSelections) {
  const Problem p(1, 64, 2, 4, true, 3);
  const BlockSelection good = window_selection(p.d, 16, 3);  // nqb = 4, 8 lists
  {  // the good one passes
    std::vector<float> out(p.out_size()), lse(p.lse_size());
    EXPECT_NO_THROW(block_sparse_attention_forward(out.data(), lse.data(), p.q(), p.k(), p.v(), p.d, good));
  }
  BlockSelection s = good;
  std::swap(s.keys[s.offsets[3]], s.keys[s.offsets[3] + 1]);  // list 3 = h0 qb3: {1, 2, 3} -> {2, 1, 3}
  expect_rejected(p, s, "list 3 (b=0 h=0 qb=3): key blocks must be sorted and unique, got 2 then 1");
  s = good;
  s.keys[s.offsets[7] + 1] = s.keys[s.offsets[7]];  // h1 qb3: {1, 1, 3}
  expect_rejected(p, s, "list 7 (b=0 h=1 qb=3): key blocks must be sorted and unique, got 1 then 1");
  s = good;
  s.keys.back() = 4;
  expect_rejected(p, s, "key block 4 out of range [0, 4)");
  s = good;
  s.keys.front() = -1;
  expect_rejected(p, s, "key block -1 out of range [0, 4)");
  s = good;
  s.offsets.pop_back();
  expect_rejected(p, s, "offsets has 8 entries but B*H*nqb+1 = 9");
  s = good;
  s.offsets.back() -= 1;
  expect_rejected(p, s, "offsets ends at");
  s = good;
  s.offsets[2] = s.offsets[3] + 1;
  expect_rejected(p, s, "offsets decrease at list 2");
  s = good;
  s.nqb = 5;
  expect_rejected(p, s, "selection has nqb=5 but T=64 with query block 16 needs 4");
  s = good;
  s.qblock = 8;  // query blocks of 8 need nqb = 8
  expect_rejected(p, s, "selection has nqb=4 but T=64 with query block 8 needs 8");
  s = good;
  s.qblock = -1;
  expect_rejected(p, s, "query block size must be >= 1 (or 0 = block), got -1");
  s = good;
  s.block = 0;
  expect_rejected(p, s, "block size must be >= 1, got 0");
  try {
    window_selection(p.d, 16, 0);
    ADD_FAILURE() << "window_selection accepted window_blocks = 0";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("window_selection needs window_blocks >= 1, got 0"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(full_selection(p.d, 0), Error);
}

}  // namespace
}  // namespace sparta::ops
