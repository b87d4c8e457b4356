#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "core/parallel.h"
#include "nn/generate.h"
#include "run/checkpoint_load.h"

namespace sparta::cli {

void add_generate_command(CLI::App& app) {
  struct Args {
    std::string checkpoint, prompt;
    std::vector<std::string> sets;
    SampleOptions o;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  a->o.temperature = 0.8f;
  a->o.top_k = 40;
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a checkpoint (uses the KV cache)");
  cmd->add_option("--checkpoint", a->checkpoint, "Run folder (newest checkpoint) or one checkpoint folder")->required();
  cmd->add_option("--prompt", a->prompt, "Text to continue")->required();
  cmd->add_option("--max-tokens", a->o.max_tokens,
                  "Tokens to generate; past the model's context the window slides (a note on stderr says so)")
      ->capture_default_str();
  cmd->add_option("--temperature", a->o.temperature, "Sampling temperature; 0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", a->o.top_k, "Sample among the k most likely tokens; 0 = all")->capture_default_str();
  cmd->add_option("--top-p", a->o.top_p, "Nucleus sampling mass in (0, 1]")->capture_default_str();
  cmd->add_option("--seed", a->o.seed, "Random seed")->capture_default_str();
  cmd->add_option("--threads", a->threads, "Threads; 0 = all cores this process may use")->capture_default_str();
  cmd->add_option("--set", a->sets, "Override a saved config key, e.g. --set model.attention=dense");
  cmd->callback([a] {
    // Everything that can fail is checked before the first byte of output,
    // so an error never follows half a generation.
    check_sample_options(a->o);
    SPARTA_CHECK(a->threads >= 0, "[generate] --threads must be >= 0 (0 = all usable cores), got ", a->threads);
    init_compute_threads(a->threads);
    LoadedCheckpoint ck = load_checkpoint(a->checkpoint, a->sets);
    std::vector<int32_t> prompt = ck.tokenizer->encode(a->prompt);
    const int64_t context = ck.model->config().context;
    for (const std::string& note : context_notices(static_cast<int64_t>(prompt.size()) + 1, a->o.max_tokens, context))
      std::fprintf(stderr, "note: %s\n", note.c_str());
    std::fputs(a->prompt.c_str(), stdout);
    std::fflush(stdout);
    generate(*ck.model, *ck.tokenizer, prompt, a->o, [&](const std::string& piece) {
      std::fputs(piece.c_str(), stdout);
      std::fflush(stdout);
    });
    std::fputs("\n", stdout);
  });
}

}  // namespace sparta::cli
