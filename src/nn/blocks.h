#pragma once
// The blocks models are composed of: token embedding, transformer block
// (self-attention + MLP, pre-LayerNorm, RoPE) and the output head (final
// LayerNorm + logits through the tied embedding). Each block is a struct of
// parameter views resolved once at construction (no name lookups on the hot
// path) with a forward and a backward; activations are owned by the caller
// (nn/activations.h), so the same block runs for training, evaluation and
// decoding, and several batches may be in flight.
//
// Gradient rule (every block and op): parameter gradients are ACCUMULATED
// (+=) — the caller zeroes them once per optimizer step, so micro-batches
// add up; activation gradients are OVERWRITTEN unless the function says it
// accumulates (a residual stream's gradient is passed through and added to);
// src/ops/README.md lists where each op stands.
#include <cstdint>
#include <array>
#include <functional>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "nn/kv_cache.h"
#include "nn/param_store.h"
#include "nn/precision.h"
#include "ops/attention.h"

namespace sparta {

// Declares one parameter: (name, shape, weight decay applies).
using DeclareParam = std::function<void(const std::string& name, const Shape& shape, bool decay)>;

// A parameter as a block sees it: its values and its gradient, both in the
// ParamStore's flat buffers.
struct ParamView {
  float* w = nullptr;
  float* g = nullptr;
};
ParamView bind_param(ParamStore& store, const std::string& name);

struct LayerNormParams {
  ParamView weight, bias;
};
struct LinearParams {
  ParamView weight, bias;  // weight (out, in), PyTorch nn.Linear layout
  // What the product computes in (nn/precision.h) and, when its operands are
  // 16-bit, the 16-bit copy of `weight` it multiplies with (owned by the
  // model, refreshed from the FP32 master weights when they change).
  MatmulPrecision precision;
  const uint16_t* weight16 = nullptr;
  DType operand_type() const { return precision.operands; }
};
// The precision of each matrix product of a model (nn/precision.h), and
// where the 16-bit weight copies live: given a module name ("h.0.attn.qkv",
// "head"), its precision and copy (nullptr when FP32).
using LinearBinder = std::function<std::pair<MatmulPrecision, const uint16_t*>(const std::string& module)>;

// What one transformer block saves in its forward for its backward, for one
// batch of N = B*T rows of width d (pointers into a caller-owned arena).
// The inputs of matrix products are stored in that product's operand type
// (FP32, or 16-bit under mixed precision: half the bytes); the rest is FP32.
// Of each LayerNorm only x̂ = (x − mean)·rstd is kept (ops/layernorm.h,
// Normalized): its backward needs nothing else, and the product after it gets
// its input back as x̂·w + b. So neither the residual stream entering the
// block nor the one after its attention sub-layer is kept.
struct BlockActivations {
  // (N, d) x̂ of ln1 in attn.qkv's operand type; nullptr when no backward
  // follows (Infer and Decode modes: the buffers below are then one set that
  // every layer reuses).
  void* xhat1 = nullptr;
  float *ln1_mean = nullptr, *ln1_rstd = nullptr;
  // (N, 3d): q|k|v after RoPE, in qkv_type: the layer's attention input
  // type (nn/precision.h) in Train mode, FP32 otherwise.
  void* qkv = nullptr;
  DType qkv_type = DType::F32;
  void* att = nullptr;   // (N, d) attention output, in attn.proj's operand type
  float* lse = nullptr;  // (B, H, T) log-sum-exp of each attention row
  void* xhat2 = nullptr; // (N, d) x̂ of ln2 in mlp.fc's operand type (Train mode)
  float *ln2_mean = nullptr, *ln2_rstd = nullptr;
  void* fc = nullptr;  // (N, 4d) MLP pre-activation, in mlp.fc's operand type
  std::unique_ptr<AttnSaved> attn_saved;  // the attention's own saved state (DSA: its plan)
};

// Buffers every block uses in turn and nothing keeps: the sub-layer output
// before the residual add, the LayerNorm outputs (the inputs of attn.qkv and
// mlp.fc), the GELU output (recomputed in backward: cheaper than keeping
// 4·N·d floats per layer; in mlp.proj's operand type), the backward's
// gradients, and under mixed precision FP32 staging for results that are
// rounded to 16 bits (attention outputs, GELU inputs). Several share memory
// where their lifetimes never overlap (nn/activations.cpp lists which).
struct BlockScratch {
  float* proj = nullptr;
  // (N, d) LayerNorm output in the next product's operand type.
  void* ln = nullptr;
  // (N, 3d): FP32 q|k|v of a layer whose saved ones are 16-bit (Train mode
  // only).
  float* qkv32 = nullptr;
  void* gelu = nullptr;
  float *dln = nullptr, *datt = nullptr, *dqkv = nullptr, *dfc = nullptr;
  // (N, d) attention-output staging (mixed precision); (N, 4d) GELU staging
  // when a layer's GELU mixes operand types.
  float *att32 = nullptr, *stage = nullptr;
};

struct BlockShape {
  int64_t d_model = 0, n_head = 0;
  float ln_eps = 1e-5f;
  float rope_base = 10000.0f;
  int64_t rope_dims = 0;
};

// Where a block's attention takes its keys and values from: the batch itself
// (training, evaluation, a prefill from an empty cache) or a sequence's KV
// cache (decoding, B = 1: the new tokens are appended at positions
// [cache->len(), +T) and attend to everything cached).
struct AttentionSource {
  Attention* attention = nullptr;
  AttnDims dims;               // B, T, H, D, ld of this batch; selection_seed
  KVCache* cache = nullptr;    // null = whole-batch attention
  int64_t layer = 0;           // which of the cache's layers
};

class TokenEmbedding {
 public:
  static void declare(const DeclareParam& declare, int64_t vocab, int64_t d);
  TokenEmbedding(ParamStore& store, int64_t vocab, int64_t d);
  // x (N, d) = wte[tokens] (overwritten).
  void forward(float* x, const int32_t* tokens, int64_t N) const;
  // wte.g[tokens[n]] += dx[n].
  void backward(const float* dx, const int32_t* tokens, int64_t N) const;
  const ParamView& table() const { return wte_; }

