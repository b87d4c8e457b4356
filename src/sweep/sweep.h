#pragma once
// Layer sweep: grids of training runs and their comparison.
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
// user guide; sweep/sweep_report.h holds the records, table and plot.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "run/config.h"
#include "train/trainer.h"
#include "sweep/sweep_equivalence.h"
#include "sweep/sweep_report.h"

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
  SweepEquivalence equivalence;     // find_equivalent_runs(configs): runs that train the same model
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

struct SweepResult {
  std::vector<SweepRecord> records;  // one per run, in plan order
  SweepMetric metric = SweepMetric::ValLoss;
  int64_t trained = 0, skipped = 0, failed = 0;
  std::string table;                 // sweep_table_markdown(records, metric)
};

// What a sweep tells its user, as plain data, in this order: notice()s
// before the first run; per run either run_skipped() or run_started(), the
// run's own training reports (to training()), then run_finished() or
// run_interrupted(); finished() at the end. `runs` is the plan's run count.
// Every method defaults to doing nothing.
class SweepReporter {
 public:
  virtual ~SweepReporter() = default;
  // A line about the machine, e.g. "warning: ...".
  virtual void notice(const std::string& line) {}
  // Where every run's training reports; nullptr: nowhere.
  virtual TrainReporter* training() { return nullptr; }
  // Finished by an earlier invocation (--resume): not trained again.
  virtual void run_skipped(const SweepRun& run, int64_t runs) {}
  virtual void run_started(const SweepRun& run, int64_t runs) {}
  // Trained or failed (rec.ok, rec.error).
  virtual void run_finished(const SweepRun& run, int64_t runs, const SweepRecord& rec) {}
  // Ctrl-C during the run; run_sweep throws Interrupted next.
  virtual void run_interrupted(const SweepRun& run, int64_t runs) {}
  virtual void finished(const SweepResult& result, double seconds) {}
};

struct SweepOptions {
  bool resume = false;          // keep the finished runs of the sweep already in OUT, redo the others from scratch
  bool force = false;           // delete the sweep files and run folders in OUT (old plan's and this one's), start over
  SweepReporter* reporter = nullptr;  // not owned; nullptr: report nothing
};

// Everything about OUT that would make run_sweep refuse, checked without
// writing anything (what `sweep --dry-run` uses): sparta::Error for
// --resume with --force, results in OUT without --resume / --force, a
// --resume of another grid or base config or without sweep.json, and a
// non-empty run folder no sweep made unless --force.
void check_sweep_out(const SweepPlan& plan, const SweepOptions& opt);

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
