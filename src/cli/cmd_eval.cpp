#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/parallel.h"
#include "data/text_corpus.h"
#include "data/token_dataset.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace sparta::cli {

void add_eval_command(CLI::App& app) {
  struct Args {
    std::string checkpoint, data;
    std::vector<std::string> sets;
    bool json = false;
    int threads = 0;
    int64_t batch = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("eval", "Mean loss per token and perplexity of a checkpoint on a text file or folder");
  cmd->add_option("--checkpoint", a->checkpoint, "Run folder (newest checkpoint) or one checkpoint folder")->required();
  cmd->add_option("--data", a->data, "UTF-8 text file or folder")->required();
  cmd->add_flag("--json", a->json, "Print {\"loss\": ..., \"tokens\": ..., \"perplexity\": ...}");
  cmd->add_option("--batch-size", a->batch, "Windows per forward pass; 0 = train.batch_size");
  cmd->add_option("--threads", a->threads, "Threads; 0 = all cores")->capture_default_str();
  cmd->add_option("--set", a->sets, "Override a saved config key");
  cmd->callback([a] {
    init_compute_threads(a->threads);
    LoadedCheckpoint ck = load_checkpoint(a->checkpoint, a->sets);
    TextCorpus corpus = read_text_corpus(a->data);
    TokenSplit all = tokenize_and_split(corpus, *ck.tokenizer, 0.0);
    int64_t batch = a->batch > 0 ? a->batch : ck.config.train.batch_size;
    EvalResult r = evaluate_tokens(*ck.model, all.train, batch);
    if (a->json) {
      nlohmann::json j = {{"loss", r.loss}, {"tokens", r.tokens}, {"perplexity", std::exp(r.loss)}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("loss %.4f  perplexity %.3f  over %lld tokens (checkpoint %s, step %lld)\n", r.loss,
                  std::exp(r.loss), static_cast<long long>(r.tokens), ck.dir.string().c_str(),
                  static_cast<long long>(ck.state.step));
    }
  });
}

}  // namespace sparta::cli
