#pragma once
// The results side of `sparta sweep`: one record per run (a sweep.jsonl
// line), which metric counts as quality, the best run and the Pareto front,
// and the sweep.md table and sweep.svg plot made from the records. Nothing
// here trains or touches the filesystem, so all of it is testable from
// hand-made records. sweep/sweep.h (planning and run_sweep) includes this.
#include <cstdint>
#include <limits>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

namespace sparta {

using SweepSetting = std::pair<std::string, std::string>;  // (key, value)

// "model.dsa.top_k=64 model.attention=dsa" (progress lines, errors).
std::string sweep_label(const std::vector<SweepSetting>& settings);

// The last part of a config key: "model.dsa.top_k" -> "top_k" (slugs, plot labels).
std::string sweep_short_key(const std::string& key);

// {"model.dsa.top_k": "64", "model.attention": "dsa"}: the settings as a JSON
// object in setting order, values as typed (records and the sweep.json plan).
nlohmann::ordered_json sweep_settings_json(const std::vector<SweepSetting>& settings);

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
  int64_t same_as = 0;                 // > 0: this run trains the same model as run #same_as
                                       // (sweep/sweep_equivalence.h); its differences are noise
};

// One line of sweep.jsonl (no newline), keys in this order:
//   {"index","run","settings":{key: value-as-typed, ...},"status":"ok"|"failed",
//    ["error"], ["task"], "steps","final_loss","val_loss",["val_accuracy"],
//    "tokens_per_s","wall_s","peak_tracked_bytes",["same_as"]}
// "error" only when failed, "task" and "val_accuracy" only for task runs,
// "same_as" only for a run equivalent to an earlier one; unknown numbers are
// null.
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
// "validation loss (lower is better)": the axis title / quality line of `metric`.
std::string metric_title(SweepMetric metric);
// "val_loss 2.3107" (accuracy with 3 decimals, losses with 4): `r`'s value of
// `metric` with its name.
std::string metric_text(const SweepRecord& r, SweepMetric metric);

// Position in `records` of the best successful run with a finite metric:
// lowest loss / highest accuracy; ties go to the lower validation loss, then
// the faster run, then the earlier one. Runs equivalent to an earlier one
// (same_as > 0) are never picked: only noise would set them apart. -1 when
// there is none.
int64_t best_record(const std::vector<SweepRecord>& records, SweepMetric metric);

// Which runs are on the quality/speed Pareto front: successful, with a
// finite metric and speed, and no other such run at least as fast and at
// least as good while strictly better in one of the two. These are the
// settings worth choosing between. Runs with same_as > 0 are left out (they
// repeat another run). result[i] belongs to records[i].
std::vector<bool> pareto_front(const std::vector<SweepRecord>& records, SweepMetric metric);

// Markdown table, one row per record in the given order, columns padded so
// it also reads well as plain text:
//   | # | <one column per grid key> | steps | loss | val_loss | [val_acc] | tok/s | wall | peak MiB | note |
// `note` holds "**best**" for best_record, "pareto" for the other runs on the
// Pareto front, "= #N" for a run equivalent to run N and "failed: <error>"
// for failed runs; "-" marks unknown values.
std::string sweep_table_markdown(const std::vector<SweepRecord>& records, SweepMetric metric);

// The quality axis range of sweep_plot_svg for data in [lo, hi] (before
// round ticks): the range padded by 8% on each side, and at least 2% of the
// largest magnitude wide (centred on the data), so differences far below
// what a run-to-run change means (rounding noise of 1e-8) are drawn as
// the flat line they are instead of being stretched to the full height.
std::pair<double, double> sweep_quality_range(double lo, double hi);

// Self-contained SVG scatter plot of the successful runs: x = training
// tokens/s, y = metric_value; each point labelled with its settings
// ("top_k=64 window=128": the last part of each key), the best point
// highlighted, the Pareto front joined by a dashed line. Runs without a
// finite x or y are left out; no runs at all gives an empty chart saying so.
std::string sweep_plot_svg(const std::vector<SweepRecord>& records, SweepMetric metric, const std::string& title);

// One progress line for a successful run:
// "val_loss 2.3107 | loss 2.4012 | 41.2k tok/s | 12.3s" (task runs lead with
// "val_accuracy 0.875 | "; val_loss only when known; wall time with decimals
// under a minute, "-" when unknown).
std::string sweep_run_summary(const SweepRecord& r);

}  // namespace sparta
