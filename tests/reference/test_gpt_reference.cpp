// Compares sparta's GPT with a PyTorch float64 implementation written
// independently from the same equations (tests/reference/gpt_reference.py):
// logits, loss, every parameter gradient, and 10 AdamW steps (losses and
// final weights). Tolerances are stated next to each check; sparta runs in
// float32, so they are float32-rounding sized.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "io/safetensors.h"
#include "nn/gpt.h"
#include "nn/lm_objective.h"
#include "nn/precision.h"
#include "ops/grad_clip.h"
#include "train/lr_schedule.h"
#include "train/optimizer.h"

using namespace sparta;

namespace {
std::string g_ref_file;

int64_t meta_int(const SafetensorsFile& f, const std::string& k) { return std::stoll(f.metadata().at(k)); }
double meta_f(const SafetensorsFile& f, const std::string& k) { return std::stod(f.metadata().at(k)); }

struct Fixture {
  SafetensorsFile ref;
  GPTConfig cfg;
  int64_t B, T;
  explicit Fixture(const std::string& file) : ref(SafetensorsFile::read(file)) {
    cfg.vocab_size = meta_int(ref, "vocab_size");
    cfg.context = meta_int(ref, "context");
    cfg.n_layer = meta_int(ref, "n_layer");
    cfg.n_head = meta_int(ref, "n_head");
    cfg.d_model = meta_int(ref, "d_model");
    B = meta_int(ref, "batch");
    T = cfg.context;
  }
  void load_params(GPT& m) {
    ParamStore& P = m.params();
    for (const ParamInfo& p : P.params()) {
      const Tensor& t = ref.get(p.name, p.shape);
      std::memcpy(P.data() + p.offset, t.raw(), t.nbytes());
    }
  }
  const int32_t* tokens() { return ref.get("tokens", {B, T}, DType::I32).data<int32_t>(); }
  const int32_t* targets() { return ref.get("targets", {B, T}, DType::I32).data<int32_t>(); }
};

// max |a - b| <= atol + rtol * max |b|  — a scale-aware bound per tensor.
void expect_close(const float* a, const float* b, int64_t n, double atol, double rtol, const std::string& what) {
  double max_ref = 0, max_err = 0;
  int64_t worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(b[i])));
    double e = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (e > max_err) max_err = e, worst = i;
  }
  EXPECT_LE(max_err, atol + rtol * max_ref)
      << what << ": max error " << max_err << " at " << worst << " (sparta " << a[worst] << ", torch " << b[worst]
      << "), max |ref| " << max_ref;
}
}  // namespace

TEST(TorchReference, LogitsAndLoss) {
  Fixture f(g_ref_file);
  GPT m(f.cfg);
  GPTActivations m_acts, m_decode;
  f.load_params(m);
  const float* logits = lm_logits(m, m_acts, f.tokens(), f.B, f.T);
  const Tensor& ref = f.ref.get("logits", {f.B, f.T, f.cfg.vocab_size});
  expect_close(logits, ref.data<float>(), ref.numel(), 1e-5, 1e-5, "logits");
  float loss = lm_loss_and_gradients(m, m_acts, f.tokens(), f.targets(), f.B, f.T);
  EXPECT_NEAR(loss, f.ref.get("loss", {1}).data<float>()[0], 1e-5);
}

