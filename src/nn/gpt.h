#pragma once
// Pre-LayerNorm GPT with RoPE and a tied output head, written as explicit
// per-module forward/backward passes over flat buffers (llm.c style).
// docs/checkpoint-format.md states the exact equations.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "nn/kv_cache.h"
#include "nn/param_store.h"
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
};

class GPT {
 public:
  explicit GPT(const GPTConfig& cfg);
  // Calls fn(name, shape, decay) for every parameter of a model with `cfg`,
  // in declaration order, without allocating anything: what a checkpoint's
  // weights must match, checked before the model's memory is allocated.
  // sparta::Error if cfg is invalid (as the constructor).
  static void for_each_parameter(const GPTConfig& cfg,
                                 const std::function<void(const std::string& name, const Shape& shape, bool decay)>& fn);
  const GPTConfig& config() const { return cfg_; }
  ParamStore& params() { return params_; }
  const ParamStore& params() const { return params_; }

  // normal(0, 0.02) weights, residual projections scaled by 1/sqrt(2L),
  // zero biases, LayerNorm weight 1.
  void init_weights(uint64_t seed);

  // tokens, targets: (B, T) with T <= context; targets < 0 are ignored.
  // Computes the mean cross-entropy over counted targets AND all parameter
  // gradients (grads are overwritten, not accumulated). Returns the loss.
  float forward_backward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T);
  // Seed of the attention's training-time exploration (AttnDims::
  // selection_seed, mixed with the layer index) for the following
  // forward_backward calls; the trainer sets one per step. 0 = none.
  void set_selection_seed(uint64_t seed) { selection_seed_ = seed; }
  // Loss only (evaluation). Returns the SUM of token losses; *count = tokens counted.
  double forward_loss(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T, int64_t* count);
  // Logits of every position, (B, T, V), valid until the next call.
  const float* forward_logits(const int32_t* tokens, int64_t B, int64_t T);

  // The fused q|k|v of layer `layer`, (B, T, 3, H, D) after RoPE, as the
  // attention saw it in the last whole-sequence forward (forward_backward,
  // forward_loss, forward_logits); valid until the next such call.
  const float* layer_qkv(int64_t layer) const;

  // Decoding: feeds n new tokens of one sequence at positions [cache.len(), +n),
  // appending their keys/values, and returns the logits (V) of the last one.
  const float* forward_cached(KVCache& cache, const int32_t* tokens, int64_t n);
  KVCache make_cache(int64_t max_len) const;

  // Bytes of activation memory currently reserved.
  size_t activation_bytes() const;

 private:
  void ensure_acts(int64_t B, int64_t T);
  void forward(const int32_t* tokens, int64_t B, int64_t T, uint64_t selection_seed = 0);
  AttnDims layer_dims(int64_t B, int64_t T, int64_t layer, uint64_t selection_seed) const;
  void backward(const int32_t* tokens, int64_t B, int64_t T, uint64_t selection_seed = 0);

  GPTConfig cfg_;
  ParamStore params_;
  std::unique_ptr<Attention> attn_;
  uint64_t selection_seed_ = 0;
  // Activations saved for backward, sized for (acts_B_, acts_T_) and reused
  // across steps so the hot loop never allocates.
  struct Acts;
  std::shared_ptr<Acts> acts_;
  int64_t acts_B_ = 0, acts_T_ = 0;
  std::shared_ptr<Acts> decode_acts_;  // sized for one sequence of up to context tokens
};

}  // namespace sparta
