#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/console.h"
#include "core/parallel.h"
#include "data/text_corpus.h"
#include "data/token_dataset.h"
#include "eval/evaluate.h"
#include "run/checkpoint_load.h"
#include "run/run_setup.h"

namespace sparta::cli {

void add_eval_command(CLI::App& app) {
  struct Args {
    std::string checkpoint, data, task;
    int64_t examples = 0;
    int64_t seed = -1;
    std::vector<std::string> sets;
    bool json = false;
    int threads = 0;
    int64_t batch = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "Mean loss per token and perplexity on a text file or folder, or accuracy on a built-in task");
  cmd->add_option("--checkpoint", a->checkpoint, "Run folder (newest checkpoint) or one checkpoint folder")->required();
  auto* data = cmd->add_option("--data", a->data, "UTF-8 text file or folder");
  auto* task = cmd->add_option("--task", a->task, "Built-in task instead of text: passkey | mqar (examples of model.context tokens; "
                                                 "task sizes from data.passkey_digits / data.mqar_* , overridable with --set)");
  data->excludes(task);
  task->excludes(data);
  auto* examples = cmd->add_option("--examples", a->examples, "Task examples to score (>= 1); default: data.task_eval_examples");
  cmd->add_option("--seed", a->seed, "Task example stream; default: the validation stream of the training seed");
  cmd->add_flag("--json", a->json, "Print {\"loss\": ..., \"tokens\": ..., \"perplexity\": ...}");
  cmd->add_option("--batch-size", a->batch, "Windows per forward pass; 0 = train.batch_size");
  cmd->add_option("--threads", a->threads, "Threads; 0 = all cores this process may use")->capture_default_str();
  cmd->add_option("--set", a->sets, "Override a saved config key");
  cmd->callback([a, examples] {
    SPARTA_CHECK(!a->data.empty() || !a->task.empty(), "[eval] give --data FILE_OR_FOLDER or --task passkey|mqar");
    SPARTA_CHECK(examples->count() == 0 || a->examples >= 1, "[eval] --examples must be >= 1, got ", a->examples);
    SPARTA_CHECK(examples->count() == 0 || !a->task.empty(), "[eval] --examples counts --task examples; give --task "
                 "passkey|mqar (a --data file is scored whole)");
    SPARTA_CHECK(a->batch >= 0, "[eval] --batch-size must be >= 1 (0 = train.batch_size), got ", a->batch);
    SPARTA_CHECK(a->threads >= 0, "[eval] --threads must be >= 0 (0 = all usable cores), got ", a->threads);
    init_compute_threads(a->threads);
    std::vector<std::string> sets = a->sets;
    if (!a->task.empty()) sets.push_back("data.task=" + a->task);
    LoadedCheckpoint ck = load_checkpoint(a->checkpoint, sets);
    int64_t batch = a->batch > 0 ? a->batch : ck.config.train.batch_size;
    GPTActivations acts;
    if (!a->task.empty()) {
      TaskConfig task = task_config_from(ck.config);
      uint64_t seed = a->seed >= 0 ? static_cast<uint64_t>(a->seed)
                                   : task_validation_seed(static_cast<uint64_t>(ck.config.train.seed));
      int64_t n = examples->count() > 0 ? a->examples : ck.config.data.task_eval_examples;
      TaskEvalResult r = evaluate_task(*ck.model, acts, task, *ck.tokenizer, seed, n, batch);
      if (a->json) {
        nlohmann::json j = {{"task", task.kind},     {"accuracy", r.accuracy}, {"examples", r.examples},
                            {"loss", r.loss},        {"tokens", r.tokens},     {"length", task.length}};
        if (!r.source_recall.empty()) {
          j["source_recall"] = r.source_recall;
          j["source_recall_any_head"] = r.source_recall_any;
        }
        std::printf("%s\n", j.dump().c_str());
      } else {
        std::printf("%s: accuracy %.3f over %lld examples of %lld tokens, answer loss %.4f (checkpoint %s)\n",
                    task.kind.c_str(), r.accuracy, static_cast<long long>(r.examples),
                    static_cast<long long>(task.length), r.loss, ck.dir.string().c_str());
        for (size_t l = 0; l < r.source_recall.size(); ++l)
          std::printf("  layer %zu: the answer's source block is attended by %.1f%% of (answer, head) pairs, "
                      "by some head for %.1f%% of answers\n",
                      l, 100.0 * r.source_recall[l], 100.0 * r.source_recall_any[l]);
      }
      return;
    }
    TextCorpus corpus = read_text_corpus(a->data, "--data");
    print_notices(corpus.notices);
    TokenSplit all = tokenize_and_split(corpus, *ck.tokenizer, 0.0);
    EvalResult r = evaluate_tokens(*ck.model, acts, all.train, batch);
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