double max_abs_diff(const float* a, const float* b, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

// sparta in bf16 (every matrix product of the linear layers and the head in
// BF16, attention in FP32) against PyTorch's BF16 autocast of the same
// weights: both round to BF16, so both are off from the float64 truth by a
// BF16-sized error; sparta's must be no larger than autocast's (which also
// rounds the attention products) and the two must agree within BF16 error.
TEST(TorchReference, Bf16LogitsAndLossMatchTorchAutocast) {
  Fixture f(g_ref_file);
  GPTConfig c = f.cfg;
  c.precision = Precision::BF16;
  c.fp32_modules.clear();
  GPT m(c);
  f.load_params(m);
  GPTActivations acts;
  const int64_t n = f.B * f.T * f.cfg.vocab_size;
  const float* truth = f.ref.get("logits", {f.B, f.T, f.cfg.vocab_size}).data<float>();
  const float* autocast = f.ref.get("logits_bf16_autocast", {f.B, f.T, f.cfg.vocab_size}).data<float>();
  const float* logits = lm_logits(m, acts, f.tokens(), f.B, f.T);
  const double err = max_abs_diff(logits, truth, n), autocast_err = max_abs_diff(autocast, truth, n);
  EXPECT_GT(err, 1e-5) << "bf16 gave FP32 logits: the 16-bit path did not run";
  EXPECT_LE(err, 1.5 * autocast_err) << "sparta bf16 max logit error " << err << ", PyTorch autocast " << autocast_err;
  expect_close(logits, autocast, n, 0.05, 0.02, "bf16 logits vs PyTorch autocast");
  const float loss = lm_loss_and_gradients(m, acts, f.tokens(), f.targets(), f.B, f.T);
  const float autocast_loss = f.ref.get("loss_bf16_autocast", {1}).data<float>()[0];
  EXPECT_NEAR(loss, autocast_loss, 0.01 * autocast_loss);
  EXPECT_NEAR(loss, f.ref.get("loss", {1}).data<float>()[0], 0.01 * autocast_loss);
}

TEST(TorchReference, EveryParameterGradient) {
  Fixture f(g_ref_file);
  GPT m(f.cfg);
  GPTActivations m_acts, m_decode;
  f.load_params(m);
  lm_loss_and_gradients(m, m_acts, f.tokens(), f.targets(), f.B, f.T);
  ParamStore& P = m.params();
  for (const ParamInfo& p : P.params()) {
    const Tensor& g = f.ref.get("grad." + p.name, p.shape);
    expect_close(P.grad() + p.offset, g.data<float>(), p.numel, 1e-7, 1e-4, "grad." + p.name);
  }
}

TEST(TorchReference, TenAdamWSteps) {
  Fixture f(g_ref_file);
  GPT m(f.cfg);
  GPTActivations m_acts, m_decode;
  f.load_params(m);
  AdamWHyper h;
  h.beta1 = static_cast<float>(meta_f(f.ref, "beta1"));
  h.beta2 = static_cast<float>(meta_f(f.ref, "beta2"));
  h.eps = static_cast<float>(meta_f(f.ref, "eps"));
  h.weight_decay = static_cast<float>(meta_f(f.ref, "weight_decay"));
  AdamW opt(m.params(), h);
  const int64_t steps = meta_int(f.ref, "steps"), warmup = meta_int(f.ref, "warmup");
  const float lr = static_cast<float>(meta_f(f.ref, "lr")), min_ratio = static_cast<float>(meta_f(f.ref, "min_lr_ratio"));
  const double clip = meta_f(f.ref, "grad_clip");
  const float* ref_losses = f.ref.get("adamw_losses", {steps}).data<float>();
  for (int64_t s = 0; s < steps; ++s) {
    float loss = lm_loss_and_gradients(m, m_acts, f.tokens(), f.targets(), f.B, f.T);
    EXPECT_NEAR(loss, ref_losses[s], 1e-4) << "loss before step " << s + 1;
    ops::clip_grad_norm(m.params().grad(), m.params().size(), clip);
    opt.step(lr_at(s, lr, warmup, steps, min_ratio));
  }
  ParamStore& P = m.params();
  for (const ParamInfo& p : P.params()) {
    const Tensor& w = f.ref.get("after." + p.name, p.shape);
    expect_close(P.data() + p.offset, w.data<float>(), p.numel, 1e-5, 1e-4, "after." + p.name);
  }
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc < 2) {
    std::fprintf(stderr, "usage: sparta_reference_tests REFERENCE.safetensors\n");
    return 2;
  }
  g_ref_file = argv[1];
  return RUN_ALL_TESTS();
}
