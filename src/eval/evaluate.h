#pragma once
// Layer eval: measuring a model on held-out text or a synthetic task.
// Evaluation of a model without the trainer: mean next-token loss over a
// token stream, and loss, accuracy and attention source recall on a
// synthetic task. The trainer's validation and `sparta eval` both use it.
#include <cstdint>
#include <functional>
#include <vector>

#include "data/synthetic_tasks.h"
#include "data/tokenizer.h"
#include "nn/gpt.h"

namespace sparta {

// Evaluation split over the processes of a data-parallel run: process
// `index` of `count` takes batches index, index + count, ... and
// `sum_over_shards` (required when count > 1) sums n doubles over the
// processes in place, so that every process ends with the whole result.
struct EvalShard {
  int64_t index = 0, count = 1;
  std::function<void(double* values, int64_t n)> sum_over_shards;
};

struct EvalResult {
  double loss = 0.0;     // mean loss per target token
  int64_t tokens = 0;    // target tokens counted
  bool partial = false;  // cut short by Ctrl-C (on any process)
};
// Mean next-token loss over non-overlapping context windows of `tokens`,
// `batch` windows per forward pass; max_batches 0 = all. Windows are
// min(context, tokens.size() - 1) long: a stream shorter than the context is
// one window of its own length, never padded to the context. acts: the
// activations the forward passes use (a trainer passes its own, which fit).
EvalResult evaluate_tokens(GPT& model, GPTActivations& acts, const std::vector<int32_t>& tokens, int64_t batch,
                           int64_t max_batches = 0, const EvalShard& shard = {});

struct TaskEvalResult {
  double loss = 0.0;      // mean loss per answer token
  int64_t tokens = 0;     // answer tokens
  double accuracy = 0.0;  // fraction of examples with every answer token right (greedy)
  int64_t examples = 0;
  bool partial = false;   // cut short by Ctrl-C (on any process)
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
                             uint64_t seed, int64_t n, int64_t batch, const EvalShard& shard = {});
// Validation examples use their own stream, never the training one.
uint64_t task_validation_seed(uint64_t train_seed);

}  // namespace sparta
