// Mixed precision: the policy, the 16-bit GELU and linear forms, and a GPT in
// bf16 / fp32-fast against the same GPT in FP32.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/convert.h"
#include "core/error.h"
#include "core/rng.h"
#include "nn/activations.h"
#include "nn/gpt.h"
#include "nn/lm_objective.h"
#include "nn/precision.h"
#include "ops/gelu.h"
#include "ops/layernorm.h"
#include "ops/linear.h"
#include "train/loss_scaler.h"

using namespace sparta;

namespace {

GPTConfig small(Precision p) {
  GPTConfig c;
  c.vocab_size = 64;
  c.context = 32;
  c.n_layer = 2;
  c.n_head = 2;
  c.d_model = 64;
  c.precision = p;
  return c;
}

std::vector<int32_t> random_tokens(int64_t n, int64_t V, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<int32_t>(rng.below(V));
  return t;
}

std::vector<float> random_floats(int64_t n, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<float>(scale * rng.normal());
  return v;
}

// Copies a's weights into b (same shapes).
void copy_weights(const GPT& a, GPT& b) {
  std::copy(a.params().data(), a.params().data() + a.params().size(), b.params().data());
}

double cosine(const float* a, const float* b, int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i) ab += double(a[i]) * b[i], aa += double(a[i]) * a[i], bb += double(b[i]) * b[i];
  return ab / std::sqrt(aa * bb);
}

double max_abs_diff(const float* a, const float* b, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

}  // namespace

TEST(Precision, NamesRoundTripAndUnknownNamesAreNamed) {
  for (Precision p : {Precision::FP32, Precision::BF16, Precision::FP16, Precision::FP32Fast})
    EXPECT_EQ(parse_precision(precision_name(p)), p);
  try {
    parse_precision("bf17");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"bf17\""), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("fp32-fast"), std::string::npos) << e.what();
  }
}

TEST(Precision, GlobPatternsSelectModules) {
  EXPECT_TRUE(glob_match("head", "head"));
  EXPECT_TRUE(glob_match("h.*.mlp.*", "h.3.mlp.fc"));
  EXPECT_FALSE(glob_match("h.*.mlp.*", "h.3.attn.qkv"));
  EXPECT_TRUE(glob_match("h.?.attn.qkv", "h.0.attn.qkv"));
  EXPECT_FALSE(glob_match("h.?.attn.qkv", "h.10.attn.qkv"));
  EXPECT_TRUE(glob_match("*", "anything"));
  EXPECT_FALSE(glob_match("", "x"));
  const std::vector<std::string> keep{"head", "h.0.*"};
  EXPECT_EQ(module_precision(Precision::BF16, keep, "h.0.mlp.fc").operands, DType::F32);
  EXPECT_EQ(module_precision(Precision::BF16, keep, "h.1.mlp.fc").operands, DType::BF16);
  EXPECT_EQ(module_precision(Precision::FP32Fast, keep, "h.1.mlp.fc").math, MatmulMath::Bf16);
  EXPECT_EQ(module_precision(Precision::FP32, {}, "h.1.mlp.fc").operands, DType::F32);
  EXPECT_NO_THROW(check_fp32_modules(keep, 2));
  EXPECT_THROW(check_fp32_modules({"h.*.mlp.fc1"}, 2), Error);  // a typo matches nothing
  EXPECT_THROW(check_fp32_modules({"h.5.*"}, 2), Error);        // no layer 5
}

TEST(Precision, Bf16GeluEqualsWidenRunRound) {
  const int64_t n = 40000;  // several parallel chunks and a ragged tail
  const auto x32 = random_floats(n, 1, 3.0);
  std::vector<uint16_t> x(n), y(n);
  round_to_16bit(DType::BF16, x.data(), x32.data(), n);
  ops::gelu_forward(y.data(), x.data(), n, DType::BF16);
  std::vector<float> xw(n), ref(n);
  widen_16bit(DType::BF16, xw.data(), x.data(), n);
  ops::gelu_forward(ref.data(), xw.data(), n);
  std::vector<uint16_t> ref16(n);
  round_to_16bit(DType::BF16, ref16.data(), ref.data(), n);
  EXPECT_EQ(y, ref16);
  const auto dy = random_floats(n, 2);
  std::vector<float> dx(n), dref(n);
  ops::gelu_backward(dx.data(), dy.data(), x.data(), n, DType::BF16);
  ops::gelu_backward(dref.data(), dy.data(), xw.data(), n);
  EXPECT_EQ(dx, dref);
}

