#include "nn/gpt.h"

#include <omp.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/gemm.h"
#include "core/rng.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/gelu.h"
#include "ops/layernorm.h"
#include "ops/linear.h"
#include "ops/rope.h"
#include "ops/softmax_xent.h"

namespace sparta {

namespace {
std::string L(int64_t i, const char* rest) { return "h." + std::to_string(i) + "." + rest; }

// out = a + b, the residual connection (one pass instead of copy + add).
void add_into(float* out, const float* a, const float* b, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}
}  // namespace

struct GPT::Acts {
  std::vector<Tensor> owned;
  float* alloc(int64_t n) {
    owned.push_back(Tensor::empty({n}));
    return owned.back().data<float>();
  }
  size_t bytes() const {
    size_t b = 0;
    for (const auto& t : owned) b += t.nbytes();
    return b;
  }
  // Saved for backward, per layer. res[l] is the input of block l, res[L] the final residual.
  std::vector<float*> res, res_mid, ln1, ln1_mean, ln1_rstd, qkv, att, lse, ln2, ln2_mean, ln2_rstd, fc;
  std::vector<std::unique_ptr<AttnSaved>> attn_saved;  // what each layer's attention keeps for backward
  float *lnf = nullptr, *lnf_mean = nullptr, *lnf_rstd = nullptr, *logits = nullptr;
  // Scratch (not saved): block outputs before the residual add, GELU output,
  // and the gradient buffers of backward.
  float *tmp = nullptr, *gelu = nullptr, *dres = nullptr, *dln = nullptr, *datt = nullptr, *dqkv = nullptr,
        *dfc = nullptr;
};

void GPT::for_each_parameter(const GPTConfig& cfg,
                             const std::function<void(const std::string&, const Shape&, bool)>& fn) {
  SPARTA_CHECK(cfg.vocab_size >= 2, "[gpt] vocab_size must be >= 2, got ", cfg.vocab_size);
  SPARTA_CHECK(cfg.n_layer >= 1 && cfg.n_head >= 1 && cfg.d_model >= 1 && cfg.context >= 1,
               "[gpt] n_layer, n_head, d_model and context must be positive");
  SPARTA_CHECK(cfg.d_model % cfg.n_head == 0, "[gpt] n_head (", cfg.n_head, ") must divide d_model (", cfg.d_model,
               ")");
  SPARTA_CHECK((cfg.d_model / cfg.n_head) % 2 == 0, "[gpt] head dimension ", cfg.d_model / cfg.n_head,
               " must be even for RoPE");
  const int64_t V = cfg.vocab_size, d = cfg.d_model;
  fn("wte", {V, d}, true);
  for (int64_t i = 0; i < cfg.n_layer; ++i) {
    fn(L(i, "ln1.weight"), {d}, false);
    fn(L(i, "ln1.bias"), {d}, false);
    fn(L(i, "attn.qkv.weight"), {3 * d, d}, true);
    fn(L(i, "attn.qkv.bias"), {3 * d}, false);
    fn(L(i, "attn.proj.weight"), {d, d}, true);
    fn(L(i, "attn.proj.bias"), {d}, false);
    fn(L(i, "ln2.weight"), {d}, false);
    fn(L(i, "ln2.bias"), {d}, false);
    fn(L(i, "mlp.fc.weight"), {4 * d, d}, true);
    fn(L(i, "mlp.fc.bias"), {4 * d}, false);
    fn(L(i, "mlp.proj.weight"), {d, 4 * d}, true);
    fn(L(i, "mlp.proj.bias"), {d}, false);
  }
  fn("ln_f.weight", {d}, false);
  fn("ln_f.bias", {d}, false);
}

GPT::GPT(const GPTConfig& cfg) : cfg_(cfg) {
  for_each_parameter(cfg, [&](const std::string& name, const Shape& shape, bool decay) {
    params_.declare(name, shape, decay);
  });
  params_.finalize();
  attn_ = make_attention(cfg.attention, cfg.dsa);
}

void GPT::init_weights(uint64_t seed) {
  Rng rng(seed);
  const double proj_std = 0.02 / std::sqrt(2.0 * static_cast<double>(cfg_.n_layer));
  for (const ParamInfo& p : params_.params()) {
    float* w = params_.data() + p.offset;
    const std::string& n = p.name;
    auto ends_with = [&](const char* suf) {
      size_t k = std::strlen(suf);
      return n.size() >= k && n.compare(n.size() - k, k, suf) == 0;
    };
    if (ends_with(".bias")) {
      std::fill(w, w + p.numel, 0.0f);
    } else if (n.find("ln") != std::string::npos && ends_with(".weight") && p.shape.size() == 1) {
      std::fill(w, w + p.numel, 1.0f);
    } else {
      double std = ends_with("proj.weight") ? proj_std : 0.02;
      for (int64_t i = 0; i < p.numel; ++i) w[i] = static_cast<float>(std * rng.normal());
    }
  }
}

void GPT::ensure_acts(int64_t B, int64_t T) {
  SPARTA_CHECK(B >= 1 && T >= 1, "[gpt] batch and sequence length must be positive, got B=", B, " T=", T);
  SPARTA_CHECK(T <= cfg_.context, "[gpt] sequence length ", T, " exceeds the model context ", cfg_.context);
  if (acts_ && B * T <= acts_B_ * acts_T_ && B <= acts_B_ && T <= acts_T_) return;
  acts_.reset();  // free the old set before allocating the new one
  auto a = std::make_shared<Acts>();
  const int64_t N = B * T, d = cfg_.d_model, Ly = cfg_.n_layer, H = cfg_.n_head, V = cfg_.vocab_size;
  for (int64_t l = 0; l <= Ly; ++l) a->res.push_back(a->alloc(N * d));
  a->attn_saved.resize(static_cast<size_t>(Ly));
  for (int64_t l = 0; l < Ly; ++l) {
    a->res_mid.push_back(a->alloc(N * d));
    a->ln1.push_back(a->alloc(N * d));
    a->ln1_mean.push_back(a->alloc(N));
    a->ln1_rstd.push_back(a->alloc(N));
    a->qkv.push_back(a->alloc(N * 3 * d));
    a->att.push_back(a->alloc(N * d));
    a->lse.push_back(a->alloc(B * H * T));
    a->ln2.push_back(a->alloc(N * d));
    a->ln2_mean.push_back(a->alloc(N));
    a->ln2_rstd.push_back(a->alloc(N));
    a->fc.push_back(a->alloc(N * 4 * d));
  }
  a->lnf = a->alloc(N * d);
  a->lnf_mean = a->alloc(N);
  a->lnf_rstd = a->alloc(N);
  a->logits = a->alloc(N * V);
  a->tmp = a->alloc(N * d);
  a->gelu = a->alloc(N * 4 * d);
  a->dres = a->alloc(N * d);
  a->dln = a->alloc(N * d);
  a->datt = a->alloc(N * d);
  a->dqkv = a->alloc(N * 3 * d);
  a->dfc = a->alloc(N * 4 * d);
  acts_ = a;
  acts_B_ = B;
  acts_T_ = T;
}

size_t GPT::activation_bytes() const {
  return (acts_ ? acts_->bytes() : 0) + (decode_acts_ ? decode_acts_->bytes() : 0);
}

AttnDims GPT::layer_dims(int64_t B, int64_t T, int64_t layer, uint64_t selection_seed) const {
  const int64_t d = cfg_.d_model, H = cfg_.n_head;
  AttnDims dims{B, T, H, d / H, 3 * d, true};
  // Each layer explores differently; a zero result is bumped so that a
  // non-zero seed always means "explore".
  if (selection_seed != 0) dims.selection_seed = (selection_seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(layer)) | 1;
  return dims;
}

void GPT::forward(const int32_t* tokens, int64_t B, int64_t T, uint64_t selection_seed) {
  ensure_acts(B, T);
  Acts& a = *acts_;
  ParamStore& P = params_;
  const int64_t N = B * T, d = cfg_.d_model, H = cfg_.n_head, D = d / H, V = cfg_.vocab_size;
  const float eps = cfg_.ln_eps;
  ops::embedding_forward(a.res[0], tokens, P.ptr("wte"), N, V, d);
  for (int64_t l = 0; l < cfg_.n_layer; ++l) {
    const AttnDims dims = layer_dims(B, T, l, selection_seed);
    ops::layernorm_forward(a.ln1[l], a.ln1_mean[l], a.ln1_rstd[l], a.res[l], P.ptr(L(l, "ln1.weight")),
                           P.ptr(L(l, "ln1.bias")), N, d, eps);
    ops::linear_forward(a.qkv[l], a.ln1[l], P.ptr(L(l, "attn.qkv.weight")), P.ptr(L(l, "attn.qkv.bias")), N, d,
                        3 * d);
    ops::rope_forward(a.qkv[l], B, T, H, D, 3 * d, 0, cfg_.rope_base, cfg_.rope_dims);      // q
    ops::rope_forward(a.qkv[l] + d, B, T, H, D, 3 * d, 0, cfg_.rope_base, cfg_.rope_dims);  // k
    attn_->forward(a.att[l], a.lse[l], a.qkv[l], a.qkv[l] + d, a.qkv[l] + 2 * d, dims, &a.attn_saved[l]);
    ops::linear_forward(a.tmp, a.att[l], P.ptr(L(l, "attn.proj.weight")), P.ptr(L(l, "attn.proj.bias")), N, d, d);
    add_into(a.res_mid[l], a.res[l], a.tmp, N * d);
    ops::layernorm_forward(a.ln2[l], a.ln2_mean[l], a.ln2_rstd[l], a.res_mid[l], P.ptr(L(l, "ln2.weight")),
                           P.ptr(L(l, "ln2.bias")), N, d, eps);
    ops::linear_forward(a.fc[l], a.ln2[l], P.ptr(L(l, "mlp.fc.weight")), P.ptr(L(l, "mlp.fc.bias")), N, d, 4 * d);
    ops::gelu_forward(a.gelu, a.fc[l], N * 4 * d);
    ops::linear_forward(a.tmp, a.gelu, P.ptr(L(l, "mlp.proj.weight")), P.ptr(L(l, "mlp.proj.bias")), N, 4 * d, d);
    add_into(a.res[l + 1], a.res_mid[l], a.tmp, N * d);
  }
  const int64_t Ly = cfg_.n_layer;
  ops::layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, a.res[Ly], P.ptr("ln_f.weight"), P.ptr("ln_f.bias"), N, d,
                         eps);
  // Tied head: logits = lnf · wteᵀ.
  sgemm(false, true, N, V, d, 1.0f, a.lnf, d, P.ptr("wte"), d, 0.0f, a.logits, V);
}

