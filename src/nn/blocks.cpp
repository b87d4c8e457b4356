#include "nn/blocks.h"

#include <algorithm>
#include <cstring>
#include <tuple>

#include "core/convert.h"
#include "core/error.h"
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

LinearParams bind_linear(ParamStore& s, const std::string& name, const LinearBinder& bind) {
  LinearParams p;
  p.weight = bind_param(s, name + ".weight");
  p.bias = bind_param(s, name + ".bias");
  std::tie(p.precision, p.weight16) = bind(name);
  SPARTA_CHECK(!p.precision.is_16bit() || p.weight16 != nullptr, "[gpt] ", name, " computes in ",
               dtype_name(p.precision.operands), " but has no 16-bit weight copy");
  return p;
}

void declare_layernorm(const DeclareParam& declare, const std::string& name, int64_t d) {
  declare(name + ".weight", {d}, false);
  declare(name + ".bias", {d}, false);
}

void declare_linear(const DeclareParam& declare, const std::string& name, int64_t in, int64_t out) {
  declare(name + ".weight", {out, in}, true);
  declare(name + ".bias", {out}, false);
}

// The weight as the product's operand: the FP32 master or its 16-bit copy.
MatRef weight_operand(const LinearParams& p, int64_t in, int64_t out) {
  const DType t = p.operand_type();
  return ops::dense_matrix(t == DType::F32 ? static_cast<const void*>(p.weight.w) : p.weight16, t, out, in);
}

// y (N, out) = x · wᵀ + b; x (N, in) in the product's operand type; y in yt.
void linear_fwd(void* y, DType yt, const void* x, const LinearParams& p, int64_t N, int64_t in, int64_t out) {
  ops::linear_forward(ops::dense_output(y, yt, N, out), ops::dense_matrix(x, p.operand_type(), N, in),
                      weight_operand(p, in, out), p.bias.w, false, p.precision.math);
}

void linear_bwd(float* dx, const float* dy, const void* x, const LinearParams& p, int64_t N, int64_t in,
                int64_t out) {
  ops::linear_backward(dx, p.weight.g, p.bias.g, dy, ops::dense_matrix(x, p.operand_type(), N, in),
                       weight_operand(p, in, out), false, p.precision.math);
}

// Stores an FP32 result in type t at dst: a copy into the saved buffer when
// FP32 is what was computed in place (src == dst), else a rounding.
void store_as(void* dst, DType t, const float* src, int64_t n) {
  if (t == DType::F32) {
    if (dst != src) std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(n));
  } else {
    round_to_16bit(t, static_cast<uint16_t*>(dst), src, n);
  }
}

// Where an FP32 result destined for a buffer of type t is first written:
// the buffer itself when FP32, else the FP32 staging buffer.
float* fp32_target(void* dst, DType t, float* staging) {
  return t == DType::F32 ? static_cast<float*>(dst) : staging;
}

// x = widen(round(x)) to type t (BF16 or F16), in place.
void round_in_place(DType t, float* x, int64_t n) {
  constexpr int64_t kChunk = 4096;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i += kChunk) {
    uint16_t tmp[kChunk];
    const int64_t c = std::min(kChunk, n - i);
    if (t == DType::BF16) {
      f32_to_bf16(tmp, x + i, c);
      bf16_to_f32(x + i, tmp, c);
    } else {
      f32_to_f16(tmp, x + i, c);
      f16_to_f32(x + i, tmp, c);
    }
  }
}

// y (type yt) = GELU(x (type xt)); stage: (n,) FP32 scratch for mixed types.
void gelu_typed(void* y, DType yt, const void* x, DType xt, int64_t n, float* stage) {
  if (xt == DType::F32 && yt == DType::F32) return ops::gelu_forward(static_cast<float*>(y), static_cast<const float*>(x), n);
  if (xt == yt)
    return ops::gelu_forward(static_cast<uint16_t*>(y), static_cast<const uint16_t*>(x), n, xt);
  const float* x32 = static_cast<const float*>(x);
  if (xt != DType::F32) {
    widen_16bit(xt, stage, static_cast<const uint16_t*>(x), n);
    x32 = stage;
  }
  float* y32 = fp32_target(y, yt, stage);
  ops::gelu_forward(y32, x32, n);
  if (yt != DType::F32) store_as(y, yt, y32, n);
}

