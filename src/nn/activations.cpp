#include "nn/activations.h"

#include <algorithm>
#include <array>

#include "core/convert.h"
#include "core/error.h"
#include "nn/gpt.h"

namespace sparta {

namespace {

// Hands out 64-byte aligned buffers from one block of memory.
class Carver {
 public:
  explicit Carver(char* base) : base_(base) {}
  float* take(int64_t floats) { return static_cast<float*>(take(floats, DType::F32)); }
  void* take(int64_t elements, DType t) {
    void* p = base_ ? base_ + used_ : nullptr;
    used_ += (static_cast<size_t>(elements) * dtype_size(t) + 63) / 64 * 64;
    return p;
  }
  size_t used() const { return used_; }

 private:
  char* base_;
  size_t used_ = 0;
};

}  // namespace

int64_t logit_chunk_rows(int64_t vocab, int64_t N) {
  constexpr int64_t kChunkBytes = int64_t{16} << 20, kMinRows = 64;
  return std::min(N, std::max(kMinRows, kChunkBytes / (static_cast<int64_t>(sizeof(float)) * vocab)));
}

// The logits rows a (B, T) batch in `mode` asked to hold `logit_rows` gets.
static int64_t logit_capacity(int64_t B, int64_t T, ActivationMode mode, int64_t logit_rows) {
  const int64_t all = mode == ActivationMode::Decode ? 1 : B * T;
  return logit_rows > 0 ? std::min(logit_rows, all) : all;
}

size_t GPTActivations::layout(char* base, const GPTConfig& cfg, int64_t B, int64_t T, ActivationMode mode,
                              int64_t logit_rows) {
  const int64_t N = B * T, d = cfg.d_model, H = cfg.n_head, V = cfg.vocab_size;
  const bool train = mode == ActivationMode::Train;
  const int64_t kept_layers = train ? cfg.n_layer : 1;
  Carver c(base);
  // The residual stream: blocks update it in place, and no backward reads it
  // (each LayerNorm keeps its x̂ instead) except the output head's, which
  // reads its final state.
  res_ = c.take(N * d);
  blocks_.clear();
  blocks_.resize(static_cast<size_t>(kept_layers));
  // With kept_layers == 1 (Infer, Decode) every layer uses one set, sized
  // for the widest operand types of any layer.
  bool any_16bit = false, mixed_gelu = false;
  std::array<DType, 4> widest{DType::BF16, DType::BF16, DType::BF16, DType::BF16};
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    const auto types = block_operand_types(cfg, l);
    mixed_gelu = mixed_gelu || types[2] != types[3];  // GELU from fc's type into mlp.proj's
    for (size_t i = 0; i < 4; ++i) {
      if (types[i] == DType::F32) widest[i] = DType::F32;
      any_16bit = any_16bit || types[i] != DType::F32;
    }
  }
  bool any_16bit_qkv = false;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    BlockActivations& a = blocks_[i];
    const auto t = train ? block_operand_types(cfg, static_cast<int64_t>(i)) : widest;
    // Train mode keeps q|k|v for backward in the attention input type; the
    // Infer buffer is FP32 (the block rounds in place).
    a.qkv_type = train ? attention_input_type(cfg.precision, cfg.fp32_modules, static_cast<int64_t>(i)) : DType::F32;
    any_16bit_qkv = any_16bit_qkv || a.qkv_type != DType::F32;
    a.xhat1 = train ? c.take(N * d, t[0]) : nullptr;
    a.ln1_mean = c.take(N);
    a.ln1_rstd = c.take(N);
    a.qkv = c.take(N * 3 * d, a.qkv_type);
    a.att = c.take(N * d, t[1]);
    a.lse = c.take(B * H * T);
    a.xhat2 = train ? c.take(N * d, t[2]) : nullptr;
    a.ln2_mean = c.take(N);
    a.ln2_rstd = c.take(N);
    a.fc = c.take(N * 4 * d, t[2]);
  }
  const int64_t head_rows = mode == ActivationMode::Decode ? 1 : N;
  const DType head_type = head_operand_type(cfg);
  lnf16_ = head_type == DType::F32 ? nullptr : static_cast<uint16_t*>(c.take(head_rows * d, head_type));
  lnf_ = c.take(head_rows * d);
  lnf_mean_ = c.take(head_rows);
  lnf_rstd_ = c.take(head_rows);
  logits_ = c.take(logit_capacity(B, T, mode, logit_rows) * V);
  // Scratch, shared where lifetimes never overlap (the order of a block's
  // forward and backward is in nn/blocks.cpp):
  // - one (N, d) FP32 buffer: the sub-layer output before its residual add
  //   (forward), the attention output's FP32 staging (forward: rounded before
  //   attn.proj writes the sub-layer output; backward: widened for the
  //   attention's backward) and the LayerNorm input gradient dln (backward:
  //   consumed before the attention output is widened, made after the
  //   attention's backward);
  // - one region: an (N, 4d) FP32 buffer F, then the (N, 4d) GELU output G.
  //   F holds, in turn, the GELU staging of mixed types (inside a GELU
  //   call), the MLP's backward gradient dfc (from the mlp.proj backward to
  //   the mlp.fc backward) and the widened q|k|v (3d of its 4d columns'
  //   worth, during an attention call). G also holds a LayerNorm output, the
  //   input of attn.qkv or mlp.fc (consumed by that product before the GELU
  //   is written; in backward, ln2's is recomputed there once mlp.proj's
  //   backward has used the GELU output). The attention's input gradient
  //   dq|dk|dv, (N, 3d) FP32, takes the last quarter of F and the first 8·N·d
  //   bytes of G, which nothing else uses from the attention's backward to
  //   attn.qkv's (the widened q|k|v stay in F's first three quarters);
  // - the attention output gradient datt, which after the attention's
  //   backward holds ln1's recomputed output.
  scratch_ = BlockScratch{};
  scratch_.proj = c.take(N * d);
  const bool shared = mixed_gelu || any_16bit_qkv || train;
  const size_t f_bytes = shared ? (static_cast<size_t>(N * 4 * d) * sizeof(float) + 63) / 64 * 64 : 0;
  char* region = static_cast<char*>(c.take(static_cast<int64_t>(f_bytes), DType::U8));
  c.take(N * 4 * d, widest[3]);  // G, right after F (Carver hands out consecutive blocks)
  float* fp32_scratch = shared ? reinterpret_cast<float*>(region) : nullptr;
  scratch_.gelu = region ? region + f_bytes : nullptr;
  scratch_.ln = scratch_.gelu;  // N·4d elements of 2 or 4 bytes hold N·d of up to 4
  if (any_16bit) scratch_.att32 = scratch_.proj;
  if (mixed_gelu) scratch_.stage = fp32_scratch;
  if (any_16bit_qkv) scratch_.qkv32 = fp32_scratch;
  dres_ = nullptr;
  if (train) {
    dres_ = c.take(N * d);
    scratch_.dln = scratch_.proj;
    scratch_.datt = c.take(N * d);
    scratch_.dqkv = fp32_scratch + 3 * N * d;  // spans F's last quarter and G's first 8·N·d bytes
    scratch_.dfc = fp32_scratch;
  }
  return c.used();
}