void GPT::backward(const int32_t* tokens, int64_t B, int64_t T, uint64_t selection_seed) {
  Acts& a = *acts_;
  ParamStore& P = params_;
  const int64_t N = B * T, d = cfg_.d_model, H = cfg_.n_head, D = d / H, V = cfg_.vocab_size;
  // a.logits holds dL/dlogits here (written in place by the fused loss).
  const float* dlogits = a.logits;
  sgemm(false, false, N, d, V, 1.0f, dlogits, V, P.ptr("wte"), d, 0.0f, a.dln, d);
  sgemm(true, false, V, d, N, 1.0f, dlogits, V, a.lnf, d, 1.0f, P.grad_ptr("wte"), d);
  std::memset(a.dres, 0, sizeof(float) * N * d);
  const int64_t Ly = cfg_.n_layer;
  ops::layernorm_backward(a.dres, P.grad_ptr("ln_f.weight"), P.grad_ptr("ln_f.bias"), a.dln, a.res[Ly],
                          P.ptr("ln_f.weight"), a.lnf_mean, a.lnf_rstd, N, d);
  for (int64_t l = Ly - 1; l >= 0; --l) {
    const AttnDims dims = layer_dims(B, T, l, selection_seed);
    // dres = dL/d res[l+1] = dL/d(res_mid + mlp_out)
    ops::gelu_forward(a.gelu, a.fc[l], N * 4 * d);  // recomputed: cheaper than keeping 4·N·d floats per layer
    ops::linear_backward(a.dfc, P.grad_ptr(L(l, "mlp.proj.weight")), P.grad_ptr(L(l, "mlp.proj.bias")), a.dres,
                         a.gelu, P.ptr(L(l, "mlp.proj.weight")), N, 4 * d, d);
    ops::gelu_backward(a.dfc, a.dfc, a.fc[l], N * 4 * d);
    ops::linear_backward(a.dln, P.grad_ptr(L(l, "mlp.fc.weight")), P.grad_ptr(L(l, "mlp.fc.bias")), a.dfc, a.ln2[l],
                         P.ptr(L(l, "mlp.fc.weight")), N, d, 4 * d);
    ops::layernorm_backward(a.dres, P.grad_ptr(L(l, "ln2.weight")), P.grad_ptr(L(l, "ln2.bias")), a.dln,
                            a.res_mid[l], P.ptr(L(l, "ln2.weight")), a.ln2_mean[l], a.ln2_rstd[l], N, d);
    // dres = dL/d res_mid[l]
    ops::linear_backward(a.datt, P.grad_ptr(L(l, "attn.proj.weight")), P.grad_ptr(L(l, "attn.proj.bias")), a.dres,
                         a.att[l], P.ptr(L(l, "attn.proj.weight")), N, d, d);
    attn_->backward(a.dqkv, a.dqkv + d, a.dqkv + 2 * d, a.datt, a.att[l], a.lse[l], a.qkv[l], a.qkv[l] + d,
                    a.qkv[l] + 2 * d, dims, a.attn_saved[l].get());
    ops::rope_backward(a.dqkv, B, T, H, D, 3 * d, 0, cfg_.rope_base, cfg_.rope_dims);
    ops::rope_backward(a.dqkv + d, B, T, H, D, 3 * d, 0, cfg_.rope_base, cfg_.rope_dims);
    ops::linear_backward(a.dln, P.grad_ptr(L(l, "attn.qkv.weight")), P.grad_ptr(L(l, "attn.qkv.bias")), a.dqkv,
                         a.ln1[l], P.ptr(L(l, "attn.qkv.weight")), N, d, 3 * d);
    ops::layernorm_backward(a.dres, P.grad_ptr(L(l, "ln1.weight")), P.grad_ptr(L(l, "ln1.bias")), a.dln, a.res[l],
                            P.ptr(L(l, "ln1.weight")), a.ln1_mean[l], a.ln1_rstd[l], N, d);
    // dres = dL/d res[l]
  }
  ops::embedding_backward(P.grad_ptr("wte"), a.dres, tokens, N, V, d);
}

