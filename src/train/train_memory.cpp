#include "train/train_memory.h"

#include <algorithm>
#include <cstdio>
#include <string>

#include "core/error.h"
#include "nn/precision.h"
#include "run/checkpoint_load.h"

namespace sparta {

TrainMemoryEstimate estimate_train_memory(const Config& cfg) {
  // Doubles: with the per-key limits the products overflow int64.
  const double L = static_cast<double>(cfg.model.n_layer);
  const double d = static_cast<double>(cfg.model.d_model);
  const double H = static_cast<double>(cfg.model.n_head);
  const double V = static_cast<double>(cfg.tokenizer.vocab_size);
  const double rows = static_cast<double>(cfg.train.batch_size) * static_cast<double>(cfg.model.context);
  TrainMemoryEstimate e;
  // Tied embedding; per layer qkv, proj, fc, fc-proj weights (12 d^2) plus
  // biases and LayerNorms (13 d); the final LayerNorm.
  const double params = V * d + L * (12.0 * d * d + 13.0 * d) + 2.0 * d;
  e.param_bytes = 16.0 * params;
  // bf16 / fp16: a 2-byte copy of each weight of the 16-bit products.
  const Precision precision = parse_precision(cfg.train.precision);
  for (const std::string& module : matmul_module_names(cfg.model.n_layer)) {
    if (!module_precision(precision, cfg.precision.fp32, module).is_16bit()) continue;
    const bool head = module == "head";
    const bool wide = module.ends_with("mlp.fc") || module.ends_with("mlp.proj");
    const double weights = head ? V * d : (module.ends_with("attn.qkv") ? 3.0 : wide ? 4.0 : 1.0) * d * d;
    e.param_bytes += 2.0 * weights;
  }
  // Per layer: res, res_mid, ln1, qkv (3d), att, ln2, fc (4d) = 12 d, plus
  // lse (H) and 4 LayerNorm statistics; once: the last residual, final
  // LayerNorm, scratch and gradient buffers (17 d); the logits are made in
  // chunks (nn/lm_objective.h) and left out here.
  const double per_row = L * (12.0 * d + H + 4.0) + 17.0 * d + 2.0;
  e.activation_bytes = 4.0 * rows * per_row;
  // Beyond any machine (and near size_t's range) the approximation is enough.
  if (e.activation_bytes > 1e15) return e;
  // Exactly what the trainer's Train-mode activations reserve for one
  // micro-batch, whose loss takes the logits in chunks.
  const GPTConfig m = gpt_config_from(cfg, cfg.tokenizer.vocab_size);
  const int64_t rows_per_batch = cfg.train.batch_size * cfg.model.context;
  e.activation_bytes = static_cast<double>(GPTActivations::bytes_for(
      m, cfg.train.batch_size, cfg.model.context, ActivationMode::Train, logit_chunk_rows(m.vocab_size, rows_per_batch)));
  return e;
}

namespace {

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

}  // namespace

void check_train_memory(const Config& cfg, int64_t available_bytes, int64_t ranks, int64_t local_ranks) {
  if (available_bytes < 0) return;
  // Each process holds every parameter and the activations of its rows.
  Config mine = cfg;
  mine.train.batch_size = std::max<int64_t>(1, cfg.train.batch_size / std::max<int64_t>(1, ranks));
  const TrainMemoryEstimate e = estimate_train_memory(mine);
  const double n = static_cast<double>(std::max<int64_t>(1, local_ranks));
  const std::string per_process =
      local_ranks > 1 ? cat(" (", gib(e.total()), " for each of the ", local_ranks, " processes on this machine)") : "";
  SPARTA_CHECK(n * e.total() <= static_cast<double>(available_bytes), "[config] training needs at least ",
               gib(n * e.total()), per_process, " but only ", gib(static_cast<double>(available_bytes)),
               " of memory is available: parameters with gradients and AdamW state ", gib(n * e.param_bytes),
               " (model.n_layer = ", cfg.model.n_layer, ", model.d_model = ", cfg.model.d_model,
               ", tokenizer.vocab_size = ", cfg.tokenizer.vocab_size, "), activations ", gib(n * e.activation_bytes),
               " (train.batch_size = ", cfg.train.batch_size, ", model.context = ", cfg.model.context, ")");
}

}  // namespace sparta
