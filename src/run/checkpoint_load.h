#pragma once
// Loading the model of a training checkpoint (weights, training state,
// resolved config, tokenizer) without the trainer: what eval, generate, info,
// --resume and train.init_from start from. Layout in
// docs/checkpoint-format.md; saving (and the AdamW moments) is
// train/checkpoint_save.h.
#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/token_dataset.h"
#include "data/tokenizer.h"
#include "io/safetensors.h"
#include "nn/gpt.h"
#include "run/config.h"

namespace sparta {

struct TrainState {
  int64_t step = 0;  // optimizer steps completed
  std::array<uint64_t, 4> rng{};
  DataCursor cursor;
  int64_t tokens_seen = 0;
  // fp16 dynamic loss scaling (train/loss_scaler.h): the scale and its
  // growth counter; loss_scale 0 = none saved (another precision, or a
  // checkpoint from before loss scaling).
  double loss_scale = 0.0;
  int64_t loss_scale_good_steps = 0;
  // Processes that trained it (data parallel; 1 for a single process).
  int64_t ranks = 1;
};

GPTConfig gpt_config_from(const Config& cfg, int64_t vocab_size);

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

// Shared with the saving half, which refuses what loading would refuse.
// Name of the first parameter holding a NaN or an infinity; "" if none.
std::string first_non_finite_param(const ParamStore& P);
// Integer metadata `key` of `f` (a checkpoint file), or `fallback` when
// absent; a value that is not a whole decimal int64 is an error naming the
// file and the field.
int64_t checkpoint_metadata_int(const SafetensorsFile& f, const std::string& key, std::optional<int64_t> fallback);

}  // namespace sparta
