#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/console.h"
#include "core/error.h"
#include "core/interrupt.h"
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
  CLI::App* cmd = app.add_subcommand("train", "Train a GPT from a TOML config (see docs/config.md)");
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
    Config cfg = load_config(args->config, args->sets);
    TrainOptions opt;
    opt.resume = args->resume;
    opt.force = args->force;
    opt.until = args->until;
    opt.sets = args->sets;
    install_interrupt_handlers();
    TrainResult r;
    try {
      // In here, so a run that stops early ends its bar before the message below.
      ConsoleTrainReporter reporter(/*progress=*/!args->quiet, /*notices=*/true);
      opt.reporter = &reporter;
      r = run_training(cfg, opt);
    } catch (const Interrupted& e) {
      std::vector<std::string> resume = {"train", args->config};
      for (const std::string& s : args->sets) resume.insert(resume.end(), {"--set", s});
      resume.push_back("--resume");
      std::fprintf(stderr, "%s\nresume with: %s\n", e.what(), resume_command(resume).c_str());
      throw;
    }
    std::printf("trained %lld steps: loss %.4f", static_cast<long long>(r.steps), r.final_loss);
    if (r.final_val_loss >= 0) std::printf(", val_loss %.4f", r.final_val_loss);
    std::printf(", %.0f tokens/s (median); output in %s\n", r.median_tokens_per_s, cfg.train.out.c_str());
  });
}

}  // namespace sparta::cli
