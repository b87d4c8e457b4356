#pragma once
// The training loop behind `sparta train`: data, tokenizer, model, AdamW,
// LR schedule, evaluation, metrics.jsonl, loss plot and atomic checkpoints.
// It prints nothing: what a user sees comes from a TrainReporter (the CLI's
// renders the banner, progress bar and eval lines).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "run/config.h"

namespace sparta {
namespace dist {
class ProcessGroup;
}

// The facts of a run the trainer hands to its reporter once setup has passed.
struct TrainStart {
  int64_t parameters = 0;
  std::string tokenizer;  // its kind: "byte", "wordpiece"
  int64_t vocab_size = 0;
  std::string task;       // data.task, or "" when training on text
  int64_t task_tokens = 0;                     // task: tokens per example
  int64_t train_tokens = 0, val_tokens = 0;    // text: the split
  int threads = 0;                      // compute threads of this process
  int ranks = 1;                        // processes training together
  std::string compress;                 // dist.compress when ranks > 1
  int64_t buckets = 1;                  // ranks > 1: gradient buckets per exchange
  bool overlapped = false;              // exchanged while backward goes on
  std::optional<int64_t> resumed_from;  // the checkpoint's step when resuming
  int64_t first_step = 0, total_steps = 0;
};

// One optimizer step done (skipped steps included).
struct StepReport {
  int64_t step = 0, total_steps = 0;  // step: steps completed
  double last_loss = 0;               // loss of the newest step that updated the weights
  int64_t tokens = 0;                 // tokens of this step
  double seconds = 0;                 // its wall time
};

// A validation that ran to completion (an interrupted one is not reported).
struct EvalReport {
  int64_t step = 0, total_steps = 0;
  double loss = 0;  // this step's training loss
  double val_loss = 0;
  std::optional<double> val_accuracy;  // synthetic tasks only
};

// What a run tells its user, as plain data. notice() comes during setup
// (data first, then config and machine after started()); then per step:
// step_skipped() when it made no update, evaluating() + evaluated() when it
// validates, step_done(); finished() after the last step. A run that throws
// stops calling. Every method defaults to doing nothing, so a caller
// overrides only what it shows.
class TrainReporter {
 public:
  virtual ~TrainReporter() = default;
  // A line about the config, the data or the machine, e.g. "warning: ...".
  virtual void notice(const std::string& line) {}
  virtual void started(const TrainStart& start) {}
  // step (1-based) had a non-finite loss or gradient norm, e.g. "loss is NaN".
  virtual void step_skipped(int64_t step, const std::string& reason) {}
  // A validation of step (1-based) begins; `loss` is the step's training loss.
  virtual void evaluating(int64_t step, double loss) {}
  virtual void evaluated(const EvalReport& eval) {}
  virtual void step_done(const StepReport& step) {}
  virtual void finished() {}
};

struct TrainOptions {
  // Continue from OUT's newest complete checkpoint with the checkpoint's
  // config; `sets` may only change resume_safe_keys() (config.h).
  bool resume = false;
  bool force = false;    // start over in an OUT that already holds a run (its checkpoints and outputs are deleted)
  int64_t until = 0;     // > 0: stop (with a checkpoint) once this many steps are done
  std::vector<std::string> sets;  // the --set overrides as given (checked against the checkpoint on resume)
  TrainReporter* reporter = nullptr;  // not owned; nullptr: report nothing
  // The processes training together, data parallel (dist/process_group.h;
  // not owned); nullptr: this process alone. Every rank calls run_training
  // with the same config and options; rank 0 alone writes the run folder,
  // and the others should be given no reporter.
  dist::ProcessGroup* group = nullptr;
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

}  // namespace sparta
