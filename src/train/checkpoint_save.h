#pragma once
// Saving whole training checkpoints (weights, AdamW moments, training state,
// resolved config, tokenizer) and restoring the AdamW moments on --resume —
// layout in docs/checkpoint-format.md. Writes go through commit_checkpoint,
// so a process killed at any moment leaves the previous checkpoint loadable.
// Loading the model is run/checkpoint_load.h.
#include <filesystem>
#include <functional>

#include "data/tokenizer.h"
#include "nn/gpt.h"
#include "run/checkpoint_load.h"
#include "run/config.h"
#include "train/optimizer.h"

namespace sparta {

// Writes OUT/ckpt-<step>/ atomically and moves OUT/LATEST to it. A model
// with a NaN or infinite weight is refused (sparta::Error naming the
// weight) and nothing is written. `extra` writes more files into the
// checkpoint folder before it is committed (a data-parallel run's
// per-rank error-feedback residuals).
std::filesystem::path save_checkpoint(const std::filesystem::path& out_dir, const Config& cfg, GPT& model,
                                      AdamW& opt, const TrainState& state, const Tokenizer& tok,
                                      const std::function<void(const std::filesystem::path&)>& extra = {});
// Restores AdamW moments and step count saved beside the weights.
void load_optimizer_state(const std::filesystem::path& ckpt_dir, AdamW& opt, GPT& model);

}  // namespace sparta
