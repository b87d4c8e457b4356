#pragma once
// Activation memory of one GPT batch, owned by the caller and sized
// explicitly: bytes_for() says what reserve() will allocate before anything
// is allocated (the trainer checks it against free memory), one arena holds
// every buffer, and each batch in flight (a micro-batch, an evaluation, a
// decoding sequence) can have its own.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "nn/blocks.h"
#include "nn/precision.h"

namespace sparta {

struct GPTConfig;

// Rows of logits that a loss computed chunk by chunk keeps at once for a
// batch of N rows and vocabulary V: about 16 MiB of FP32 logits (at V =
// 4096, 1024 rows), at least 64 rows (a product too thin runs far below the
// GEMM rate), at most N. Without chunks the logits of a batch of 32 × 256
// tokens at V = 4096 take 128 MiB, as much as two layers' saved activations.
int64_t logit_chunk_rows(int64_t vocab, int64_t N);

enum class ActivationMode {
  Train,   // every layer keeps what its backward needs, plus gradient buffers
  Infer,   // forward only: one layer's buffers, reused by every layer
  Decode,  // as Infer, with logits for one row (the newest token)
};

class GPTActivations {
 public:
  GPTActivations() = default;
  GPTActivations(const GPTActivations&) = delete;
  GPTActivations& operator=(const GPTActivations&) = delete;
  GPTActivations(GPTActivations&&) = default;
  GPTActivations& operator=(GPTActivations&&) = default;

  // Bytes reserve(cfg, B, T, mode, logit_rows) allocates (every buffer
  // 64-byte aligned).
  static size_t bytes_for(const GPTConfig& cfg, int64_t B, int64_t T, ActivationMode mode, int64_t logit_rows = 0);

  // Makes room for a (B, T) batch in `mode`; keeps the current buffers when
  // they are large enough (same config and mode, B <= and T <= the reserved,
  // logits for at least as many rows). logit_rows: the rows of logits held at
  // once; 0 = every row (B·T; 1 in Decode mode). A loss computed chunk by
  // chunk (nn/lm_objective.h) needs only logit_chunk_rows.
  void reserve(const GPTConfig& cfg, int64_t B, int64_t T, ActivationMode mode, int64_t logit_rows = 0);
  // Whether a (B, T) batch in `mode` fits without reallocating (Train-mode
  // buffers also serve Infer-mode forwards).
  bool fits(int64_t B, int64_t T, ActivationMode mode, int64_t logit_rows = 0) const;
  // Rows of logits the buffer holds.
  int64_t logit_rows() const { return logit_rows_; }
  size_t bytes() const { return arena_.defined() ? arena_.nbytes() : 0; }
  ActivationMode mode() const { return mode_; }

  // The residual stream (N, d): the embedding writes it, each block updates
  // it in place, and after the last block it is the output head's input.
  float* residual() { return res_; }
  BlockActivations& block(int64_t l) { return blocks_[train() ? l : 0]; }
  const BlockActivations& block(int64_t l) const { return blocks_[train() ? l : 0]; }
  BlockScratch& scratch() { return scratch_; }
  // (logit_rows(), V) logits: every row of the batch (B*T; 1 in Decode
  // mode) or a chunk of them. The lm objective overwrites them in place with
  // dL/dlogits before the head's backward.
  float* logits() { return logits_; }
  float *lnf() { return lnf_; }
  // lnf rounded to the head's 16-bit operand type; nullptr when the head is FP32.
  uint16_t* lnf16() { return lnf16_; }
  float *lnf_mean() { return lnf_mean_; }
  float *lnf_rstd() { return lnf_rstd_; }
  // The fused q|k|v of layer `layer`, (B, T, 3, H, D) after RoPE, as the
  // attention saw it in the last forward (Train mode only), in FP32 (a
  // widened copy when the layer keeps them in 16 bits). B, T: the reserved
  // batch; the last forward's rows come first.
  std::vector<float> layer_qkv(int64_t layer) const;
  // Gradient of the residual stream (Train mode only).
  float* dres() { return dres_; }

 private:
  bool train() const { return mode_ == ActivationMode::Train; }
  // Assigns every pointer at base + a 64-byte aligned offset; returns the
  // total size. With base == nullptr it only measures.
  size_t layout(char* base, const GPTConfig& cfg, int64_t B, int64_t T, ActivationMode mode, int64_t logit_rows);

  Tensor arena_;
  ActivationMode mode_ = ActivationMode::Train;
  int64_t B_ = 0, T_ = 0, logit_rows_ = 0, n_layer_ = 0, d_ = 0, vocab_ = 0, heads_ = 0;
  Precision precision_ = Precision::FP32;
  std::vector<std::string> fp32_modules_;
  float* res_ = nullptr;
  std::vector<BlockActivations> blocks_;
  BlockScratch scratch_;
  uint16_t* lnf16_ = nullptr;
  float *lnf_ = nullptr, *lnf_mean_ = nullptr, *lnf_rstd_ = nullptr, *logits_ = nullptr, *dres_ = nullptr;
};

}  // namespace sparta
