// Row-sparse attention kernel: it must compute exactly what the block-sparse
// kernel computes with one-row query blocks (a separately tested kernel, see
// test_block_sparse_attention.cpp), for random per-row selections with and
// without per-row extra keys, causal and not, in accumulate mode, and it
// rejects selections that are not per row.
#include "ops/row_sparse_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attention_test_util.h"
#include "core/convert.h"
#include "core/error.h"
#include "core/rng.h"
#include "op_test_harness.h"
#include "ops/block_sparse_attention.h"

namespace sparta::ops {
namespace {

using test::AttnResult;
using test::expect_rel_close;
using test::expect_results_close;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Rows pick each permitted block with probability `density` (causal: blocks
// starting after the row are picked now and then too and must be ignored);
// every 7th row picks nothing.
BlockSelection random_rows(const AttnDims& d, int64_t block, double density, uint64_t seed) {
  Rng rng(seed);
  BlockSelection sel;
  sel.block = block;
  sel.qblock = 1;
  sel.nqb = d.T;
  const int64_t nkb = (d.T + block - 1) / block;
  sel.offsets.push_back(0);
  for (int64_t list = 0; list < d.B * d.H * d.T; ++list) {
    const int64_t t = list % d.T;
    if (list % 7 != 3)
      for (int64_t kb = 0; kb < nkb; ++kb) {
        const bool permitted = !d.causal || kb * block <= t;
        if (rng.uniform() < (permitted ? density : 0.05)) sel.keys.push_back(static_cast<int32_t>(kb));
      }
    sel.offsets.push_back(static_cast<int64_t>(sel.keys.size()));
  }
  return sel;
}

struct KernelRun {
  AttnResult r;
  std::vector<float> d_logit, d_value;
};

// One kernel's forward + backward on fused (B, T, 3, H, D) inputs; dqkv
// starts at `init` (accumulate mode adds to it).
template <class Fwd, class Bwd>
KernelRun run(Fwd fwd, Bwd bwd, const AttnDims& d, const std::vector<float>& qkv, const std::vector<float>& dout,
        const ExtraKeys& extra, float init, bool accumulate) {
  const int64_t hd = d.H * d.D;
  KernelRun x;
  x.r.out.assign(static_cast<size_t>(d.B * d.T * hd), 7.0f);
  x.r.lse.assign(static_cast<size_t>(d.B * d.H * d.T), 7.0f);
  x.r.dqkv.assign(qkv.size(), init);
  x.d_logit.assign(static_cast<size_t>(d.B * d.H * d.T), 7.0f);
  x.d_value.assign(static_cast<size_t>(d.B * d.H * d.T * d.D), 7.0f);
  fwd(x.r.out.data(), x.r.lse.data(), qkv.data(), qkv.data() + hd, qkv.data() + 2 * hd, d, extra);
  bwd(x.r.dqkv.data(), x.r.dqkv.data() + hd, x.r.dqkv.data() + 2 * hd, dout.data(), x.r.out.data(), x.r.lse.data(),
      qkv.data(), qkv.data() + hd, qkv.data() + 2 * hd, d, extra, extra.logit ? x.d_logit.data() : nullptr,
      extra.logit ? x.d_value.data() : nullptr, accumulate);
  return x;
}

// The kernel under test and its oracle (the block-sparse kernel, which
// always overwrites) through run().
KernelRun run_row_sparse(const AttnDims& d, const BlockSelection& sel, const std::vector<float>& qkv,
                         const std::vector<float>& dout, const ExtraKeys& extra, float init, bool accumulate) {
  return run(
      [&](float* o, float* l, const float* q, const float* k, const float* v, const AttnDims& dd, const ExtraKeys& e) {
        row_sparse_attention_forward(o, l, q, k, v, dd, sel, e);
      },
      [&](float* dq, float* dk, float* dv, const float* go, const float* o, const float* l, const float* q,
          const float* k, const float* v, const AttnDims& dd, const ExtraKeys& e, float* gl, float* gv, bool acc) {
        row_sparse_attention_backward(dq, dk, dv, go, o, l, q, k, v, dd, sel, e, gl, gv, acc);
      },
      d, qkv, dout, extra, init, accumulate);
}

KernelRun run_block_sparse(const AttnDims& d, const BlockSelection& sel, const std::vector<float>& qkv,
                           const std::vector<float>& dout, const ExtraKeys& extra) {
  return run(
      [&](float* o, float* l, const float* q, const float* k, const float* v, const AttnDims& dd, const ExtraKeys& e) {
        block_sparse_attention_forward(o, l, q, k, v, dd, sel, e);
      },
      [&](float* dq, float* dk, float* dv, const float* go, const float* o, const float* l, const float* q,
          const float* k, const float* v, const AttnDims& dd, const ExtraKeys& e, float* gl, float* gv, bool) {
        block_sparse_attention_backward(dq, dk, dv, go, o, l, q, k, v, dd, sel, e, gl, gv);
      },
      d, qkv, dout, extra, 0.0f, false);
}

TEST(RowSparseAttention, MatchesBlockSparseKernelWithOneRowQueryBlocks) {
  struct Case {
    int64_t B, T, H, D, block;
    bool causal;
    double density;
  };
  const Case cases[] = {
      {2, 150, 2, 8, 16, true, 0.3}, {1, 300, 3, 16, 32, true, 0.2}, {1, 600, 2, 64, 64, true, 0.1},
      {2, 131, 2, 8, 16, false, 0.3}, {1, 203, 2, 16, 10, false, 0.2},
      {1, 700, 1, 8, 600, true, 0.7},  // a block larger than the row chunk and the product tiles
  };
  for (const Case& c : cases)
    for (bool with_extra : {false, true})
      for (bool accumulate : {false, true}) {
        AttnDims d;
        d.B = c.B, d.T = c.T, d.H = c.H, d.D = c.D, d.ld = 3 * c.H * c.D, d.causal = c.causal;
        Rng rng(c.T * 31 + c.block);
        const std::vector<float> qkv = test::random_normal(static_cast<size_t>(d.B * d.T * d.ld), rng, 1.5);
        const std::vector<float> dout = test::random_normal(static_cast<size_t>(d.B * d.T * d.H * d.D), rng);
        std::vector<float> xl = test::random_normal(static_cast<size_t>(d.B * d.H * d.T), rng, 2.0);
        const std::vector<float> xv = test::random_normal(static_cast<size_t>(d.B * d.H * d.T * d.D), rng);
        for (size_t i = 0; i < xl.size(); i += 5) xl[i] = kNegInf;  // rows without an extra key
        const ExtraKeys extra = with_extra ? ExtraKeys{xl.data(), xv.data()} : ExtraKeys{};
        const BlockSelection sel = random_rows(d, c.block, c.density, c.T + c.block);
        const float init = accumulate ? 0.25f : 777.0f;  // overwrite mode must not read it
        const KernelRun got = run_row_sparse(d, sel, qkv, dout, extra, init, accumulate);
        // The oracle overwrites; accumulate mode must equal init + its result.
        KernelRun want = run_block_sparse(d, sel, qkv, dout, extra);
        if (accumulate)
          for (float& g : want.r.dqkv) g += init;
        const std::string what = cat("T=", c.T, " block=", c.block, " causal=", c.causal, " extra=", with_extra,
                                     " accumulate=", accumulate);
        expect_results_close(got.r, want.r, 1e-5, 1e-5, what);
        if (with_extra) {
          expect_rel_close(got.d_logit, want.d_logit, 1e-5, what + " d_extra_logit");
          expect_rel_close(got.d_value, want.d_value, 1e-5, what + " d_extra_value");
        }
      }
}

// BF16 products (AttnDims::bf16_products) against the FP32 block-sparse
// kernel on the BF16-rounded q, k, v and dout: what remains is the kernel's
// own rounding of probabilities and score gradients (2^-9 relative per
// term). An odd block size (10) packs key blocks at odd positions on their
// own; D 9 pads the pairs of the head dimension.
TEST(RowSparseAttention, Bf16ProductsMatchFp32KernelOnRoundedInputs) {
  struct Case {
    int64_t T, H, D, block;
    bool causal;
  };
  const Case cases[] = {{300, 2, 16, 32, true}, {203, 2, 9, 10, false}, {600, 1, 64, 64, true}};
  for (const Case& c : cases)
    for (bool accumulate : {false, true}) {
      AttnDims d;
      d.B = 1, d.T = c.T, d.H = c.H, d.D = c.D, d.ld = 3 * c.H * c.D, d.causal = c.causal;
      Rng rng(c.T * 7 + c.block);
      std::vector<float> qkv = test::random_normal(static_cast<size_t>(d.B * d.T * d.ld), rng, 1.5);
      std::vector<float> dout = test::random_normal(static_cast<size_t>(d.B * d.T * d.H * d.D), rng);
      std::vector<float> xl = test::random_normal(static_cast<size_t>(d.B * d.H * d.T), rng, 2.0);
      const std::vector<float> xv = test::random_normal(static_cast<size_t>(d.B * d.H * d.T * d.D), rng);
      for (size_t i = 0; i < xl.size(); i += 5) xl[i] = kNegInf;
      for (auto* x : {&qkv, &dout})
        for (float& e : *x) e = bf16_bits_to_f32(f32_to_bf16_bits(e));
      const ExtraKeys extra{xl.data(), xv.data()};
      const BlockSelection sel = random_rows(d, c.block, 0.3, c.T + c.block);
      const float init = accumulate ? 0.25f : 777.0f;
      AttnDims d16 = d;
      d16.bf16_products = true;
      const KernelRun got = run_row_sparse(d16, sel, qkv, dout, extra, init, accumulate);
      KernelRun want = run_block_sparse(d, sel, qkv, dout, extra);
      if (accumulate)
        for (float& g : want.r.dqkv) g += init;
      const std::string what = cat("T=", c.T, " D=", c.D, " block=", c.block, " accumulate=", accumulate);
      expect_rel_close(got.r.out, want.r.out, 1e-2, what + " out");
      expect_rel_close(got.r.lse, want.r.lse, 1e-5, what + " lse");
      expect_rel_close(got.r.dqkv, want.r.dqkv, 3e-2, what + " dqkv");
      expect_rel_close(got.d_logit, want.d_logit, 3e-2, what + " d_extra_logit");
      expect_rel_close(got.d_value, want.d_value, 1e-2, what + " d_extra_value");
      EXPECT_NE(got.r.out, run_row_sparse(d, sel, qkv, dout, extra, init, accumulate).r.out)
          << what << ": bf16 products must not be the FP32 kernel";
    }
}

TEST(RowSparseAttention, ManyRowsOnOneBlockAndEmptyRows) {
  // Every row of both heads picks block 0 (one dK/dV owner summing hundreds
  // of rows); rows before the block's first key (none here) and rows with
  // nothing selected give out 0 and lse -inf without NaN.
  AttnDims d;
  d.B = 1, d.T = 400, d.H = 2, d.D = 16, d.ld = 3 * 2 * 16, d.causal = true;
  Rng rng(5);
  const std::vector<float> qkv = test::random_normal(static_cast<size_t>(d.T * d.ld), rng);
  const std::vector<float> dout = test::random_normal(static_cast<size_t>(d.T * d.H * d.D), rng);
  BlockSelection sel;
  sel.block = 32, sel.qblock = 1, sel.nqb = d.T;
  sel.offsets.push_back(0);
  for (int64_t list = 0; list < d.H * d.T; ++list) {
    if (list % d.T >= 100) sel.keys.push_back(0);  // rows 0..99 select nothing
    sel.offsets.push_back(static_cast<int64_t>(sel.keys.size()));
  }
  const int64_t hd = d.H * d.D;
  std::vector<float> out(d.T * hd), lse(d.H * d.T), dqkv(qkv.size(), 9.0f), out2(out.size()), lse2(lse.size()),
      dqkv2(qkv.size(), 9.0f);
  row_sparse_attention_forward(out.data(), lse.data(), qkv.data(), qkv.data() + hd, qkv.data() + 2 * hd, d, sel);
  row_sparse_attention_backward(dqkv.data(), dqkv.data() + hd, dqkv.data() + 2 * hd, dout.data(), out.data(),
                                lse.data(), qkv.data(), qkv.data() + hd, qkv.data() + 2 * hd, d, sel);
  block_sparse_attention_forward(out2.data(), lse2.data(), qkv.data(), qkv.data() + hd, qkv.data() + 2 * hd, d, sel);
  block_sparse_attention_backward(dqkv2.data(), dqkv2.data() + hd, dqkv2.data() + 2 * hd, dout.data(), out2.data(),
                                  lse2.data(), qkv.data(), qkv.data() + hd, qkv.data() + 2 * hd, d, sel);
  for (int64_t t = 0; t < 100; ++t) EXPECT_EQ(lse[t], kNegInf) << t;
  EXPECT_TRUE(test::all_finite(out));
  EXPECT_TRUE(test::all_finite(dqkv));
  expect_rel_close(out, out2, 1e-5, "out");
  expect_rel_close(dqkv, dqkv2, 1e-5, "dqkv");
}

TEST(RowSparseAttention, RejectsSelectionsThatAreNotPerRow) {
  AttnDims d;
  d.B = 1, d.T = 32, d.H = 1, d.D = 8, d.ld = 8, d.causal = true;
  const std::vector<float> x(32 * 8, 0.5f);
  std::vector<float> out(32 * 8), lse(32);
  const BlockSelection sel = window_selection(d, 16, 1);  // query blocks of 16 rows
  try {
    row_sparse_attention_forward(out.data(), lse.data(), x.data(), x.data(), x.data(), d, sel);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[attention.row_sparse] needs one-row query blocks (qblock 1), got qblock 0"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace sparta::ops
