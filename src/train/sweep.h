#pragma once
// `sparta sweep`: train and evaluate every combination of a grid of config
// values (short runs), then compare quality against training speed.
//
//   OUT/sweep.json     the plan: base config, grid, run folders (for --resume / --force)
//   OUT/sweep.jsonl    one JSON record per finished run, rewritten atomically after each run
//   OUT/sweep.md       the results as a markdown table, best quality marked
//   OUT/sweep.svg      scatter plot: x = training tokens/s, y = quality, each point labelled
//   OUT/<NN>-<slug>/   each run's own train.out (checkpoints, metrics.jsonl, summary.json)
//
// Everything is validated (grid syntax, keys, every combination's config)
// before any run starts. Everything except run_sweep is testable without
// training (plan_sweep only reads the config file). docs/sweep.md is the
// user guide.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "train/config.h"

namespace sparta {

// Largest number of combinations one sweep may have.
constexpr int64_t kMaxSweepRuns = 256;

// One --grid option: a config key and the values to try, in the order given.
struct GridAxis {
  std::string key;                  // "model.dsa.top_k": a key config_keys() lists
  std::vector<std::string> values;  // {"16", "64", "256"}, as typed (load_config checks them)
};

// "model.dsa.top_k=16,64,256" -> {"model.dsa.top_k", {"16", "64", "256"}}.
// Surrounding spaces of the key and of each value are trimmed. Throws
// sparta::Error "[sweep] --grid '<spec>': ..." for: no '=', an empty key, a
// key that is not a config key, train.out (the sweep sets it per run), an
// empty value list, an empty value, or a value listed twice.
GridAxis parse_grid_spec(const std::string& spec);

// Every spec through parse_grid_spec; also rejects no spec at all and a key
// named by two specs.
std::vector<GridAxis> parse_grid(const std::vector<std::string>& specs);

using SweepSetting = std::pair<std::string, std::string>;  // (key, value)

struct SweepRun {
  int64_t index = 0;                  // 1-based position in the sweep
  std::vector<SweepSetting> settings;  // one per axis, in axis order
  std::string folder;                 // "<index>-<slug>", index zero-padded (run_folder_name)
};

// Cartesian product of the axes in order: the first axis varies slowest, the
// last fastest (like nested loops). Throws sparta::Error naming the count
// when there are more than max_runs combinations.
std::vector<SweepRun> expand_grid(const std::vector<GridAxis>& axes, int64_t max_runs = kMaxSweepRuns);

// Filesystem-safe name of a combination: per setting "<last key part>-<value>",
// joined by '+'; value characters outside [A-Za-z0-9._-] become '_'; at most
// 96 characters. {("model.dsa.top_k","64"), ("model.attention","dsa")} ->
// "top_k-64+attention-dsa".
std::string sweep_slug(const std::vector<SweepSetting>& settings);

// "<index>-<slug>" with the index zero-padded to max(2, digits of total).
std::string run_folder_name(int64_t index, int64_t total, const std::vector<SweepSetting>& settings);

// "model.dsa.top_k=64 model.attention=dsa" (progress lines, errors).
std::string sweep_label(const std::vector<SweepSetting>& settings);

// {"model.dsa.top_k=64", "model.attention=dsa"}: --set overrides for load_config.
std::vector<std::string> sweep_overrides(const std::vector<SweepSetting>& settings);

// A validated sweep: every combination's fully resolved config.
struct SweepPlan {
  std::filesystem::path config_file;
  std::vector<std::string> sets;    // --set overrides shared by every run
  std::vector<GridAxis> axes;
  std::filesystem::path out;        // the sweep folder
  std::string base_config;          // config_to_toml(config + sets), recorded to check --resume
  std::vector<SweepRun> runs;
  std::vector<Config> configs;      // configs[i] belongs to runs[i]; train.out = out / runs[i].folder
};

// Loads `config_file` with `sets`, parses and expands `grid_specs`, then
// loads the config once per combination (sets first, then the combination's
// values). Throws sparta::Error before anything is written: a grid error
// (see parse_grid_spec), a key in both --set and --grid, too many
// combinations, "[sweep] run 3/4 (model.n_head=3): [config] ..." for a
// combination the config rejects, or a data.train / tokenizer.vocab_file
// that does not exist. `out` empty: "<train.out of config + sets>-sweep".
SweepPlan plan_sweep(const std::filesystem::path& config_file, const std::vector<std::string>& grid_specs,
                     const std::vector<std::string>& sets, const std::filesystem::path& out = {});

inline constexpr double kSweepNaN = std::numeric_limits<double>::quiet_NaN();

// The result of one run. Metrics are NaN when unknown (a failed run, no
// validation split, a text run's accuracy).
struct SweepRecord {
  int64_t index = 0;
  std::string folder;                  // run folder name inside the sweep folder
  std::vector<SweepSetting> settings;
  std::string task;                    // data.task of the run; "" = text
  bool ok = true;                      // false: training threw; `error` says why
  std::string error;
  int64_t steps = 0;
  double final_loss = kSweepNaN;       // training loss of the last step
  double val_loss = kSweepNaN;         // text: validation loss per token; task: loss per answer token
  double val_accuracy = kSweepNaN;     // task only: fraction of validation examples fully right
  double tokens_per_s = kSweepNaN;     // median training tokens/s over the run's steps
  double wall_s = kSweepNaN;           // whole run incl. data preparation, evaluation, checkpoints
  int64_t peak_tracked_bytes = 0;      // the engine's peak tracked allocation during the run
};

// One line of sweep.jsonl (no newline), keys in this order:
//   {"index","run","settings":{key: value-as-typed, ...},"status":"ok"|"failed",
//    ["error"], ["task"], "steps","final_loss","val_loss",["val_accuracy"],
//    "tokens_per_s","wall_s","peak_tracked_bytes"}
// "error" only when failed, "task" and "val_accuracy" only for task runs;
// unknown numbers are null.
std::string sweep_record_json(const SweepRecord& r);
// Inverse of sweep_record_json; sparta::Error naming `source` on a malformed line.
SweepRecord sweep_record_from_json(const std::string& line, const std::string& source);

// What "quality" means in a sweep: task accuracy (higher is better) when any
// record is a task run, else validation loss when every successful run has
// one, else the final training loss (both lower is better).
enum class SweepMetric { ValAccuracy, ValLoss, TrainLoss };
SweepMetric sweep_metric(const std::vector<SweepRecord>& records);
// The record's value of `metric` (NaN if it has none).
double metric_value(const SweepRecord& r, SweepMetric metric);
// "val_accuracy", "val_loss", "final_loss"
const char* metric_name(SweepMetric metric);

// Position in `records` of the best successful run with a finite metric:
// lowest loss / highest accuracy; ties go to the lower validation loss, then
// the faster run, then the earlier one. -1 when there is none.
int64_t best_record(const std::vector<SweepRecord>& records, SweepMetric metric);

// Which runs are on the quality/speed Pareto front: successful, with a
// finite metric and speed, and no other such run at least as fast and at
// least as good while strictly better in one of the two. These are the
// settings worth choosing between. result[i] belongs to records[i].
std::vector<bool> pareto_front(const std::vector<SweepRecord>& records, SweepMetric metric);

// Markdown table, one row per record in the given order, columns padded so
// it also reads well as plain text:
//   | # | <one column per grid key> | steps | loss | val_loss | [val_acc] | tok/s | wall | peak MiB | note |
// `note` holds "**best**" for best_record, "pareto" for the other runs on the
// Pareto front and "failed: <error>" for failed runs; "-" marks unknown values.
std::string sweep_table_markdown(const std::vector<SweepRecord>& records, SweepMetric metric);

// Self-contained SVG scatter plot of the successful runs: x = training
// tokens/s, y = metric_value; each point labelled with its settings
// ("top_k=64 window=128": the last part of each key), the best point
// highlighted, the Pareto front joined by a dashed line. Runs without a
// finite x or y are left out; no runs at all gives an empty chart saying so.
std::string sweep_plot_svg(const std::vector<SweepRecord>& records, SweepMetric metric, const std::string& title);

struct SweepOptions {
  bool resume = false;          // keep the finished runs of the sweep already in OUT, redo the others from scratch
  bool force = false;           // delete the sweep files and run folders in OUT (old plan's and this one's), start over
  std::FILE* log = stderr;      // one progress line per run; nullptr = silent
  bool train_progress = false;  // also each run's training progress bar and eval lines (on stderr, if log)
};

struct SweepResult {
  std::vector<SweepRecord> records;  // one per run, in plan order
  SweepMetric metric = SweepMetric::ValLoss;
  int64_t trained = 0, skipped = 0, failed = 0;
  std::string table;                 // sweep_table_markdown(records, metric)
};

// Runs the plan. Refuses (sparta::Error, before training) an OUT that holds
// sweep results unless opt.resume or opt.force, a --resume whose sweep.json
// describes another grid or base config, and an existing non-empty run folder
// that no earlier sweep made unless opt.force. A run that throws
// sparta::Error is recorded as failed and the sweep goes on; the caller
// decides what that means for the exit status (see SweepResult::failed).
// Writes OUT/sweep.json first, then rewrites sweep.jsonl, sweep.md and
// sweep.svg atomically after every run (finished runs still ahead on a
// --resume included), so a killed sweep keeps every finished run. Resets the
// tracked-memory peak before each run.
SweepResult run_sweep(const SweepPlan& plan, const SweepOptions& opt);

}  // namespace sparta