size_t GPTActivations::bytes_for(const GPTConfig& cfg, int64_t B, int64_t T, ActivationMode mode,
                                 int64_t logit_rows) {
  GPTActivations probe;
  return probe.layout(nullptr, cfg, B, T, mode, logit_rows);
}

bool GPTActivations::fits(int64_t B, int64_t T, ActivationMode mode, int64_t logit_rows) const {
  // Train-mode buffers are a superset of Infer-mode ones.
  const bool mode_ok = mode == mode_ || (mode == ActivationMode::Infer && mode_ == ActivationMode::Train);
  return arena_.defined() && mode_ok && B <= B_ && T <= T_ &&
         logit_capacity(B, T, mode, logit_rows) <= logit_rows_;
}

void GPTActivations::reserve(const GPTConfig& cfg, int64_t B, int64_t T, ActivationMode mode, int64_t logit_rows) {
  SPARTA_CHECK(B >= 1 && T >= 1, "[gpt] batch and sequence length must be positive, got B=", B, " T=", T);
  SPARTA_CHECK(T <= cfg.context, "[gpt] sequence length ", T, " exceeds the model context ", cfg.context);
  const bool same_model = n_layer_ == cfg.n_layer && d_ == cfg.d_model && vocab_ == cfg.vocab_size &&
                          heads_ == cfg.n_head && precision_ == cfg.precision && fp32_modules_ == cfg.fp32_modules;
  // Every buffer is indexed from its start with the batch's own (B, T), so a
  // smaller batch uses a prefix of each.
  if (same_model && fits(B, T, mode, logit_rows)) return;
  arena_ = Tensor();  // free the old set before allocating the new one
  const size_t bytes = layout(nullptr, cfg, B, T, mode, logit_rows);
  arena_ = Tensor::empty({static_cast<int64_t>((bytes + sizeof(float) - 1) / sizeof(float))});
  layout(reinterpret_cast<char*>(arena_.data<float>()), cfg, B, T, mode, logit_rows);
  mode_ = mode;
  B_ = B;
  T_ = T;
  logit_rows_ = logit_capacity(B, T, mode, logit_rows);
  n_layer_ = cfg.n_layer;
  d_ = cfg.d_model;
  vocab_ = cfg.vocab_size;
  heads_ = cfg.n_head;
  precision_ = cfg.precision;
  fp32_modules_ = cfg.fp32_modules;
}

}  // namespace sparta

namespace sparta {

std::vector<float> GPTActivations::layer_qkv(int64_t layer) const {
  SPARTA_CHECK(train(), "[gpt] layer_qkv: per-layer q|k|v are kept only in Train mode");
  SPARTA_CHECK(layer >= 0 && layer < n_layer_, "[gpt] layer_qkv: layer ", layer, " is outside [0, ", n_layer_, ")");
  const BlockActivations& a = blocks_[static_cast<size_t>(layer)];
  const int64_t n = B_ * T_ * 3 * d_;
  std::vector<float> out(static_cast<size_t>(n));
  if (a.qkv_type == DType::F32)
    std::copy_n(static_cast<const float*>(a.qkv), n, out.data());
  else
    widen_16bit(a.qkv_type, out.data(), static_cast<const uint16_t*>(a.qkv), n);
  return out;
}

}  // namespace sparta
