#pragma once
// The training loop behind `sparta train`: data, tokenizer, model, AdamW,
// LR schedule, evaluation, metrics.jsonl, loss plot and atomic checkpoints.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "data/synthetic_tasks.h"
#include "data/text_corpus.h"
#include "data/tokenizer.h"
#include "nn/gpt.h"
#include "train/config.h"

namespace sparta {

struct TrainOptions {
  // Continue from OUT's newest complete checkpoint with the checkpoint's
  // config; `sets` may only change resume_safe_keys() (config.h).
  bool resume = false;
  bool force = false;    // start over in an OUT that already holds a run (its checkpoints and outputs are deleted)
  bool progress = true;  // progress bar + eval lines on stderr
  int64_t until = 0;     // > 0: stop (with a checkpoint) once this many steps are done
  std::vector<std::string> sets;  // the --set overrides as given (checked against the checkpoint on resume)
  // Warnings about the config, the data and the machine (config_warnings,
  // skipped files, load), printed once setup has passed; nullptr = none.
  std::FILE* notices = stderr;
};

struct TrainResult {
  int64_t steps = 0;
  double final_loss = 0.0;
  double final_val_loss = -1.0;  // -1 when there is no validation split
  double median_tokens_per_s = 0.0;
  size_t peak_tracked_bytes = 0;
};

// Trains into cfg.train.out, holding its RunLock (io/run_lock.h) throughout.
// Errors (sparta::Error) before anything is trained: --resume and --force
// together; --resume with no checkpoint, on a finished run or with a --set
// that changes an unsafe key; a run folder that holds a run and neither
// flag. A folder this call created is removed again if the run fails before
// its first step. Steps with a non-finite loss or gradient norm are skipped
// (no update; "skipped" in metrics.jsonl); train.max_bad_steps of them in a
// row end the run with an error. After install_interrupt_handlers(), a
// SIGINT/SIGTERM ends the current step (abandoning an evaluation), writes a
// checkpoint and throws Interrupted.
TrainResult run_training(const Config& cfg, const TrainOptions& opt);

// Byte tokenizer, a WordPiece vocab file, or a WordPiece vocabulary trained on the corpus.
std::unique_ptr<Tokenizer> build_tokenizer(const Config& cfg, const TextCorpus& corpus);

struct EvalResult {
  double loss = 0.0;   // mean loss per target token
  int64_t tokens = 0;  // target tokens counted
};
// Mean next-token loss over non-overlapping context windows of `tokens`,
// `batch` windows per forward pass; max_batches 0 = all. Windows are
// min(context, tokens.size() - 1) long: a stream shorter than the context is
// one window of its own length, never padded to the context. acts: the
// activations the forward passes use (a trainer passes its own, which fit).
EvalResult evaluate_tokens(GPT& model, GPTActivations& acts, const std::vector<int32_t>& tokens, int64_t batch,
                           int64_t max_batches = 0);

// The synthetic task a config describes (data.task set), examples of
// model.context tokens.
TaskConfig task_config_from(const Config& cfg);

struct TaskEvalResult {
  double loss = 0.0;      // mean loss per answer token
  int64_t tokens = 0;     // answer tokens
  double accuracy = 0.0;  // fraction of examples with every answer token right (greedy)
  int64_t examples = 0;
  // Sparse attention only (window, dsa; empty for dense), per layer: the
  // fraction of (answer token, head) pairs whose query block attends the key
  // block holding the answer's source (TaskExample::source_positions), and
  // the fraction of answer tokens where at least one head attends it. Says
  // whether the selection finds what the task needs, independently of
  // whether the model has learned to use it.
  std::vector<double> source_recall, source_recall_any;
};
// Examples 0..n-1 of the task stream seeded by `seed`, `batch` per forward pass.
TaskEvalResult evaluate_task(GPT& model, GPTActivations& acts, const TaskConfig& task, const Tokenizer& tok,
                             uint64_t seed, int64_t n, int64_t batch);
// Validation examples use their own stream, never the training one.
uint64_t task_validation_seed(uint64_t train_seed);

}  // namespace sparta
