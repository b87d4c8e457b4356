#pragma once
// Saving and loading whole training checkpoints (weights, AdamW moments,
// training state, resolved config, tokenizer) — layout in
// docs/checkpoint-format.md. Writes go through commit_checkpoint, so a
// process killed at any moment leaves the previous checkpoint loadable.
#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/token_dataset.h"
#include "data/tokenizer.h"
#include "nn/gpt.h"
#include "train/config.h"
#include "train/optimizer.h"

namespace sparta {

struct TrainState {
  int64_t step = 0;  // optimizer steps completed
  std::array<uint64_t, 4> rng{};
  DataCursor cursor;
  int64_t tokens_seen = 0;
};

GPTConfig gpt_config_from(const Config& cfg, int64_t vocab_size);

// Writes OUT/ckpt-<step>/ atomically and moves OUT/LATEST to it. A model
// with a NaN or infinite weight is refused (sparta::Error naming the
// weight) and nothing is written.
std::filesystem::path save_checkpoint(const std::filesystem::path& out_dir, const Config& cfg, GPT& model,
                                      AdamW& opt, const TrainState& state, const Tokenizer& tok);

struct LoadedCheckpoint {
  std::filesystem::path dir;  // the checkpoint folder actually used
  Config config;              // from config.toml, with overrides applied
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<GPT> model;  // weights loaded
  TrainState state;
};

// `path` is a run folder (newest complete checkpoint is used) or one
// checkpoint folder. Overrides ("section.key=value", as a user's --set) and
// then `adjust` (a caller's change to the Config itself) are applied to the
// saved config, which is re-validated, before the model is built.
// sparta::Error when they change a weight_shape_keys() setting (naming the
// key and both values) or a weight is NaN or infinite (naming the tensor and
// the file).
LoadedCheckpoint load_checkpoint(const std::filesystem::path& path, const std::vector<std::string>& overrides = {},
                                 const std::function<void(Config&)>& adjust = nullptr);
// Restores AdamW moments and step count saved beside the weights.
void load_optimizer_state(const std::filesystem::path& ckpt_dir, AdamW& opt, GPT& model);

}  // namespace sparta
