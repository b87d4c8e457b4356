#include "nn/blocks.h"

#include <cstring>

#include "core/error.h"
#include "core/gemm.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/gelu.h"
#include "ops/layernorm.h"
#include "ops/linear.h"
#include "ops/rope.h"

namespace sparta {

namespace {

// out = a + b, the residual connection (one pass instead of copy + add).
void add_into(float* out, const float* a, const float* b, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

LayerNormParams bind_layernorm(ParamStore& s, const std::string& name) {
  return {bind_param(s, name + ".weight"), bind_param(s, name + ".bias")};
}

LinearParams bind_linear(ParamStore& s, const std::string& name) {
  return {bind_param(s, name + ".weight"), bind_param(s, name + ".bias")};
}

void declare_layernorm(const DeclareParam& declare, const std::string& name, int64_t d) {
  declare(name + ".weight", {d}, false);
  declare(name + ".bias", {d}, false);
}

void declare_linear(const DeclareParam& declare, const std::string& name, int64_t in, int64_t out) {
  declare(name + ".weight", {out, in}, true);
  declare(name + ".bias", {out}, false);
}

void linear_fwd(float* y, const float* x, const LinearParams& p, int64_t N, int64_t in, int64_t out) {
  ops::linear_forward(y, x, p.weight.w, p.bias.w, N, in, out);
}

void linear_bwd(float* dx, const float* dy, const float* x, const LinearParams& p, int64_t N, int64_t in,
                int64_t out) {
  ops::linear_backward(dx, p.weight.g, p.bias.g, dy, x, p.weight.w, N, in, out);
}

}  // namespace

ParamView bind_param(ParamStore& store, const std::string& name) {
  const ParamInfo& info = store.info(name);
  return {store.data() + info.offset, store.grad() + info.offset};
}

// ---- TokenEmbedding ----

void TokenEmbedding::declare(const DeclareParam& declare, int64_t vocab, int64_t d) {
  declare("wte", {vocab, d}, true);
}

TokenEmbedding::TokenEmbedding(ParamStore& store, int64_t vocab, int64_t d)
    : wte_(bind_param(store, "wte")), vocab_(vocab), d_(d) {}

void TokenEmbedding::forward(float* x, const int32_t* tokens, int64_t N) const {
  ops::embedding_forward(x, tokens, wte_.w, N, vocab_, d_);
}

void TokenEmbedding::backward(const float* dx, const int32_t* tokens, int64_t N) const {
  ops::embedding_backward(wte_.g, dx, tokens, N, vocab_, d_);
}

// ---- TransformerBlock ----

void TransformerBlock::declare(const DeclareParam& declare, const std::string& prefix, int64_t d) {
  declare_layernorm(declare, prefix + "ln1", d);
  declare_linear(declare, prefix + "attn.qkv", d, 3 * d);
  declare_linear(declare, prefix + "attn.proj", d, d);
  declare_layernorm(declare, prefix + "ln2", d);
  declare_linear(declare, prefix + "mlp.fc", d, 4 * d);
  declare_linear(declare, prefix + "mlp.proj", 4 * d, d);
}

TransformerBlock::TransformerBlock(ParamStore& store, const std::string& prefix, const BlockShape& shape)
    : ln1_(bind_layernorm(store, prefix + "ln1")),
      ln2_(bind_layernorm(store, prefix + "ln2")),
      qkv_(bind_linear(store, prefix + "attn.qkv")),
      attn_proj_(bind_linear(store, prefix + "attn.proj")),
      fc_(bind_linear(store, prefix + "mlp.fc")),
      mlp_proj_(bind_linear(store, prefix + "mlp.proj")),
      shape_(shape) {}

void TransformerBlock::attend(BlockActivations& a, const AttentionSource& src, int64_t pos0) const {
  const AttnDims& dims = src.dims;
  const int64_t d = shape_.d_model, H = dims.H, D = dims.D, n = dims.T;
  float* qkv = a.qkv;
  if (src.cache == nullptr) {
    src.attention->forward(a.att, a.lse, qkv, qkv + d, qkv + 2 * d, dims, &a.attn_saved);
    return;
  }
  KVCache& cache = *src.cache;
  float* kc = cache.k(src.layer);
  float* vc = cache.v(src.layer);
  for (int64_t t = 0; t < n; ++t) {
    std::memcpy(kc + (pos0 + t) * d, qkv + t * 3 * d + d, sizeof(float) * d);
    std::memcpy(vc + (pos0 + t) * d, qkv + t * 3 * d + 2 * d, sizeof(float) * d);
  }
  if (pos0 == 0 && n > 1) {
    // Prefill from an empty cache: one whole-sequence call.
    src.attention->forward(a.att, a.lse, qkv, qkv + d, qkv + 2 * d, dims);
  } else {
    for (int64_t t = 0; t < n; ++t)
      src.attention->decode(a.att + t * d, qkv + t * 3 * d, kc, vc, pos0 + t + 1, H, D, cache.memo(src.layer));
  }
}

void TransformerBlock::forward(float* y, const float* x, BlockActivations& a, BlockScratch& s,
                               const AttentionSource& src) const {
  const AttnDims& dims = src.dims;
  const int64_t N = dims.B * dims.T, d = shape_.d_model, H = dims.H, D = dims.D;
  const int64_t pos0 = src.cache ? src.cache->len() : 0;
  SPARTA_CHECK(!src.cache || dims.B == 1, "[gpt] decoding with a KV cache takes one sequence, got B=", dims.B);
  ops::layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x, ln1_.weight.w, ln1_.bias.w, N, d, shape_.ln_eps);
  linear_fwd(a.qkv, a.ln1, qkv_, N, d, 3 * d);
  ops::rope_forward(a.qkv, dims.B, dims.T, H, D, 3 * d, pos0, shape_.rope_base, shape_.rope_dims);      // q
  ops::rope_forward(a.qkv + d, dims.B, dims.T, H, D, 3 * d, pos0, shape_.rope_base, shape_.rope_dims);  // k
  attend(a, src, pos0);
  linear_fwd(s.proj, a.att, attn_proj_, N, d, d);
  add_into(a.res_mid, x, s.proj, N * d);
  ops::layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.res_mid, ln2_.weight.w, ln2_.bias.w, N, d, shape_.ln_eps);
  linear_fwd(a.fc, a.ln2, fc_, N, d, 4 * d);
  ops::gelu_forward(s.gelu, a.fc, N * 4 * d);
  linear_fwd(s.proj, s.gelu, mlp_proj_, N, 4 * d, d);
  add_into(y, a.res_mid, s.proj, N * d);
}