void gelu_grad_typed(float* dx, const void* x, DType xt, int64_t n) {
  if (xt == DType::F32) return ops::gelu_backward(dx, dx, static_cast<const float*>(x), n);
  ops::gelu_backward(dx, dx, static_cast<const uint16_t*>(x), n, xt);
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

TransformerBlock::TransformerBlock(ParamStore& store, const std::string& prefix, const BlockShape& shape,
                                   const LinearBinder& bind, DType attention_inputs)
    : ln1_(bind_layernorm(store, prefix + "ln1")),
      ln2_(bind_layernorm(store, prefix + "ln2")),
      qkv_(bind_linear(store, prefix + "attn.qkv", bind)),
      attn_proj_(bind_linear(store, prefix + "attn.proj", bind)),
      fc_(bind_linear(store, prefix + "mlp.fc", bind)),
      mlp_proj_(bind_linear(store, prefix + "mlp.proj", bind)),
      shape_(shape),
      attention_inputs_(attention_inputs) {}

std::array<DType, 4> TransformerBlock::operand_types() const {
  return {qkv_.operand_type(), attn_proj_.operand_type(), fc_.operand_type(), mlp_proj_.operand_type()};
}

void TransformerBlock::attend(float* att, float* qkv, BlockActivations& a, const AttentionSource& src,
                              int64_t pos0) const {
  const AttnDims& dims = src.dims;
  const int64_t d = shape_.d_model, H = dims.H, D = dims.D, n = dims.T;
  if (src.cache == nullptr) {
    src.attention->forward(att, a.lse, qkv, qkv + d, qkv + 2 * d, dims, &a.attn_saved);
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
    src.attention->forward(att, a.lse, qkv, qkv + d, qkv + 2 * d, dims);
  } else {
    for (int64_t t = 0; t < n; ++t)
      src.attention->decode(att + t * d, qkv + t * 3 * d, kc, vc, pos0 + t + 1, H, D, cache.memo(src.layer));
  }
}

void TransformerBlock::forward(float* y, const float* x, BlockActivations& a, BlockScratch& s,
                               const AttentionSource& src) const {
  const AttnDims& dims = src.dims;
  const int64_t N = dims.B * dims.T, d = shape_.d_model, H = dims.H, D = dims.D;
  const int64_t pos0 = src.cache ? src.cache->len() : 0;
  SPARTA_CHECK(!src.cache || dims.B == 1, "[gpt] decoding with a KV cache takes one sequence, got B=", dims.B);
  const auto [t_qkv, t_proj, t_fc, t_mlp] = operand_types();
  ops::layernorm_forward(s.ln, t_qkv, a.ln1_mean, a.ln1_rstd, {a.xhat1, t_qkv}, x, ln1_.weight.w, ln1_.bias.w, N,
                         d, shape_.ln_eps);
  float* qkv = fp32_target(a.qkv, a.qkv_type, s.qkv32);
  linear_fwd(qkv, DType::F32, s.ln, qkv_, N, d, 3 * d);
  ops::rope_forward(qkv, dims.B, dims.T, H, D, 3 * d, pos0, shape_.rope_base, shape_.rope_dims);      // q
  ops::rope_forward(qkv + d, dims.B, dims.T, H, D, 3 * d, pos0, shape_.rope_base, shape_.rope_dims);  // k
  // 16-bit attention inputs: the attention reads the rounded values, the
  // same ones backward widens from the saved 16-bit copy.
  if (a.qkv_type != DType::F32) {
    store_as(a.qkv, a.qkv_type, qkv, N * 3 * d);
    widen_16bit(a.qkv_type, qkv, static_cast<const uint16_t*>(a.qkv), N * 3 * d);
  } else if (attention_inputs_ != DType::F32) {
    round_in_place(attention_inputs_, qkv, N * 3 * d);
  }
  float* att = fp32_target(a.att, t_proj, s.att32);
  attend(att, qkv, a, src, pos0);
  store_as(a.att, t_proj, att, N * d);
  linear_fwd(s.proj, DType::F32, a.att, attn_proj_, N, d, d);
  // y = x + attention (the residual stream after the attention sub-layer; x
  // is not read again), then its LayerNorm.
  ops::residual_layernorm_forward(y, s.ln, t_fc, a.ln2_mean, a.ln2_rstd, x, s.proj, ln2_.weight.w, ln2_.bias.w, N,
                                  d, shape_.ln_eps, {a.xhat2, t_fc});
  // The pre-activation is kept in fc's operand type (what PyTorch autocast keeps too).
  linear_fwd(a.fc, t_fc, s.ln, fc_, N, d, 4 * d);
  gelu_typed(s.gelu, t_mlp, a.fc, t_fc, N * 4 * d, s.stage);
  linear_fwd(s.proj, DType::F32, s.gelu, mlp_proj_, N, 4 * d, d);
  add_into(y, y, s.proj, N * d);
}

void TransformerBlock::backward(float* dres, const BlockActivations& a, BlockScratch& s,
                                const AttentionSource& src) const {
  SPARTA_CHECK(src.cache == nullptr, "[gpt] backward through a decoding step is not supported");
  SPARTA_CHECK(a.xhat1 != nullptr && a.xhat2 != nullptr,
               "[gpt] backward needs the activations of a Train-mode forward");
  const AttnDims& dims = src.dims;
  const int64_t N = dims.B * dims.T, d = shape_.d_model, H = dims.H, D = dims.D;
  const auto [t_qkv, t_proj, t_fc, t_mlp] = operand_types();
  const ops::Normalized xhat1{a.xhat1, t_qkv}, xhat2{a.xhat2, t_fc};
  // dres = dL/dy, y = h + mlp(ln2(h)), h = x + attention(ln1(x))
  gelu_typed(s.gelu, t_mlp, a.fc, t_fc, N * 4 * d, s.stage);
  linear_bwd(s.dfc, dres, s.gelu, mlp_proj_, N, 4 * d, d);
  gelu_grad_typed(s.dfc, a.fc, t_fc, N * 4 * d);
  // mlp.fc's input, recomputed from ln2's x̂ (s.ln shares the GELU output's memory, dead now).
  ops::layernorm_affine(s.ln, t_fc, xhat2, ln2_.weight.w, ln2_.bias.w, N, d);
  linear_bwd(s.dln, s.dfc, s.ln, fc_, N, d, 4 * d);
  ops::layernorm_backward(dres, ln2_.weight.g, ln2_.bias.g, s.dln, xhat2, ln2_.weight.w, a.ln2_rstd, N, d,
                          /*accumulate_dx=*/true);
  // dres = dL/dh
  linear_bwd(s.datt, dres, a.att, attn_proj_, N, d, d);
  // The attention backward reads its output O (for rowsum(dO·O)) in FP32.
  const float* att = static_cast<const float*>(a.att);
  if (t_proj != DType::F32) {
    widen_16bit(t_proj, s.att32, static_cast<const uint16_t*>(a.att), N * d);
    att = s.att32;
  }
  const float* qkv = static_cast<const float*>(a.qkv);
  if (a.qkv_type != DType::F32) {
    widen_16bit(a.qkv_type, s.qkv32, static_cast<const uint16_t*>(a.qkv), N * 3 * d);
    qkv = s.qkv32;
  }
  src.attention->backward(s.dqkv, s.dqkv + d, s.dqkv + 2 * d, s.datt, att, a.lse, qkv, qkv + d, qkv + 2 * d, dims,
                          a.attn_saved.get());
  ops::rope_backward(s.dqkv, dims.B, dims.T, H, D, 3 * d, 0, shape_.rope_base, shape_.rope_dims);
  ops::rope_backward(s.dqkv + d, dims.B, dims.T, H, D, 3 * d, 0, shape_.rope_base, shape_.rope_dims);
  // attn.qkv's input, recomputed from ln1's x̂ into datt's memory (dead
  // after the attention's backward; s.ln's overlaps dq|dk|dv, see
  // nn/activations.cpp).
  ops::layernorm_affine(s.datt, t_qkv, xhat1, ln1_.weight.w, ln1_.bias.w, N, d);
  linear_bwd(s.dln, s.dqkv, s.datt, qkv_, N, d, 3 * d);
  ops::layernorm_backward(dres, ln1_.weight.g, ln1_.bias.g, s.dln, xhat1, ln1_.weight.w, a.ln1_rstd, N, d,
                          /*accumulate_dx=*/true);
  // dres = dL/dx
}

// ---- OutputHead ----

void OutputHead::declare(const DeclareParam& declare, int64_t d) { declare_layernorm(declare, "ln_f", d); }

OutputHead::OutputHead(ParamStore& store, ParamView wte, int64_t vocab, int64_t d, float ln_eps,
                       const LinearBinder& bind)
    : ln_f_(bind_layernorm(store, "ln_f")), wte_(wte), vocab_(vocab), d_(d), eps_(ln_eps) {
  logits_.weight = wte;
  std::tie(logits_.precision, logits_.weight16) = bind("head");
  SPARTA_CHECK(!logits_.precision.is_16bit() || logits_.weight16 != nullptr,
               "[gpt] the head computes in 16 bits but has no 16-bit weight copy");
}

void OutputHead::normalize(float* lnf, uint16_t* lnf16, float* mean, float* rstd, const float* x,
                           int64_t N) const {
  ops::layernorm_forward(lnf, mean, rstd, x, ln_f_.weight.w, ln_f_.bias.w, N, d_, eps_);
  if (operand_type() != DType::F32) store_as(lnf16, operand_type(), lnf, N * d_);
}

namespace {
// Rows [row0, ...) of the head's saved input in its operand type.
const void* head_input_rows(DType t, const float* lnf, const uint16_t* lnf16, int64_t row0, int64_t d) {
  return t == DType::F32 ? static_cast<const void*>(lnf + row0 * d) : lnf16 + row0 * d;
}
}  // namespace

void OutputHead::logits(float* logits, const float* lnf, const uint16_t* lnf16, int64_t row0, int64_t rows) const {
  linear_fwd(logits, DType::F32, head_input_rows(operand_type(), lnf, lnf16, row0, d_), logits_, rows, d_, vocab_);
}

void OutputHead::backward_logits(float* dln, const float* dlogits, const float* lnf, const uint16_t* lnf16,
                                 int64_t row0, int64_t rows) const {
  linear_bwd(dln + row0 * d_, dlogits, head_input_rows(operand_type(), lnf, lnf16, row0, d_), logits_, rows, d_,
             vocab_);
}

void OutputHead::backward_normalize(float* dx, const float* dln, const float* x, const float* mean,
                                    const float* rstd, int64_t N) const {
  ops::layernorm_backward(dx, ln_f_.weight.g, ln_f_.bias.g, dln, x, ln_f_.weight.w, mean, rstd, N, d_,
                          /*accumulate_dx=*/false);
}

}  // namespace sparta
