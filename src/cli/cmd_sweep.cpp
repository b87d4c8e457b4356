#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/console.h"
#include "core/error.h"
#include "core/interrupt.h"
#include "core/plural.h"
#include "report/progress_bar.h"
#include "sweep/sweep.h"

namespace sparta::cli {

namespace {

// The sweep's progress on stderr: one line per run (with `verbose`, a line
// before the run's own training output and a result line after it), nothing
// with `log` off. Skipped training steps are shown in any case.
class ConsoleSweepReporter : public SweepReporter {
 public:
  ConsoleSweepReporter(const SweepPlan& plan, bool log, bool verbose)
      : plan_(plan), log_(log), verbose_(log && verbose), train_(verbose_, verbose_) {}

  void notice(const std::string& line) override {
    if (log_) print_notices({line});
  }
  TrainReporter* training() override { return &train_; }
  void run_skipped(const SweepRun& run, int64_t runs) override {
    if (log_) std::fprintf(stderr, "%s: finished earlier, skipped\n", prefix(run, runs).c_str());
  }
  void run_started(const SweepRun& run, int64_t runs) override {
    if (!log_) return;
    // A quiet run's line is finished when the run ends.
    std::fprintf(stderr, verbose_ ? "%s\n" : "%s ...", prefix(run, runs).c_str());
    std::fflush(stderr);
  }
  void run_finished(const SweepRun& run, int64_t runs, const SweepRecord& rec) override {
    train_.abandon_bar();
    if (!log_) return;
    const std::string what = rec.ok ? sweep_run_summary(rec) : "failed: " + rec.error;
    if (verbose_)
      std::fprintf(stderr, "%s: %s\n", prefix(run, runs).c_str(), what.c_str());
    else
      std::fprintf(stderr, " %s\n", what.c_str());
  }
  void run_interrupted(const SweepRun& run, int64_t runs) override {
    train_.abandon_bar();
    if (log_) std::fprintf(stderr, "%s interrupted\n", verbose_ ? prefix(run, runs).c_str() : "");
  }
  void finished(const SweepResult& r, double seconds) override {
    if (!log_) return;
    std::fprintf(stderr, "sweep: %s (%lld trained, %lld skipped, %lld failed) in %s; results in %s\n",
                 count_noun(static_cast<int64_t>(plan_.runs.size()), "run").c_str(),
                 static_cast<long long>(r.trained), static_cast<long long>(r.skipped),
                 static_cast<long long>(r.failed), format_duration(seconds).c_str(),
                 (plan_.out / "sweep.md").string().c_str());
  }

 private:
  static std::string prefix(const SweepRun& run, int64_t runs) {
    return cat("[", run.index, "/", runs, "] ", sweep_label(run.settings));
  }

  const SweepPlan& plan_;
  bool log_, verbose_;
  ConsoleTrainReporter train_;
};

}  // namespace

void add_sweep_command(CLI::App& app) {
  struct Args {
    std::string config, out;
    std::vector<std::string> grid, sets;
    bool resume = false, force = false, quiet = false, verbose = false, dry_run = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "sweep", "Train and evaluate every combination of a grid of config values; table + quality-vs-speed plot "
               "(see docs/sweep.md)");
  cmd->add_option("config", a->config, "Config file, e.g. configs/tiny.toml")->required();
  // One value per occurrence, so `--grid k=1,2 CONFIG` never takes CONFIG as a second grid.
  cmd->add_option("--grid", a->grid,
                  "KEY=V1,V2,...: a config key and its values (repeatable; runs = every combination, the last "
                  "--grid varying fastest; at most 256)")
      ->required()
      ->allow_extra_args(false);
  cmd->add_option("--set", a->sets, "Override a config key for every run: --set train.steps=200 (repeatable)")
      ->allow_extra_args(false);
  cmd->add_option("--out", a->out, "Sweep folder; default: <train.out>-sweep");
  cmd->add_flag("--resume", a->resume, "Continue the sweep in OUT: keep finished runs, redo the others");
  cmd->add_flag("--force", a->force, "Delete the sweep results already in OUT (and their run folders), start over");
  auto* quiet = cmd->add_flag("--quiet", a->quiet, "No progress lines on stderr");
  cmd->add_flag("--verbose", a->verbose, "Also show each run's training progress bar and evaluations")->excludes(quiet);
  cmd->add_flag("--dry-run", a->dry_run,
                "Validate everything the sweep would (grid, every run's config, the --out folder with "
                "--resume / --force) and list the runs without training");
  cmd->callback([a] {
    SweepPlan plan = plan_sweep(a->config, a->grid, a->sets, a->out);
    SweepOptions opt;
    opt.resume = a->resume;
    opt.force = a->force;
    ConsoleSweepReporter reporter(plan, /*log=*/!a->quiet, a->verbose);
    opt.reporter = &reporter;
    install_interrupt_handlers();
    check_sweep_out(plan, opt);  // a refusal is the only line, before any note; --dry-run refuses the same
    if (a->dry_run) {
      std::printf("%s into %s:\n", count_noun(static_cast<int64_t>(plan.runs.size()), "run").c_str(),
                  plan.out.string().c_str());
      for (size_t i = 0; i < plan.runs.size(); ++i) {
        const SweepRun& r = plan.runs[i];
        const int64_t same = plan.equivalence.same_as[i];
        std::printf("  %s  %s%s\n", r.folder.c_str(), sweep_label(r.settings).c_str(),
                    same > 0 ? cat("  (= #", same, ")").c_str() : "");
      }
      for (const std::string& note : plan.equivalence.notes) std::printf("note: %s\n", note.c_str());
      return;
    }
    // Said before hours of training, so an uninformative grid can be fixed now.
    if (!a->quiet) {
      for (const std::string& note : plan.equivalence.notes) std::fprintf(stderr, "note: %s\n", note.c_str());
      std::vector<std::string> warned;  // each warning once, not once per run; --verbose runs print their own
      for (const Config& c : plan.configs)
        for (const std::string& w : a->verbose ? std::vector<std::string>{} : config_warnings(c))
          if (std::find(warned.begin(), warned.end(), w) == warned.end()) {
            std::fprintf(stderr, "warning: %s\n", w.c_str());
            warned.push_back(w);
          }
    }
    SweepResult r;
    try {
      r = run_sweep(plan, opt);
    } catch (const Interrupted& e) {
      std::vector<std::string> resume = {"sweep", a->config};
      for (const std::string& g : a->grid) resume.insert(resume.end(), {"--grid", g});
      for (const std::string& s : a->sets) resume.insert(resume.end(), {"--set", s});
      resume.insert(resume.end(), {"--out", plan.out.string(), "--resume"});
      std::fprintf(stderr, "%s\ncontinue with: %s\n", e.what(), resume_command(resume).c_str());
      throw;
    }
    std::printf("%s", r.table.c_str());
    const int64_t best = best_record(r.records, r.metric);
    if (best >= 0) {
      const SweepRecord& b = r.records[static_cast<size_t>(best)];
      std::printf("best %s: #%lld %s\n", metric_name(r.metric), static_cast<long long>(b.index),
                  sweep_label(b.settings).c_str());
    }
    std::printf("results: %s (sweep.jsonl, sweep.svg beside it)\n", (plan.out / "sweep.md").string().c_str());
    std::fflush(stdout);
    SPARTA_CHECK(r.failed == 0, "[sweep] ", r.failed, " of ", count_noun(static_cast<int64_t>(r.records.size()), "run"),
                 " failed (see ",
                 (plan.out / "sweep.md").string(), "; --resume retries them)");
  });
}

}  // namespace sparta::cli