TEST(Precision, Bf16LinearMatchesTheFp32ProductOfRoundedOperands) {
  const int64_t N = 37, in = 48, out = 20;
  const auto x32 = random_floats(N * in, 3), w32 = random_floats(out * in, 4), b = random_floats(out, 5);
  std::vector<uint16_t> x(N * in), w(out * in);
  round_to_16bit(DType::BF16, x.data(), x32.data(), N * in);
  round_to_16bit(DType::BF16, w.data(), w32.data(), out * in);
  std::vector<float> xr(N * in), wr(out * in);
  widen_16bit(DType::BF16, xr.data(), x.data(), N * in);
  widen_16bit(DType::BF16, wr.data(), w.data(), out * in);
  // Forward: products of BF16 values are exact in FP32, so only the FP32
  // summation order can differ from the FP32 layer on the rounded operands.
  std::vector<float> y(N * out), yr(N * out);
  ops::linear_forward(ops::dense_output(y.data(), DType::F32, N, out), ops::dense_matrix(x.data(), DType::BF16, N, in),
                      ops::dense_matrix(w.data(), DType::BF16, out, in), b.data());
  ops::linear_forward(yr.data(), xr.data(), wr.data(), b.data(), N, in, out);
  EXPECT_LT(max_abs_diff(y.data(), yr.data(), N * out), 1e-4);
  // Backward: dy is rounded to BF16 for both products; db sums the FP32 dy.
  const auto dy = random_floats(N * out, 6);
  std::vector<uint16_t> dy16(N * out);
  round_to_16bit(DType::BF16, dy16.data(), dy.data(), N * out);
  std::vector<float> dyr(N * out);
  widen_16bit(DType::BF16, dyr.data(), dy16.data(), N * out);
  std::vector<float> dx(N * in), dw(out * in, 0.5f), db(out, 0.25f), dxr(N * in), dwr(out * in, 0.5f),
      dbr(out, 0.25f), unused(out, 0.25f);
  ops::linear_backward(dx.data(), dw.data(), db.data(), dy.data(), ops::dense_matrix(x.data(), DType::BF16, N, in),
                       ops::dense_matrix(w.data(), DType::BF16, out, in));
  ops::linear_backward(dxr.data(), dwr.data(), unused.data(), dyr.data(), xr.data(), wr.data(), N, in, out);
  ops::linear_backward(nullptr, std::vector<float>(out * in).data(), dbr.data(), dy.data(), xr.data(), wr.data(), N,
                       in, out);
  EXPECT_LT(max_abs_diff(dx.data(), dxr.data(), N * in), 1e-4);
  EXPECT_LT(max_abs_diff(dw.data(), dwr.data(), out * in), 1e-4);
  EXPECT_EQ(db, dbr);
}

// The same weights in bf16 / fp32-fast give logits, loss and gradients close
// to FP32 (BF16 keeps 8 significant bits: a relative error of ~1e-2 on
// each layer's products is expected, not 1e-6).
TEST(Precision, GptInReducedPrecisionTracksFp32) {
  const int64_t B = 2, T = 24;
  GPT ref(small(Precision::FP32));
  ref.init_weights(7);
  const auto tok = random_tokens(B * T, 64, 8), tgt = random_tokens(B * T, 64, 9);
  GPTActivations ra;
  const float ref_loss = lm_loss_and_gradients(ref, ra, tok.data(), tgt.data(), B, T);
  std::vector<float> ref_logits(lm_logits(ref, ra, tok.data(), B, T), lm_logits(ref, ra, tok.data(), B, T) + B * T * 64);
  for (Precision p : {Precision::BF16, Precision::FP32Fast}) {
    for (bool head_fp32 : {true, false}) {
      SCOPED_TRACE(std::string(precision_name(p)) + (head_fp32 ? " head fp32" : " head 16-bit"));
      GPTConfig c = small(p);
      if (!head_fp32) c.fp32_modules.clear();
      GPT m(c);
      copy_weights(ref, m);
      GPTActivations a;
      const float loss = lm_loss_and_gradients(m, a, tok.data(), tgt.data(), B, T);
      EXPECT_NEAR(loss, ref_loss, 2e-2 * ref_loss);
      EXPECT_GT(cosine(m.params().grad(), ref.params().grad(), ref.params().size()), 0.999);
      const float* logits = lm_logits(m, a, tok.data(), B, T);
      EXPECT_LT(max_abs_diff(logits, ref_logits.data(), B * T * 64), 0.05);
      EXPECT_GT(cosine(logits, ref_logits.data(), B * T * 64), 0.9999);
    }
  }
}

