#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/commands.h"
#include "run/checkpoint_load.h"

namespace sparta::cli {

void add_info_command(CLI::App& app) {
  struct Args {
    std::string checkpoint;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("info", "Show a checkpoint's config, parameter count and step");
  cmd->add_option("--checkpoint", a->checkpoint, "Run folder (newest checkpoint) or one checkpoint folder")->required();
  cmd->add_flag("--json", a->json, "Machine-readable output");
  cmd->callback([a] {
    LoadedCheckpoint ck = load_checkpoint(a->checkpoint);
    long long params = static_cast<long long>(ck.model->params().count());
    if (a->json) {
      nlohmann::ordered_json j = {{"checkpoint", ck.dir.string()},
                                  {"step", ck.state.step},
                                  {"parameters", params},
                                  {"tokens_seen", ck.state.tokens_seen},
                                  {"tokenizer", ck.tokenizer->kind()},
                                  {"vocab_size", ck.tokenizer->vocab_size()},
                                  {"config", config_to_json(ck.config)}};
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    std::printf("checkpoint  %s\nstep        %lld\nparameters  %lld (%.2fM)\ntokens seen %lld\ntokenizer   %s, vocab %lld\n\n%s",
                ck.dir.string().c_str(), static_cast<long long>(ck.state.step), params, params / 1e6,
                static_cast<long long>(ck.state.tokens_seen), ck.tokenizer->kind().c_str(),
                static_cast<long long>(ck.tokenizer->vocab_size()), config_to_toml(ck.config).c_str());
  });
}

}  // namespace sparta::cli