void TransformerBlock::backward(float* dres, const float* x, const BlockActivations& a, BlockScratch& s,
                                const AttentionSource& src) const {
  SPARTA_CHECK(src.cache == nullptr, "[gpt] backward through a decoding step is not supported");
  const AttnDims& dims = src.dims;
  const int64_t N = dims.B * dims.T, d = shape_.d_model, H = dims.H, D = dims.D;
  // dres = dL/dy = dL/d(res_mid + mlp_out)
  ops::gelu_forward(s.gelu, a.fc, N * 4 * d);
  linear_bwd(s.dfc, dres, s.gelu, mlp_proj_, N, 4 * d, d);
  ops::gelu_backward(s.dfc, s.dfc, a.fc, N * 4 * d);
  linear_bwd(s.dln, s.dfc, a.ln2, fc_, N, d, 4 * d);
  ops::layernorm_backward(dres, ln2_.weight.g, ln2_.bias.g, s.dln, a.res_mid, ln2_.weight.w, a.ln2_mean, a.ln2_rstd,
                          N, d, /*accumulate_dx=*/true);
  // dres = dL/d res_mid
  linear_bwd(s.datt, dres, a.att, attn_proj_, N, d, d);
  src.attention->backward(s.dqkv, s.dqkv + d, s.dqkv + 2 * d, s.datt, a.att, a.lse, a.qkv, a.qkv + d, a.qkv + 2 * d,
                          dims, a.attn_saved.get());
  ops::rope_backward(s.dqkv, dims.B, dims.T, H, D, 3 * d, 0, shape_.rope_base, shape_.rope_dims);
  ops::rope_backward(s.dqkv + d, dims.B, dims.T, H, D, 3 * d, 0, shape_.rope_base, shape_.rope_dims);
  linear_bwd(s.dln, s.dqkv, a.ln1, qkv_, N, d, 3 * d);
  ops::layernorm_backward(dres, ln1_.weight.g, ln1_.bias.g, s.dln, x, ln1_.weight.w, a.ln1_mean, a.ln1_rstd, N, d,
                          /*accumulate_dx=*/true);
  // dres = dL/dx
}

// ---- OutputHead ----

void OutputHead::declare(const DeclareParam& declare, int64_t d) { declare_layernorm(declare, "ln_f", d); }

OutputHead::OutputHead(ParamStore& store, ParamView wte, int64_t vocab, int64_t d, float ln_eps)
    : ln_f_(bind_layernorm(store, "ln_f")), wte_(wte), vocab_(vocab), d_(d), eps_(ln_eps) {}

void OutputHead::forward(float* logits, float* lnf, float* mean, float* rstd, const float* x, int64_t N) const {
  ops::layernorm_forward(lnf, mean, rstd, x, ln_f_.weight.w, ln_f_.bias.w, N, d_, eps_);
  sgemm(false, true, N, vocab_, d_, 1.0f, lnf, d_, wte_.w, d_, 0.0f, logits, vocab_);
}

void OutputHead::backward(float* dx, float* dln, const float* dlogits, const float* x, const float* lnf,
                          const float* mean, const float* rstd, int64_t N) const {
  sgemm(false, false, N, d_, vocab_, 1.0f, dlogits, vocab_, wte_.w, d_, 0.0f, dln, d_);
  sgemm(true, false, vocab_, d_, N, 1.0f, dlogits, vocab_, lnf, d_, 1.0f, wte_.g, d_);
  ops::layernorm_backward(dx, ln_f_.weight.g, ln_f_.bias.g, dln, x, ln_f_.weight.w, mean, rstd, N, d_,
                          /*accumulate_dx=*/false);
}

}  // namespace sparta