TEST(Precision, Bf16ActivationsTakeLessMemory) {
  GPTConfig f = small(Precision::FP32), h = small(Precision::BF16);
  const size_t fp32 = GPTActivations::bytes_for(f, 8, 32, ActivationMode::Train);
  const size_t bf16 = GPTActivations::bytes_for(h, 8, 32, ActivationMode::Train);
  EXPECT_LT(bf16, fp32);
  GPTActivations a;
  GPT m(h);
  m.init_weights(1);
  const auto tok = random_tokens(8 * 32, 64, 2);
  m.forward(a, tok.data(), 8, 32);
  EXPECT_EQ(a.bytes(), bf16);
}

// bf16 keeps each layer's attention inputs q|k|v in BF16 for backward (half
// the bytes of FP32), widened into an FP32 buffer the MLP backward's
// gradient also uses; a policy that keeps "*.attn.core" FP32 keeps them FP32.
TEST(Precision, Bf16KeepsAttentionInputsIn16Bits) {
  const int64_t B = 8, T = 32;
  GPTConfig h = small(Precision::BF16), kept = h;
  kept.fp32_modules.push_back("*.attn.core");
  const int64_t qkv = B * T * 3 * h.d_model;  // elements of one layer's q|k|v (a multiple of 32)
  const int64_t saved = GPTActivations::bytes_for(kept, B, T, ActivationMode::Train) -
                        GPTActivations::bytes_for(h, B, T, ActivationMode::Train);
  EXPECT_EQ(saved, h.n_layer * qkv * 2);
  GPT m(h);
  m.init_weights(5);
  const auto tok = random_tokens(B * T, 64, 6);
  GPTActivations a;
  m.forward(a, tok.data(), B, T);
  for (int64_t l = 0; l < h.n_layer; ++l)
    for (float x : a.layer_qkv(l)) ASSERT_EQ(x, bf16_bits_to_f32(f32_to_bf16_bits(x))) << "layer " << l;
  EXPECT_EQ(precision_summary(Precision::BF16, kept.fp32_modules, 2),
            "bf16: 8 of 9 matrix products with 16-bit operands; FP32: head; attention products BF16 in 0 of 2 layers");
  EXPECT_EQ(attention_input_type(Precision::FP16, {}, 0), DType::F16);
  EXPECT_EQ(attention_input_type(Precision::FP32Fast, {}, 0), DType::F32);
  EXPECT_TRUE(attention_bf16_products(Precision::FP32Fast, {}, 0));
  EXPECT_FALSE(attention_bf16_products(Precision::FP16, {}, 0));
  EXPECT_FALSE(attention_bf16_products(Precision::BF16, {"h.1.attn.core"}, 1));
  EXPECT_TRUE(attention_bf16_products(Precision::BF16, {"h.1.attn.core"}, 0));
}

