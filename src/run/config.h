#pragma once
// Layer run: what describes a run (config) and loads its model, without the trainer.
// The run configuration: a TOML file with [model] (and its [model.dsa]
// table), [tokenizer], [data] and [train] sections, every key overridable with `--set section.key=value`.
// Unknown keys and bad values are errors (a typo must not silently train the
// wrong model). docs/config.md lists every key.
#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "ops/dsa_budget.h"

namespace sparta {

struct ModelConfig {
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t d_model = 256;
  int64_t context = 128;
  std::string attention = "dense";  // a name in ops/attention_registry.h
  double rope_base = 10000.0;
  int64_t rope_dims = 0;  // RoPE-rotated dims per head; 0 = the whole head (see ops/rope.h)
  DsaConfig dsa;                    // [model.dsa]: used by "window" and "dsa"
};

struct TokenizerConfig {
  std::string kind = "byte";   // "byte" | "wordpiece"
  int64_t vocab_size = 257;    // byte: must be 257; wordpiece: size to train
  bool lowercase = true;       // wordpiece only
  std::string vocab_file;      // wordpiece: load this BERT vocab.txt instead of training
};

struct DataConfig {
  std::string train;           // UTF-8 text file or folder
  double val_fraction = 0.05;
  // Built-in synthetic task instead of text: "" (text) | "passkey" | "mqar".
  // Examples are model.context tokens long, generated from train.seed.
  std::string task;
  int64_t passkey_digits = 5;
  int64_t mqar_pairs = 16;
  int64_t mqar_queries = 8;
  int64_t task_eval_examples = 64;  // validation examples (a separate seed)
};

struct TrainConfig {
  int64_t batch_size = 8;
  int64_t grad_accum = 1;  // micro-batches of batch_size per optimizer step
  int64_t steps = 1000;
  double lr = 1e-3;
  int64_t warmup = 100;
  double weight_decay = 0.1;
  double grad_clip = 1.0;      // <= 0 disables clipping
  int64_t seed = 1337;
  int64_t eval_every = 100;    // 0 = only at the end
  int64_t ckpt_every = 500;    // 0 = only at the end
  int64_t threads = 0;         // 0 = all cores
  std::string out = "runs/default";
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double min_lr_ratio = 0.1;
  int64_t keep_checkpoints = 3;
  int64_t eval_batches = 0;    // 0 = the whole validation split
  // Steps with a non-finite loss or gradient norm are skipped (no update);
  // this many in a row stop the run with an error.
  int64_t max_bad_steps = 3;
  // Start from the weights of this checkpoint (a run folder: its newest
  // complete checkpoint; or one checkpoint folder) instead of a random
  // init; "" = none. Its model shape and tokenizer must match; model.context
  // and the attention settings may differ. Optimizer and step start fresh.
  std::string init_from;
  // What the matrix products compute in: "fp32" | "bf16" | "fp16" |
  // "fp32-fast" (nn/precision.h; docs/config.md). Master weights, optimizer
  // state and checkpoints are FP32 in every precision.
  std::string precision = "fp32";
};

// [precision]: the per-module policy and fp16's dynamic loss scaling
// (PyTorch GradScaler semantics; train/loss_scaler.h).
struct PrecisionConfig {
  // Matrix-product modules kept FP32 under bf16/fp16/fp32-fast, as glob
  // patterns over h.<layer>.attn.qkv|attn.proj|mlp.fc|mlp.proj and head.
  std::vector<std::string> fp32 = {"head"};
  bool loss_scaling = true;       // fp16 only: scale the loss, unscale the gradients
  double init_scale = 65536.0;    // 2^16
  double growth_factor = 2.0;     // after growth_interval finite steps in a row
  double backoff_factor = 0.5;    // on a step with an inf/NaN gradient (skipped)
  int64_t growth_interval = 2000;
};

// [dist]: data-parallel training over several processes (mpirun -np N
// sparta train ...); ignored by a run of one process. docs/distributed.md.
struct DistConfig {
  // How gradients travel between ranks: "none" (FP32) | "bf16" | "q4"
  // (4-bit blocks with error feedback; dist/gradient_exchange.h).
  std::string compress = "none";
  int64_t q4_block = 128;             // values per FP32 scale in q4
  bool error_feedback = true;         // q4: carry what quantization dropped into the next step
  int64_t full_precision_every = 0;   // every K-th step exchanges FP32 (0 = never)
  int64_t compress_after = 0;         // the first W steps exchange FP32 (warm-up)
  double timeout_s = 60.0;            // a collective waiting longer fails the job
  // Gradients are exchanged in buckets of whole layers of at least this
  // many MiB, each as soon as backward has finished it (0 = one bucket,
  // after the whole backward).
  double bucket_mb = 4.0;
};

struct Config {
  ModelConfig model;
  TokenizerConfig tokenizer;
  DataConfig data;
  TrainConfig train;
  PrecisionConfig precision;
  DistConfig dist;
};

// Parses TOML text (`source` names it in errors), applies overrides of the
// form "section.key=value" in order, then validates.
Config parse_config(std::string_view toml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {});
Config load_config(const std::filesystem::path& file, const std::vector<std::string>& overrides = {});
// The text of a config file; sparta::Error "[config] config file 'x' does not
// exist" or "... is a folder, not a config file" otherwise.
std::string read_config_text(const std::filesystem::path& file);
// Applies more overrides to an existing config and re-validates.
void apply_overrides(Config& cfg, const std::vector<std::string>& overrides);
// Throws sparta::Error naming the first bad value.
void validate_config(const Config& cfg);
// Settings that are valid but probably not meant, one message each (no
// "warning:" prefix), e.g. train.warmup longer than train.steps (quick runs
// do that on purpose, so it is not an error).
std::vector<std::string> config_warnings(const Config& cfg);
// The fully resolved config as TOML (round-trips through parse_config).
std::string config_to_toml(const Config& cfg);
// The fully resolved config as a JSON object nested like the TOML tables:
// {"model": {"n_layer": 4, ..., "dsa": {"block": 64, ...}}, "tokenizer": {...},
// "data": {...}, "train": {...}}; numbers are JSON numbers (floats in their
// shortest round-trip form), booleans and strings as such.
nlohmann::ordered_json config_to_json(const Config& cfg);
// Every "section.key" the parser knows, for help text.
std::vector<std::string> config_keys();
// The value of one "section.key" as config_to_toml prints it (strings
// quoted); sparta::Error for an unknown key.
std::string config_value(const Config& cfg, const std::string& key);

// The first of `keys` whose value differs between two configs, as
// "model.d_model is 32 in <a_name> but 64 in <b_name>"; "" when all agree.
std::string config_difference(const Config& a, const Config& b, const std::vector<std::string>& keys,
                              const std::string& a_name, const std::string& b_name);

// The settings a checkpoint's weights are laid out for: n_layer, n_head,
// d_model and the tokenizer's kind and vocab_size.
const std::vector<std::string>& weight_shape_keys();

// Copies the model settings that carry no weights — model.context, RoPE
// (rope_base, rope_dims), model.attention, every model.dsa key and the
// compute precision (train.precision, precision.fp32) — from one config to
// another: a checkpoint's weights run with another run's choice of them
// (train.init_from: dense FP32 pre-training, then DSA in bf16 at a longer
// context).
void copy_weightless_model_settings(const Config& from, Config& to);

// The keys `train --resume` may change with --set: they carry no weights,
// leave the data stream and optimizer state as they are, and only decide
// how long, how often and where the run goes on (plus the DSA key budget).
// Every other key comes from the checkpoint's config. docs/config.md lists them.
const std::vector<std::string>& resume_safe_keys();

}  // namespace sparta