float GPT::forward_backward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T) {
  forward(tokens, B, T, selection_seed_);
  const int64_t N = B * T;
  int64_t counted = 0;
  for (int64_t i = 0; i < N; ++i) counted += targets[i] >= 0;
  SPARTA_CHECK(counted > 0, "[gpt] the batch has no target tokens (all targets are ignored)");
  params_.zero_grad();
  int64_t count = 0;
  double sum = ops::softmax_xent_forward_backward(acts_->logits, acts_->logits, targets, N, cfg_.vocab_size,
                                                  1.0f / static_cast<float>(counted), &count);
  backward(tokens, B, T, selection_seed_);
  return static_cast<float>(sum / static_cast<double>(count));
}

double GPT::forward_loss(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T, int64_t* count) {
  forward(tokens, B, T);
  return ops::softmax_xent_forward(nullptr, acts_->logits, targets, B * T, cfg_.vocab_size, count);
}

const float* GPT::forward_logits(const int32_t* tokens, int64_t B, int64_t T) {
  forward(tokens, B, T);
  return acts_->logits;
}

const float* GPT::layer_qkv(int64_t layer) const {
  SPARTA_CHECK(acts_, "[gpt] layer_qkv: no forward pass has run yet");
  SPARTA_CHECK(layer >= 0 && layer < cfg_.n_layer, "[gpt] layer_qkv: layer ", layer, " is outside [0, ",
               cfg_.n_layer, ")");
  return acts_->qkv[static_cast<size_t>(layer)];
}