// The window and DSA kernels with BF16 products (and, in bf16, BF16 q|k|v)
// inside the whole model: loss, logits and gradients stay close to FP32.
TEST(Precision, GptWithSparseAttentionInBf16TracksFp32) {
  const int64_t B = 2, T = 32;
  for (const char* attention : {"window", "dsa"}) {
    GPTConfig c32 = small(Precision::FP32);
    c32.attention = attention;
    c32.dsa.block = 8, c32.dsa.window = 8, c32.dsa.top_k = 8, c32.dsa.dense_len = 0, c32.dsa.keep_short = 0.25;
    GPT ref(c32);
    ref.init_weights(11);
    const auto tok = random_tokens(B * T, 64, 12), tgt = random_tokens(B * T, 64, 13);
    GPTActivations ra;
    const float ref_loss = lm_loss_and_gradients(ref, ra, tok.data(), tgt.data(), B, T);
    for (Precision p : {Precision::BF16, Precision::FP32Fast}) {
      SCOPED_TRACE(std::string(attention) + " " + std::string(precision_name(p)));
      GPTConfig c = c32;
      c.precision = p;
      c.fp32_modules.clear();
      GPT m(c);
      copy_weights(ref, m);
      GPTActivations a;
      const float loss = lm_loss_and_gradients(m, a, tok.data(), tgt.data(), B, T);
      EXPECT_NE(loss, ref_loss);
      EXPECT_NEAR(loss, ref_loss, 2e-2 * ref_loss);
      EXPECT_GT(cosine(m.params().grad(), ref.params().grad(), ref.params().size()), 0.999);
    }
  }
}

// The 16-bit weight copies follow the master weights: a change made through
// the ParamStore shows in the next forward.
TEST(Precision, WeightCopiesFollowTheMasterWeights) {
  GPT m(small(Precision::BF16));
  m.init_weights(3);
  const auto tok = random_tokens(32, 64, 4);
  GPTActivations a;
  std::vector<float> before(lm_logits(m, a, tok.data(), 1, 32), lm_logits(m, a, tok.data(), 1, 32) + 32 * 64);
  float* w = m.params().ptr("h.1.mlp.fc.weight");
  for (int i = 0; i < 64; ++i) w[i] += 1.0f;
  const float* after = lm_logits(m, a, tok.data(), 1, 32);
  EXPECT_GT(max_abs_diff(after, before.data(), 32 * 64), 1e-3);
  // And decoding with a cache sees the same weights as the batch forward.
  GPT fresh(small(Precision::BF16));
  copy_weights(m, fresh);
  GPTActivations b, d;
  const float* full = lm_logits(fresh, b, tok.data(), 1, 32);
  std::vector<float> last(full + 31 * 64, full + 32 * 64);
  KVCache cache = fresh.make_cache(32);
  const float* dec = fresh.forward_cached(cache, d, tok.data(), 32);
  EXPECT_LT(max_abs_diff(dec, last.data(), 64), 1e-5);
}

TEST(LossScaler, FollowsGradScalerSemantics) {
  LossScaler s(LossScalerConfig{65536.0, 2.0, 0.5, 3});
  EXPECT_EQ(s.scale(), 65536.0);
  s.update(true);  // overflow: halve, counter reset
  EXPECT_EQ(s.scale(), 32768.0);
  s.update(false);
  s.update(false);
  EXPECT_EQ(s.scale(), 32768.0);
  EXPECT_EQ(s.good_steps(), 2);
  s.update(true);  // an overflow resets the run of clean steps
  EXPECT_EQ(s.scale(), 16384.0);
  for (int i = 0; i < 3; ++i) s.update(false);
  EXPECT_EQ(s.scale(), 32768.0);  // grows after growth_interval clean steps
  EXPECT_EQ(s.good_steps(), 0);
  s.restore(8.0, 2);
  s.update(false);
  EXPECT_EQ(s.scale(), 16.0);
  EXPECT_THROW(s.restore(0.0, 0), Error);
  std::vector<float> g{65536.0f, -32768.0f, 0.0f};
  EXPECT_TRUE(LossScaler::unscale(g.data(), 3, 65536.0));
  EXPECT_EQ(g, (std::vector<float>{1.0f, -0.5f, 0.0f}));
  g = {1.0f, std::numeric_limits<float>::infinity(), 2.0f};
  EXPECT_FALSE(LossScaler::unscale(g.data(), 3, 2.0));
  g = {std::nanf(""), 1.0f};
  EXPECT_FALSE(LossScaler::unscale(g.data(), 2, 2.0));
}

