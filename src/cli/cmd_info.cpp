#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "nn/precision.h"
#include "run/checkpoint_load.h"

namespace sparta::cli {
namespace {

// {"mode": "bf16", "modules": {"h.0.attn.qkv": "bf16", ..., "head": "fp32"},
//  "attention": {"h.0.attn.core": "bf16", ...},
//  "loss_scale": 65536.0 (fp16 with loss scaling, when checkpointed)}
nlohmann::ordered_json precision_json(const Config& cfg, double loss_scale) {
  const Precision p = parse_precision(cfg.train.precision);
  nlohmann::ordered_json modules = nlohmann::ordered_json::object();
  for (const std::string& name : matmul_module_names(cfg.model.n_layer))
    modules[name] = matmul_precision_label(module_precision(p, cfg.precision.fp32, name));
  nlohmann::ordered_json attention = nlohmann::ordered_json::object();
  for (int64_t l = 0; l < cfg.model.n_layer; ++l)
    attention[attention_module_name(l)] = attention_precision_label(p, cfg.precision.fp32, l);
  nlohmann::ordered_json j = {{"mode", cfg.train.precision}, {"modules", modules}, {"attention", attention}};
  if (loss_scale > 0) j["loss_scale"] = loss_scale;
  return j;
}

// {"ranks": 2, "compress": "q4", "q4_block": 128, ...}: the processes
// that wrote the checkpoint and the [dist] settings of the run.
nlohmann::ordered_json dist_json(const Config& cfg, int64_t ranks) {
  nlohmann::ordered_json j = {{"ranks", ranks}};
  const nlohmann::ordered_json all = config_to_json(cfg);
  for (const auto& [key, value] : all["dist"].items()) j[key] = value;
  return j;
}

// "2 processes, gradients exchanged as q4 (blocks of 128, error feedback),
// in buckets of 4 MiB"
std::string dist_summary(const Config& cfg, int64_t ranks) {
  if (ranks == 1) return "1 process";
  const DistConfig& d = cfg.dist;
  std::string s = cat(ranks, " processes, gradients exchanged as ", d.compress);
  if (d.compress == "q4")
    s += cat(" (blocks of ", d.q4_block, d.error_feedback ? ", error feedback)" : ", no error feedback)");
  if (d.compress != "none" && d.compress_after > 0) s += cat(", FP32 for the first ", d.compress_after, " steps");
  if (d.compress != "none" && d.full_precision_every > 0) s += cat(", FP32 every ", d.full_precision_every, " steps");
  s += d.bucket_mb > 0 ? cat(", in buckets of ", d.bucket_mb, " MiB") : std::string(", in one bucket");
  return s;
}

}  // namespace

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
                                  {"precision", precision_json(ck.config, ck.state.loss_scale)},
                                  {"dist", dist_json(ck.config, ck.state.ranks)},
                                  {"config", config_to_json(ck.config)}};
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    std::string precision = precision_summary(parse_precision(ck.config.train.precision), ck.config.precision.fp32,
                                              ck.config.model.n_layer);
    if (ck.state.loss_scale > 0) precision += cat("; loss scale ", ck.state.loss_scale);
    std::printf("checkpoint  %s\nstep        %lld\nparameters  %lld (%.2fM)\ntokens seen %lld\ntokenizer   %s, vocab %lld\n"
                "precision   %s\ntrained on  %s\n\n%s",
                ck.dir.string().c_str(), static_cast<long long>(ck.state.step), params, params / 1e6,
                static_cast<long long>(ck.state.tokens_seen), ck.tokenizer->kind().c_str(),
                static_cast<long long>(ck.tokenizer->vocab_size()), precision.c_str(),
                dist_summary(ck.config, ck.state.ranks).c_str(),
                config_to_toml(ck.config).c_str());
  });
}

}  // namespace sparta::cli
