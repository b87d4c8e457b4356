#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/console.h"
#include "core/error.h"
#include "core/interrupt.h"
#include "dist/agreement.h"
#include "dist/process_group.h"
#include "run/config.h"
#include "train/trainer.h"

namespace sparta::cli {

void add_train_command(CLI::App& app) {
  struct Args {
    std::string config;
    std::vector<std::string> sets;
    bool resume = false, force = false, quiet = false;
    int64_t until = 0;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "train", "Train a GPT from a TOML config (see docs/config.md); under mpirun -np N, data parallel over N processes");
  cmd->add_option("config", args->config, "Config file, e.g. configs/tiny.toml")->required();
  cmd->add_option("--set", args->sets, "Override a config key: --set train.steps=100 (repeatable)");
  cmd->add_flag("--resume", args->resume, "Continue from the newest complete checkpoint in train.out");
  cmd->add_flag("--force", args->force, "Start over even if train.out already holds a run");
  cmd->add_flag("--quiet", args->quiet, "No progress bar");
  auto* until = cmd->add_option("--until", args->until,
                                "Stop after this many steps (>= 1, with a checkpoint); the LR schedule still spans "
                                "train.steps");
  cmd->callback([args, until] {
    SPARTA_CHECK(until->count() == 0 || args->until >= 1, "[train] --until must be >= 1, got ",
                 args->until);
    // Launched by mpirun/srun as several processes: one group of them
    // (docs/distributed.md); alone: a group of one.
    std::unique_ptr<dist::ProcessGroup> group = dist::make_process_group();
    const bool root = group->rank() == 0;
    // Every rank reads the config; an error they share is printed once.
    Config cfg;
    std::exception_ptr config_error;
    try {
      cfg = load_config(args->config, args->sets);
    } catch (...) {
      config_error = std::current_exception();
    }
    dist::agree_on_failure(*group, config_error);
    TrainOptions opt;
    opt.resume = args->resume;
    opt.force = args->force;
    opt.until = args->until;
    opt.sets = args->sets;
    opt.group = group.get();
    install_interrupt_handlers();
    TrainResult r;
    try {
      // In here, so a run that stops early ends its bar before the message below.
      ConsoleTrainReporter reporter(/*progress=*/!args->quiet && root, /*notices=*/root);
      opt.reporter = root ? &reporter : nullptr;
      r = run_training(cfg, opt);
    } catch (const Interrupted& e) {
      if (!root) throw;
      std::vector<std::string> resume = {"train", args->config};
      for (const std::string& s : args->sets) resume.insert(resume.end(), {"--set", s});
      resume.push_back("--resume");
      std::fprintf(stderr, "%s\nresume with: %s\n", e.what(), resume_command(resume).c_str());
      throw;
    } catch (const JobStopped&) {
      throw;  // every rank stops on it together
    } catch (const std::exception& e) {
      if (group->size() == 1) throw;
      // One rank failed on its own while the others wait inside a
      // collective: say why, then end the whole job now rather than after
      // dist.timeout_s.
      const std::string what = e.what();
      if (what.find("rank ") == std::string::npos)
        std::fprintf(stderr, "sparta: error: rank %d: %s\n", group->rank(), what.c_str());
      else
        std::fprintf(stderr, "sparta: error: %s\n", what.c_str());
      std::fflush(stderr);
      group->abort(1);
      throw;
    }
    if (!root) return;
    std::printf("trained %lld steps: loss %.4f", static_cast<long long>(r.steps), r.final_loss);
    if (r.final_val_loss >= 0) std::printf(", val_loss %.4f", r.final_val_loss);
    std::printf(", %.0f tokens/s (median); output in %s\n", r.median_tokens_per_s, cfg.train.out.c_str());
    if (group->size() > 1)
      std::printf("data parallel over %d processes (dist.compress = %s)\n", group->size(), cfg.dist.compress.c_str());
  });
}

}  // namespace sparta::cli