// Small gradients (here: the loss weighted by 1e-5, as an auxiliary loss
// would be) fall below FP16's smallest subnormal (~6e-8) inside the 16-bit
// products and come out as zeros; scaled by 2^16 first and divided again in
// FP32 afterwards, they match the FP32 gradients.
TEST(Precision, Fp16GradientsUnderflowWithoutLossScaling) {
  const int64_t B = 2, T = 24;
  const double weight = 1e-5;
  GPT ref(small(Precision::FP32));
  ref.init_weights(11);
  const auto tok = random_tokens(B * T, 64, 12), tgt = random_tokens(B * T, 64, 13);
  GPTActivations ra;
  lm_loss_and_gradients(ref, ra, tok.data(), tgt.data(), B, T, 0, 1, weight);
  GPTConfig c = small(Precision::FP16);
  c.fp32_modules.clear();
  GPT m(c);
  copy_weights(ref, m);
  GPTActivations a;
  // Only the weights of the 16-bit products lose their gradients: the
  // embedding, LayerNorm and bias gradients are formed in FP32.
  const ParamInfo& w = m.params().info("h.0.attn.qkv.weight");
  const float* g_ref = ref.params().grad() + w.offset;
  auto zeros_where_fp32_is_not = [&](const float* g) {
    int64_t z = 0;
    for (int64_t i = 0; i < w.numel; ++i) z += g[i] == 0.0f && g_ref[i] != 0.0f;
    return static_cast<double>(z) / static_cast<double>(w.numel);
  };
  lm_loss_and_gradients(m, a, tok.data(), tgt.data(), B, T, 0, 1, weight);
  const float* g = m.params().grad() + w.offset;
  const double lost = zeros_where_fp32_is_not(g);
  const double cos_unscaled = cosine(g, g_ref, w.numel);
  EXPECT_GT(lost, 0.5) << "most small gradients should vanish without scaling";
  EXPECT_LT(cos_unscaled, 0.9);
  const double scale = 65536.0;
  lm_loss_and_gradients(m, a, tok.data(), tgt.data(), B, T, 0, 1, weight * scale);
  ASSERT_TRUE(LossScaler::unscale(m.params().grad(), m.params().size(), scale));
  EXPECT_LT(zeros_where_fp32_is_not(g), 0.01);
  EXPECT_GT(cosine(g, g_ref, w.numel), 0.999);
  EXPECT_GT(cosine(m.params().grad(), ref.params().grad(), ref.params().size()), 0.999);
  // Scaled so far that a 16-bit value passes 65504, the gradients overflow:
  // the scaler's signal to skip the step and back off.
  lm_loss_and_gradients(m, a, tok.data(), tgt.data(), B, T, 0, 1, 1e12);
  EXPECT_FALSE(LossScaler::unscale(m.params().grad(), m.params().size(), 1e12));
}

// Loss scaling must scale every gradient, the DSA scorer loss's included:
// that one is formed inside the attention backward, outside dL/dlogits, and
// gets the scale through GPT::backward → AttnDims::aux_grad_scale. In FP32 the
// scaled gradients, unscaled, are the S = 1 ones.
TEST(Precision, LossScaleReachesTheDsaScorerLoss) {
  const int64_t B = 2, T = 64;
  GPTConfig c = small(Precision::FP32);
  c.context = T;
  c.attention = "dsa";
  c.dsa.block = 8, c.dsa.window = 8, c.dsa.top_k = 8, c.dsa.keep_short = 0.3, c.dsa.keep_long = 0.3;
  c.dsa.dense_len = 0;  // select at this short T (2 of up to 7 far blocks)
  c.dsa.scorer_loss = 1.0;
  GPTConfig off = c;
  off.dsa.scorer_loss = 0.0;
  GPT m(c), m_off(off);
  m.init_weights(31);
  // Peaked attention: at init (q·k ≈ 0) the masses already match the scores
  // and the scorer loss has next to no gradient.
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const ParamInfo& w = m.params().info(cat("h.", l, ".attn.qkv.weight"));
    float* x = m.params().data() + w.offset;
    for (int64_t i = 0; i < w.numel; ++i) x[i] *= 25.0f;
  }
  copy_weights(m, m_off);
  const auto tok = random_tokens(B * T, 64, 32), tgt = random_tokens(B * T, 64, 33);
  const int64_t n = m.params().size();
  GPTActivations a, a_off;
  lm_loss_and_gradients(m, a, tok.data(), tgt.data(), B, T);
  const std::vector<float> want(m.params().grad(), m.params().grad() + n);
  lm_loss_and_gradients(m_off, a_off, tok.data(), tgt.data(), B, T);
  const auto max_diff = [&](const float* g) {
    double d = 0.0;
    for (int64_t i = 0; i < n; ++i) d = std::max(d, std::fabs(double(g[i]) - want[i]));
    return d;
  };
  double scale = 0.0;
  for (float g : want) scale = std::max(scale, std::fabs(double(g)));
  EXPECT_GT(max_diff(m_off.params().grad()), 1e-3 * scale) << "the scorer loss barely moves the gradients";
  for (double S : {65536.0, 3000.0}) {
    lm_loss_and_gradients(m, a, tok.data(), tgt.data(), B, T, 0, 1, S);
    ASSERT_TRUE(LossScaler::unscale(m.params().grad(), n, S));
    EXPECT_LE(max_diff(m.params().grad()), 1e-5 * scale) << "S=" << S;
  }
}