KVCache GPT::make_cache(int64_t max_len) const {
  SPARTA_CHECK(max_len >= 1, "[gpt] KV cache length must be positive");
  KVCache cache(cfg_.n_layer, max_len, cfg_.n_head, cfg_.d_model / cfg_.n_head);
  for (int64_t l = 0; l < cfg_.n_layer; ++l) cache.set_memo(l, attn_->make_decode_memo());
  return cache;
}

const float* GPT::forward_cached(KVCache& cache, const int32_t* tokens, int64_t n) {
  const int64_t pos = cache.len(), d = cfg_.d_model, H = cfg_.n_head, D = d / H, V = cfg_.vocab_size;
  SPARTA_CHECK(n >= 1, "[gpt] forward_cached needs at least one token");
  SPARTA_CHECK(pos + n <= cache.max_len(), "[gpt] KV cache full: ", pos, " + ", n, " tokens exceed its length ",
               cache.max_len());
  if (!decode_acts_) {
    // One sequence of up to `context` new tokens; logits only for the last.
    auto a = std::make_shared<Acts>();
    const int64_t N = cfg_.context;
    a->res.push_back(a->alloc(N * d));
    a->ln1.push_back(a->alloc(N * d));
    a->ln1_mean.push_back(a->alloc(N));
    a->ln1_rstd.push_back(a->alloc(N));
    a->qkv.push_back(a->alloc(N * 3 * d));
    a->att.push_back(a->alloc(N * d));
    a->lse.push_back(a->alloc(H * N));
    a->fc.push_back(a->alloc(N * 4 * d));
    a->tmp = a->alloc(N * d);
    a->logits = a->alloc(V);
    decode_acts_ = a;
  }
  SPARTA_CHECK(n <= cfg_.context, "[gpt] cannot feed ", n, " tokens at once (context ", cfg_.context, ")");
  Acts& a = *decode_acts_;
  ParamStore& P = params_;
  const float eps = cfg_.ln_eps;
  float* x = a.res[0];
  ops::embedding_forward(x, tokens, P.ptr("wte"), n, V, d);
  for (int64_t l = 0; l < cfg_.n_layer; ++l) {
    ops::layernorm_forward(a.ln1[0], a.ln1_mean[0], a.ln1_rstd[0], x, P.ptr(L(l, "ln1.weight")),
                           P.ptr(L(l, "ln1.bias")), n, d, eps);
    float* qkv = a.qkv[0];
    ops::linear_forward(qkv, a.ln1[0], P.ptr(L(l, "attn.qkv.weight")), P.ptr(L(l, "attn.qkv.bias")), n, d, 3 * d);
    ops::rope_forward(qkv, 1, n, H, D, 3 * d, pos, cfg_.rope_base, cfg_.rope_dims);
    ops::rope_forward(qkv + d, 1, n, H, D, 3 * d, pos, cfg_.rope_base, cfg_.rope_dims);
    float* kc = cache.k(l);
    float* vc = cache.v(l);
    for (int64_t t = 0; t < n; ++t) {
      std::memcpy(kc + (pos + t) * d, qkv + t * 3 * d + d, sizeof(float) * d);
      std::memcpy(vc + (pos + t) * d, qkv + t * 3 * d + 2 * d, sizeof(float) * d);
    }
    if (pos == 0 && n > 1) {
      // Prefill from an empty cache: one whole-sequence call.
      AttnDims dims{1, n, H, D, 3 * d, true};
      attn_->forward(a.att[0], a.lse[0], qkv, qkv + d, qkv + 2 * d, dims);
    } else {
      for (int64_t t = 0; t < n; ++t)
        attn_->decode(a.att[0] + t * d, qkv + t * 3 * d, kc, vc, pos + t + 1, H, D, cache.memo(l));
    }
    ops::linear_forward(a.tmp, a.att[0], P.ptr(L(l, "attn.proj.weight")), P.ptr(L(l, "attn.proj.bias")), n, d, d);
    ops::add_inplace(x, a.tmp, n * d);
    ops::layernorm_forward(a.ln1[0], a.ln1_mean[0], a.ln1_rstd[0], x, P.ptr(L(l, "ln2.weight")),
                           P.ptr(L(l, "ln2.bias")), n, d, eps);
    ops::linear_forward(a.fc[0], a.ln1[0], P.ptr(L(l, "mlp.fc.weight")), P.ptr(L(l, "mlp.fc.bias")), n, d, 4 * d);
    ops::gelu_forward(a.fc[0], a.fc[0], n * 4 * d);
    ops::linear_forward(a.tmp, a.fc[0], P.ptr(L(l, "mlp.proj.weight")), P.ptr(L(l, "mlp.proj.bias")), n, 4 * d, d);
    ops::add_inplace(x, a.tmp, n * d);
  }
  cache.set_len(pos + n);
  const float* last = x + (n - 1) * d;
  ops::layernorm_forward(a.ln1[0], a.ln1_mean[0], a.ln1_rstd[0], last, P.ptr("ln_f.weight"), P.ptr("ln_f.bias"), 1,
                         d, eps);
  sgemm(false, true, 1, V, d, 1.0f, a.ln1[0], d, P.ptr("wte"), d, 0.0f, a.logits, V);
  return a.logits;
}

}  // namespace sparta
