#include "nn/gpt.h"

#include <cmath>
#include <cstring>

#include "core/convert.h"
#include "core/error.h"
#include "core/rng.h"

namespace sparta {

namespace {
std::string layer_prefix(int64_t i) { return "h." + std::to_string(i) + "."; }
}  // namespace

void GPT::for_each_parameter(const GPTConfig& cfg, const DeclareParam& fn) {
  SPARTA_CHECK(cfg.vocab_size >= 2, "[gpt] vocab_size must be >= 2, got ", cfg.vocab_size);
  SPARTA_CHECK(cfg.n_layer >= 1 && cfg.n_head >= 1 && cfg.d_model >= 1 && cfg.context >= 1,
               "[gpt] n_layer, n_head, d_model and context must be positive");
  SPARTA_CHECK(cfg.d_model % cfg.n_head == 0, "[gpt] n_head (", cfg.n_head, ") must divide d_model (", cfg.d_model,
               ")");
  SPARTA_CHECK((cfg.d_model / cfg.n_head) % 2 == 0, "[gpt] head dimension ", cfg.d_model / cfg.n_head,
               " must be even for RoPE");
  TokenEmbedding::declare(fn, cfg.vocab_size, cfg.d_model);
  for (int64_t i = 0; i < cfg.n_layer; ++i) TransformerBlock::declare(fn, layer_prefix(i), cfg.d_model);
  OutputHead::declare(fn, cfg.d_model);
}

std::array<DType, 4> block_operand_types(const GPTConfig& cfg, int64_t layer) {
  std::array<DType, 4> t{};
  const char* modules[4] = {"attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"};
  for (size_t i = 0; i < 4; ++i)
    t[i] = module_precision(cfg.precision, cfg.fp32_modules, layer_prefix(layer) + modules[i]).operands;
  return t;
}

DType head_operand_type(const GPTConfig& cfg) {
  return module_precision(cfg.precision, cfg.fp32_modules, "head").operands;
}

GPT::GPT(const GPTConfig& cfg) : cfg_(cfg) {
  for_each_parameter(cfg, [&](const std::string& name, const Shape& shape, bool decay) {
    params_.declare(name, shape, decay);
  });
  params_.finalize();
  // Parameters are laid out wte, block 0 … block L−1, ln_f (for_each_parameter),
  // and backward finishes them in the reverse order (wte last: the tied head
  // adds to it first, the embedding last).
  final_order_.push_back(params_.info("ln_f.weight").offset);
  for (int64_t l = cfg.n_layer - 1; l >= 0; --l) final_order_.push_back(params_.info(layer_prefix(l) + "ln1.weight").offset);
  final_order_.push_back(0);
  for (size_t i = 1; i < final_order_.size(); ++i)
    SPARTA_CHECK(final_order_[i] < final_order_[i - 1], "[gpt] parameters are not laid out in backward order");
  check_fp32_modules(cfg.fp32_modules, cfg.n_layer);
  // Places the 16-bit copies first (the buffer must not move once blocks
  // hold pointers into it), then binds every product to its precision.
  const auto weight_of = [](const std::string& module) { return module == "head" ? std::string("wte") : module + ".weight"; };
  std::vector<std::pair<std::string, int64_t>> offsets;  // module -> offset in weight16_
  int64_t total = 0;
  for (const std::string& module : matmul_module_names(cfg.n_layer)) {
    const MatmulPrecision p = module_precision(cfg.precision, cfg.fp32_modules, module);
    if (!p.is_16bit()) continue;
    offsets.emplace_back(module, total);
    total += (params_.info(weight_of(module)).numel + 31) / 32 * 32;  // 64-byte aligned copies
  }
  weight16_.assign(static_cast<size_t>(total), 0);
  for (const auto& [module, offset] : offsets) {
    const ParamInfo& info = params_.info(weight_of(module));
    copies_.push_back({params_.data() + info.offset, weight16_.data() + offset, info.numel,
                       module_precision(cfg.precision, cfg.fp32_modules, module).operands});
  }
  const LinearBinder bind = [&](const std::string& module) -> std::pair<MatmulPrecision, const uint16_t*> {
    const MatmulPrecision p = module_precision(cfg.precision, cfg.fp32_modules, module);
    for (const auto& [name, offset] : offsets)
      if (name == module) return {p, weight16_.data() + offset};
    return {p, nullptr};
  };
  attn_ = make_attention(cfg.attention, cfg.dsa);
  embedding_ = std::make_unique<TokenEmbedding>(params_, cfg.vocab_size, cfg.d_model);
  const BlockShape shape{cfg.d_model, cfg.n_head, cfg.ln_eps, cfg.rope_base, cfg.rope_dims};
  blocks_.reserve(static_cast<size_t>(cfg.n_layer));
  for (int64_t i = 0; i < cfg.n_layer; ++i)
    blocks_.emplace_back(params_, layer_prefix(i), shape, bind, attention_input_type(cfg.precision, cfg.fp32_modules, i));
  head_ = std::make_unique<OutputHead>(params_, embedding_->table(), cfg.vocab_size, cfg.d_model, cfg.ln_eps, bind);
}

void GPT::refresh_weight_copies() {
  if (copies_.empty() || copies_version_ == params_.version()) return;
  for (const WeightCopy& c : copies_) round_to_16bit(c.type, c.copy, c.master, c.numel);
  copies_version_ = params_.version();
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

AttnDims GPT::layer_dims(int64_t B, int64_t T, int64_t layer, SelectionNoise selection) const {
  const int64_t d = cfg_.d_model, H = cfg_.n_head;
  AttnDims dims{B, T, H, d / H, 3 * d, true};
  dims.bf16_products = attention_bf16_products(cfg_.precision, cfg_.fp32_modules, layer);
  // Each layer explores differently; a zero result is bumped so that a
  // non-zero seed always means "explore".
  if (selection.seed != 0) {
    dims.selection_seed = (selection.seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(layer)) | 1;
    dims.first_sequence = selection.first_sequence;
  }
  return dims;
}

void GPT::forward_features(GPTActivations& acts, const int32_t* tokens, int64_t B, int64_t T, ActivationMode mode,
                           SelectionNoise selection_seed, int64_t logit_rows) {
  SPARTA_CHECK(mode != ActivationMode::Decode, "[gpt] forward: Decode mode is for forward_cached");
  acts.reserve(cfg_, B, T, mode, logit_rows);
  refresh_weight_copies();
  const int64_t N = B * T;
  float* x = acts.residual();
  embedding_->forward(x, tokens, N);
  for (int64_t l = 0; l < cfg_.n_layer; ++l) {
    const AttentionSource src{attn_.get(), layer_dims(B, T, l, selection_seed)};
    blocks_[l].forward(x, x, acts.block(l), acts.scratch(), src);
  }
  head_->normalize(acts.lnf(), acts.lnf16(), acts.lnf_mean(), acts.lnf_rstd(), x, N);
}

float* GPT::head_logits(GPTActivations& acts, int64_t row0, int64_t rows) {
  SPARTA_CHECK(rows >= 1 && rows <= acts.logit_rows(), "[gpt] head_logits: ", rows,
               " rows do not fit the logits buffer of ", acts.logit_rows());
  head_->logits(acts.logits(), acts.lnf(), acts.lnf16(), row0, rows);
  return acts.logits();
}

void GPT::head_backward(GPTActivations& acts, int64_t row0, int64_t rows) {
  SPARTA_CHECK(acts.mode() == ActivationMode::Train && rows >= 1 && rows <= acts.logit_rows(),
               "[gpt] head_backward needs the Train-mode activations of a forward and at most ",
               acts.logit_rows(), " rows");
  head_->backward_logits(acts.scratch().dln, acts.logits(), acts.lnf(), acts.lnf16(), row0, rows);
}

void GPT::backward_features(GPTActivations& acts, const int32_t* tokens, int64_t B, int64_t T,
                            SelectionNoise selection_seed, double aux_grad_scale, const GradientsFinal* final) {
  SPARTA_CHECK(acts.mode() == ActivationMode::Train && acts.fits(B, T, ActivationMode::Train, 1),
               "[gpt] backward needs the Train-mode activations of a forward on the same batch");
  const int64_t N = B * T, Ly = cfg_.n_layer;
  float* dres = acts.dres();
  const auto report = [&](int64_t part) {
    if (final) (*final)(final_order_[static_cast<size_t>(part)]);
  };
  head_->backward_normalize(dres, acts.scratch().dln, acts.residual(), acts.lnf_mean(), acts.lnf_rstd(), N);
  report(0);
  for (int64_t l = Ly - 1; l >= 0; --l) {
    AttentionSource src{attn_.get(), layer_dims(B, T, l, selection_seed)};
    src.dims.aux_grad_scale = aux_grad_scale;
    blocks_[l].backward(dres, acts.block(l), acts.scratch(), src);
    report(Ly - l);
  }
  embedding_->backward(dres, tokens, N);
  report(Ly + 1);
}


void GPT::forward(GPTActivations& acts, const int32_t* tokens, int64_t B, int64_t T, ActivationMode mode,
                  SelectionNoise selection_seed) {
  forward_features(acts, tokens, B, T, mode, selection_seed, 0);
  head_logits(acts, 0, B * T);
}

void GPT::backward(GPTActivations& acts, const int32_t* tokens, int64_t B, int64_t T, SelectionNoise selection_seed,
                   double aux_grad_scale) {
  SPARTA_CHECK(acts.mode() == ActivationMode::Train && acts.fits(B, T, ActivationMode::Train),
               "[gpt] backward needs the Train-mode activations of a forward on the same batch");
  head_backward(acts, 0, B * T);
  backward_features(acts, tokens, B, T, selection_seed, aux_grad_scale);
}

KVCache GPT::make_cache(int64_t max_len) const {
  SPARTA_CHECK(max_len >= 1, "[gpt] KV cache length must be positive");
  KVCache cache(cfg_.n_layer, max_len, cfg_.n_head, cfg_.d_model / cfg_.n_head);
  for (int64_t l = 0; l < cfg_.n_layer; ++l) cache.set_memo(l, attn_->make_decode_memo());
  return cache;
}

const float* GPT::forward_cached(KVCache& cache, GPTActivations& acts, const int32_t* tokens, int64_t n) {
  const int64_t pos = cache.len(), d = cfg_.d_model;
  SPARTA_CHECK(n >= 1, "[gpt] forward_cached needs at least one token");
  SPARTA_CHECK(pos + n <= cache.max_len(), "[gpt] KV cache full: ", pos, " + ", n, " tokens exceed its length ",
               cache.max_len());
  SPARTA_CHECK(n <= cfg_.context, "[gpt] cannot feed ", n, " tokens at once (context ", cfg_.context, ")");
  // Sized for the whole context once, so a decoding loop never reallocates.
  acts.reserve(cfg_, 1, cfg_.context, ActivationMode::Decode);
  refresh_weight_copies();
  float* x = acts.residual();
  embedding_->forward(x, tokens, n);
  for (int64_t l = 0; l < cfg_.n_layer; ++l) {
    const AttentionSource src{attn_.get(), layer_dims(1, n, l, 0), &cache, l};
    blocks_[l].forward(x, x, acts.block(l), acts.scratch(), src);
  }
  cache.set_len(pos + n);
  head_->normalize(acts.lnf(), acts.lnf16(), acts.lnf_mean(), acts.lnf_rstd(), x + (n - 1) * d, 1);
  head_->logits(acts.logits(), acts.lnf(), acts.lnf16(), 0, 1);
  return acts.logits();
}

}  // namespace sparta