// The fused LayerNorm + rounding kernel is exactly the unfused reference:
// LayerNorm in FP32, then round_to_16bit (and the same saved statistics).
TEST(Precision, FusedLayerNormTo16BitEqualsNormaliseThenRound) {
  for (DType t : {DType::BF16, DType::F16}) {
    for (const auto& [N, C] : {std::pair<int64_t, int64_t>{3, 7}, {257, 384}, {1030, 64}}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + " N=" + std::to_string(N) + " C=" + std::to_string(C));
      const auto x = random_floats(N * C, 21, 2.0), w = random_floats(C, 22), b = random_floats(C, 23);
      std::vector<float> y32(N * C), mean(N), rstd(N), mean16(N), rstd16(N);
      ops::layernorm_forward(y32.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
      std::vector<uint16_t> ref(N * C), fused(N * C);
      round_to_16bit(t, ref.data(), y32.data(), N * C);
      ops::layernorm_forward(fused.data(), t, mean16.data(), rstd16.data(), x.data(), w.data(), b.data(), N, C,
                             1e-5f);
      EXPECT_EQ(fused, ref);
      EXPECT_EQ(mean16, mean);
      EXPECT_EQ(rstd16, rstd);
    }
  }
  std::vector<float> x(4, 1.0f), w(4, 1.0f), b(4, 0.0f), m(1), r(1);
  std::vector<uint16_t> y(4);
  EXPECT_THROW(ops::layernorm_forward(y.data(), DType::F32, m.data(), r.data(), x.data(), w.data(), b.data(), 1, 4,
                                      1e-5f),
               Error);
}

// The fused residual add + LayerNorm equals the unfused add, LayerNorm and
// rounding, bit for bit, in every output type.
TEST(Precision, FusedResidualLayerNormEqualsAddThenNormalise) {
  for (DType t : {DType::F32, DType::BF16, DType::F16}) {
    for (const auto& [N, C] : {std::pair<int64_t, int64_t>{3, 7}, {513, 384}}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + " N=" + std::to_string(N) + " C=" + std::to_string(C));
      const auto x = random_floats(N * C, 31, 2.0), r = random_floats(N * C, 32), w = random_floats(C, 33),
                 b = random_floats(C, 34);
      std::vector<float> sum_ref(N * C), y32(N * C), mean(N), rstd(N);
      for (int64_t i = 0; i < N * C; ++i) sum_ref[i] = x[i] + r[i];
      ops::layernorm_forward(y32.data(), mean.data(), rstd.data(), sum_ref.data(), w.data(), b.data(), N, C, 1e-5f);
      std::vector<float> sum(N * C), mean_f(N), rstd_f(N), y_f32(N * C);
      std::vector<uint16_t> y_f16(N * C), ref16(N * C);
      void* y = t == DType::F32 ? static_cast<void*>(y_f32.data()) : static_cast<void*>(y_f16.data());
      ops::residual_layernorm_forward(sum.data(), y, t, mean_f.data(), rstd_f.data(), x.data(), r.data(), w.data(),
                                      b.data(), N, C, 1e-5f);
      EXPECT_EQ(sum, sum_ref);
      EXPECT_EQ(mean_f, mean);
      EXPECT_EQ(rstd_f, rstd);
      if (t == DType::F32) {
        EXPECT_EQ(y_f32, y32);
      } else {
        round_to_16bit(t, ref16.data(), y32.data(), N * C);
        EXPECT_EQ(y_f16, ref16);
      }
    }
  }
}
