#pragma once
// Pre-LayerNorm GPT with RoPE and a tied output head, composed of the blocks
// in nn/blocks.h (explicit forward/backward over flat buffers, llm.c style).
// docs/checkpoint-format.md states the exact equations.
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "nn/activations.h"
#include "nn/blocks.h"
#include "nn/kv_cache.h"
#include "nn/param_store.h"
#include "nn/precision.h"
#include "ops/attention.h"
#include "ops/dsa_budget.h"

namespace sparta {

struct GPTConfig {
  int64_t vocab_size = 257;
  int64_t context = 128;
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t d_model = 256;
  std::string attention = "dense";  // "dense" | "window" | "dsa"
  DsaConfig dsa;                    // used by "window" and "dsa"
  float rope_base = 10000.0f;
  int64_t rope_dims = 0;  // rotated dims per head (even, <= head dim); 0 = all (see ops/rope.h)
  float ln_eps = 1e-5f;
  // Mixed precision (nn/precision.h): what the matrix products compute in,
  // and the product modules kept FP32 (glob patterns).
  Precision precision = Precision::FP32;
  std::vector<std::string> fp32_modules = default_fp32_modules();
};

// Operand types of block `layer`'s products (qkv, attn.proj, mlp.fc,
// mlp.proj) and of the head, under cfg's precision and policy.
std::array<DType, 4> block_operand_types(const GPTConfig& cfg, int64_t layer);
DType head_operand_type(const GPTConfig& cfg);

// Called during backward each time a part of the gradients is final (no
// later work of this backward adds to it): every gradient at flat index >=
// `from` in params().grad(). Data parallelism starts exchanging those while
// the backward goes on (train/data_parallel.h).
using GradientsFinal = std::function<void(int64_t from)>;

// A GPT composed of blocks: TokenEmbedding, n_layer TransformerBlocks and
// an OutputHead. The model holds parameters only; activations belong to the
// caller (GPTActivations), the loss lives outside (nn/lm_objective.h), and
// backward ADDS to the gradients (zero them once per optimizer step).
class GPT {
 public:
  explicit GPT(const GPTConfig& cfg);
  GPT(const GPT&) = delete;
  GPT& operator=(const GPT&) = delete;
  // Calls fn(name, shape, decay) for every parameter of a model with `cfg`,
  // in declaration order, without allocating anything: what a checkpoint's
  // weights must match, checked before the model's memory is allocated.
  // sparta::Error if cfg is invalid (as the constructor).
  static void for_each_parameter(const GPTConfig& cfg, const DeclareParam& fn);
  const GPTConfig& config() const { return cfg_; }
  ParamStore& params() { return params_; }
  const ParamStore& params() const { return params_; }

  // normal(0, 0.02) weights, residual projections scaled by 1/sqrt(2L),
  // zero biases, LayerNorm weight 1.
  void init_weights(uint64_t seed);

  // tokens: (B, T), T <= context. Reserves acts for (B, T) in `mode` (Train
  // keeps what backward needs; Infer is forward only) and leaves the logits
  // of every position, (B, T, V), in acts.logits(). selection_seed: the
  // attention's training-time exploration (AttnDims::selection_seed, mixed
  // with the layer index); 0 = none (evaluation).
  void forward(GPTActivations& acts, const int32_t* tokens, int64_t B, int64_t T,
               ActivationMode mode = ActivationMode::Train, SelectionNoise selection_seed = {});
  // Backward of the Train-mode forward on the same acts, tokens, (B, T) and
  // selection_seed, from dL/dlogits that the caller wrote over
  // acts.logits(). Adds to params().grad(). aux_grad_scale: the factor on
  // gradients of auxiliary losses the attention adds on its own (DSA's scorer
  // loss), passed on as AttnDims::aux_grad_scale (fp16 loss scale / micro-
  // batches per step; see there).
  void backward(GPTActivations& acts, const int32_t* tokens, int64_t B, int64_t T, SelectionNoise selection_seed = {},
                double aux_grad_scale = 1.0);

  // The same forward and backward with the logits made a chunk of rows at a
  // time, so that the (B·T, V) logits never exist at once (nn/lm_objective.h
  // uses them; the results equal forward/backward's up to the summation order
  // of wte's gradient):
  //   forward_features: forward up to the head's LayerNorm; acts hold
  //     logit_rows rows of logits (0 = all);
  //   head_logits: the logits of rows [row0, row0 + rows), rows <=
  //     acts.logit_rows(), into acts.logits() (returned);
  //   head_backward: from dL/dlogits of those rows written over
  //     acts.logits(); adds to wte's gradient (Train mode);
  //   backward_features: once every row went through head_backward, the
  //     rest of the backward (as backward).
  void forward_features(GPTActivations& acts, const int32_t* tokens, int64_t B, int64_t T, ActivationMode mode,
                        SelectionNoise selection_seed, int64_t logit_rows);
  float* head_logits(GPTActivations& acts, int64_t row0, int64_t rows);
  void head_backward(GPTActivations& acts, int64_t row0, int64_t rows);
  //   final (optional): told, in backward order, as each part of the
  //     gradients becomes final: the final LayerNorm's, then each block's
  //     from the last to the first, then the embedding's (tied with the
  //     head, so last); see gradients_final_order().
  void backward_features(GPTActivations& acts, const int32_t* tokens, int64_t B, int64_t T,
                         SelectionNoise selection_seed = {}, double aux_grad_scale = 1.0,
                         const GradientsFinal* final = nullptr);
  // The `from` values backward_features reports, in its order (decreasing,
  // ending with 0): where a data-parallel exchange may cut the gradients.
  const std::vector<int64_t>& gradients_final_order() const { return final_order_; }

  // Decoding: feeds n new tokens of one sequence at positions [cache.len(), +n),
  // appending their keys/values, and returns the logits (V) of the last one
  // (in acts, Decode mode; valid until acts is used again).
  const float* forward_cached(KVCache& cache, GPTActivations& acts, const int32_t* tokens, int64_t n);
  KVCache make_cache(int64_t max_len) const;

 private:
  AttnDims layer_dims(int64_t B, int64_t T, int64_t layer, SelectionNoise selection_seed) const;
  // Brings the 16-bit weight copies up to date with the FP32 master weights
  // (when the ParamStore's version moved since the last refresh).
  void refresh_weight_copies();

  // A 16-bit copy of one FP32 weight: source, destination, length, type.
  struct WeightCopy {
    const float* master;
    uint16_t* copy;
    int64_t numel;
    DType type;
  };

  GPTConfig cfg_;
  ParamStore params_;
  std::unique_ptr<Attention> attn_;
  std::unique_ptr<TokenEmbedding> embedding_;
  std::vector<TransformerBlock> blocks_;
  std::unique_ptr<OutputHead> head_;
  std::vector<uint16_t> weight16_;  // every 16-bit weight copy, back to back
  std::vector<WeightCopy> copies_;
  uint64_t copies_version_ = ~uint64_t{0};  // ParamStore version they were made from
  std::vector<int64_t> final_order_;        // gradients_final_order(), resolved once
};

}  // namespace sparta
