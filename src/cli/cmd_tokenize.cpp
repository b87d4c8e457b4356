#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/console.h"
#include "data/text_corpus.h"
#include "data/token_dataset.h"
#include "io/atomic_file.h"
#include "run/config.h"
#include "run/run_setup.h"

namespace sparta::cli {

void add_tokenize_command(CLI::App& app) {
  struct Args {
    std::string config, out;
    std::vector<std::string> sets;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "tokenize", "Write a config's train/val token streams (int32 little-endian) for outside tools, e.g. the PyTorch comparison");
  cmd->add_option("config", a->config, "Config file")->required();
  cmd->add_option("--out", a->out, "Output folder: train.bin, val.bin, meta.json, tokenizer files")->required();
  cmd->add_option("--set", a->sets, "Override a config key");
  cmd->callback([a] {
    Config cfg = load_config(a->config, a->sets);
    TextCorpus corpus = read_text_corpus(cfg.data.train);
    print_notices(corpus.notices);
    auto tok = build_tokenizer(cfg, corpus);
    TokenSplit split = tokenize_and_split(corpus, *tok, cfg.data.val_fraction);
    std::filesystem::create_directories(a->out);
    std::filesystem::path out = a->out;
    auto bytes = [](const std::vector<int32_t>& v) {
      return std::string_view(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(int32_t));
    };
    write_file_atomic(out / "train.bin", bytes(split.train));
    write_file_atomic(out / "val.bin", bytes(split.val));
    tok->save(out);
    nlohmann::json meta = {{"vocab_size", tok->vocab_size()},
                           {"train_tokens", split.train.size()},
                           {"val_tokens", split.val.size()},
                           {"tokenizer", tok->kind()}};
    write_file_atomic(out / "meta.json", meta.dump(2) + "\n");
    std::printf("%zu train + %zu val tokens (vocab %lld) written to %s\n", split.train.size(), split.val.size(),
                static_cast<long long>(tok->vocab_size()), a->out.c_str());
  });
}

}  // namespace sparta::cli