 private:
  ParamView wte_;
  int64_t vocab_, d_;
};

class TransformerBlock {
 public:
  static void declare(const DeclareParam& declare, const std::string& prefix, int64_t d);
  // attention_inputs: the type q|k|v are rounded to before the attention
  // reads them (attention_input_type in nn/precision.h).
  TransformerBlock(ParamStore& store, const std::string& prefix, const BlockShape& shape, const LinearBinder& bind,
                   DType attention_inputs = DType::F32);
  // Operand types of the four products, in order qkv, attn.proj, mlp.fc, mlp.proj.
  std::array<DType, 4> operand_types() const;

  // y (N, d) = block(x), N = dims.B * dims.T; a receives what backward needs
  // (when a.xhat1 is set). y may alias x: the residual stream is updated in
  // place, and the backward does not read x.
  void forward(float* y, const float* x, BlockActivations& a, BlockScratch& s, const AttentionSource& src) const;

  // dres: on entry dL/dy, on return dL/dx (the residual stream's gradient,
  // updated in place). a as the forward call on this batch left it.
  void backward(float* dres, const BlockActivations& a, BlockScratch& s, const AttentionSource& src) const;

 private:
  void attend(float* att, float* qkv, BlockActivations& a, const AttentionSource& src, int64_t pos0) const;
  LayerNormParams ln1_, ln2_;
  LinearParams qkv_, attn_proj_, fc_, mlp_proj_;
  BlockShape shape_;
  DType attention_inputs_ = DType::F32;
};

// Final LayerNorm, then logits = lnf · wteᵀ (the head shares the embedding
// table, so the embedding's gradient gets a contribution from here too).
class OutputHead {
 public:
  static void declare(const DeclareParam& declare, int64_t d);
  OutputHead(ParamStore& store, ParamView wte, int64_t vocab, int64_t d, float ln_eps, const LinearBinder& bind);
  // The head in two stages, so that the logits of a long batch can be made
  // (and consumed by the loss) a chunk of rows at a time:
  //   normalize: lnf (N, d) FP32, mean, rstd (N,) saved for backward; lnf16
  //     (N, d): lnf rounded to the product's operand type when that is
  //     16-bit (saved too), unused otherwise;
  //   logits: rows [row0, row0 + rows) of the (N, V) FP32 logits, written to
  //     logits[0, rows · V).
  void normalize(float* lnf, uint16_t* lnf16, float* mean, float* rstd, const float* x, int64_t N) const;
  void logits(float* logits, const float* lnf, const uint16_t* lnf16, int64_t row0, int64_t rows) const;
  // Backward in the same stages: backward_logits writes rows [row0, +rows)
  // of dln (N, d) from dlogits (rows, V) and adds to wte's gradient;
  // backward_normalize turns the whole dln into dx (N, d), overwritten.
  void backward_logits(float* dln, const float* dlogits, const float* lnf, const uint16_t* lnf16, int64_t row0,
                       int64_t rows) const;
  void backward_normalize(float* dx, const float* dln, const float* x, const float* mean, const float* rstd,
                          int64_t N) const;
  DType operand_type() const { return logits_.operand_type(); }

 private:
  LayerNormParams ln_f_;
  ParamView wte_;
  LinearParams logits_;  // wte as the head's weight (no bias)
  int64_t vocab_, d_;
  float eps_;
};

}  // namespace sparta
