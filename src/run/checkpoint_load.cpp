#include "run/checkpoint_load.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <optional>
#include <toml++/toml.h>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "io/checkpoint_store.h"
#include "io/safetensors.h"

namespace sparta {

namespace fs = std::filesystem;

std::string first_non_finite_param(const ParamStore& P) {
  for (const ParamInfo& p : P.params()) {
    const float* w = P.data() + p.offset;
    for (int64_t i = 0; i < p.numel; ++i)
      if (!std::isfinite(w[i])) return p.name;
  }
  return "";
}

GPTConfig gpt_config_from(const Config& cfg, int64_t vocab_size) {
  GPTConfig g;
  g.vocab_size = vocab_size;
  g.context = cfg.model.context;
  g.n_layer = cfg.model.n_layer;
  g.n_head = cfg.model.n_head;
  g.d_model = cfg.model.d_model;
  g.attention = cfg.model.attention;
  g.dsa = cfg.model.dsa;
  g.rope_base = static_cast<float>(cfg.model.rope_base);
  g.rope_dims = cfg.model.rope_dims;
  g.precision = parse_precision(cfg.train.precision);
  g.fp32_modules = cfg.precision.fp32;
  return g;
}

namespace {

// Settings whose default changed after checkpoints without them were
// written: such a checkpoint gets the value it was trained with, before the
// caller's overrides. model.dsa.rank defaulted to "mean" until 2026-11-29;
// model.dsa.dense_len did not exist (= 0: the budget formula from the first
// token) until 2026-12-06.
std::vector<std::string> with_legacy_defaults(const fs::path& config_file, const std::vector<std::string>& overrides) {
  std::vector<std::string> all;
  if (fs::is_regular_file(config_file)) {
    toml::table root;
    try {
      root = toml::parse_file(config_file.string());
    } catch (const toml::parse_error&) {
      return overrides;  // load_config reports the error with its position
    }
    if (!root["model"]["dsa"]["rank"]) all.push_back("model.dsa.rank=mean");
    if (!root["model"]["dsa"]["dense_len"]) all.push_back("model.dsa.dense_len=0");
  }
  all.insert(all.end(), overrides.begin(), overrides.end());
  return all;
}

// The weights file must hold exactly the parameters of a model with `g`, each
// F32 with the model's shape. Checked from the header alone, before the model
// is allocated, so a config that does not fit the weights (or a header that
// declares huge tensors) fails at once instead of after allocating gigabytes.
void check_weights_header(const fs::path& file, const GPTConfig& g) {
  const std::vector<SafetensorsTensorInfo> header = SafetensorsFile::read_header(file);
  std::unordered_map<std::string, const SafetensorsTensorInfo*> by_name;
  for (const auto& t : header) by_name.emplace(t.name, &t);
  std::unordered_set<std::string> expected;
  GPT::for_each_parameter(g, [&](const std::string& name, const Shape& shape, bool) {
    auto it = by_name.find(name);
    SPARTA_CHECK(it != by_name.end(), "[checkpoint] ", file.string(), ": tensor '", name,
                 "' is missing (the file has ", header.size(), " tensors; the config describes a different model?)");
    const SafetensorsTensorInfo& t = *it->second;
    SPARTA_CHECK(t.shape == shape && t.dtype == DType::F32, "[checkpoint] ", file.string(), ": tensor '", name,
                 "' has shape ", shape_str(t.shape), " ", dtype_name(t.dtype), " but the model expects ",
                 shape_str(shape), " F32");
    expected.insert(name);
  });
  for (const auto& t : header)
    SPARTA_CHECK(expected.count(t.name), "[checkpoint] ", file.string(), ": unexpected tensor '",
                 t.name.substr(0, 120), "' (the config describes a different model)");
}

}  // namespace

int64_t checkpoint_metadata_int(const SafetensorsFile& f, const std::string& key, std::optional<int64_t> fallback) {
  auto it = f.metadata().find(key);
  if (it == f.metadata().end()) {
    SPARTA_CHECK(fallback.has_value(), "[checkpoint] ", f.path().string(), ": metadata has no '", key, "'");
    return *fallback;
  }
  const std::string& text = it->second;
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  SPARTA_CHECK(ec == std::errc() && end == text.data() + text.size() && !text.empty(), "[checkpoint] ",
               f.path().string(), ": metadata '", key, "' is '", text.substr(0, 40), text.size() > 40 ? "...'" : "'",
               ", not an integer", ec == std::errc::result_out_of_range ? " that fits in int64" : "");
  return v;
}

LoadedCheckpoint load_checkpoint(const fs::path& path, const std::vector<std::string>& overrides,
                                 const std::function<void(Config&)>& adjust) {
  LoadedCheckpoint out;
  out.dir = resolve_checkpoint(path);
  const fs::path config_file = out.dir / "config.toml";
  out.config = load_config(config_file, with_legacy_defaults(config_file, overrides));
  if (adjust) {
    adjust(out.config);
    validate_config(out.config);
  }
  // Overrides that reshape the model cannot apply to these weights: say which.
  const std::string differs = config_difference(load_config(config_file, with_legacy_defaults(config_file, {})),
                                                out.config, weight_shape_keys(), "the checkpoint", "the overrides");
  SPARTA_CHECK(differs.empty(), "[checkpoint] ", out.dir.string(), ": ", differs,
               " (the weights have the checkpoint's shape)");
  out.tokenizer = load_tokenizer(out.dir);
  const GPTConfig model_config = gpt_config_from(out.config, out.tokenizer->vocab_size());
  const fs::path weights = out.dir / "model.safetensors";
  check_weights_header(weights, model_config);
  out.model = std::make_unique<GPT>(model_config);
  SafetensorsFile f = SafetensorsFile::read(weights);
  ParamStore& P = out.model->params();
  for (const ParamInfo& p : P.params()) {
    const Tensor& t = f.get(p.name, p.shape, DType::F32);
    std::memcpy(P.data() + p.offset, t.raw(), t.nbytes());
  }
  // get() above re-checks each shape; the file may have changed since the header check.
  SPARTA_CHECK(f.size() == P.params().size(), "[checkpoint] ", weights.string(), ": holds ", f.size(),
               " tensors, the model ", P.params().size(), " (file changed while loading?)");
  const std::string bad = first_non_finite_param(P);
  SPARTA_CHECK(bad.empty(), "[checkpoint] ", weights.string(), ": tensor '", bad,
               "' holds a NaN or an infinity; this checkpoint cannot be used");
  fs::path state_file = out.dir / "train_state.safetensors";
  if (fs::exists(state_file)) {
    SafetensorsFile s = SafetensorsFile::read(state_file);
    out.state.step = s.get("step", {1}, DType::I64).data<int64_t>()[0];
    std::memcpy(out.state.rng.data(), s.get("rng", {4}, DType::I64).raw(), sizeof(uint64_t) * 4);
    const int64_t* cur = s.get("data_cursor", {2}, DType::I64).data<int64_t>();
    out.state.cursor = {cur[0], cur[1]};
    out.state.tokens_seen = checkpoint_metadata_int(s, "tokens_seen", 0);
    out.state.loss_scale_good_steps = checkpoint_metadata_int(s, "loss_scale_good_steps", 0);
    out.state.ranks = checkpoint_metadata_int(s, "ranks", 1);
    SPARTA_CHECK(out.state.ranks >= 1, "[checkpoint] ", state_file.string(), ": metadata 'ranks' is ",
                 out.state.ranks, ", not a process count");
    if (auto it = s.metadata().find("loss_scale"); it != s.metadata().end()) {
      const std::string& text = it->second;
      double v = 0;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      SPARTA_CHECK(ec == std::errc() && end == text.data() + text.size() && std::isfinite(v) && v > 0,
                   "[checkpoint] ", state_file.string(), ": metadata 'loss_scale' is '", text.substr(0, 40),
                   "', not a positive number");
      out.state.loss_scale = v;
    }
    SPARTA_CHECK(out.state.step >= 0 && out.state.cursor.epoch >= 0 && out.state.cursor.index >= 0,
                 "[checkpoint] ", state_file.string(), ": negative step or data position");
    SPARTA_CHECK(out.state.loss_scale_good_steps >= 0, "[checkpoint] ", state_file.string(),
                 ": metadata 'loss_scale_good_steps' is negative");
    SPARTA_CHECK(out.state.tokens_seen >= 0, "[checkpoint] ", state_file.string(), ": metadata 'tokens_seen' is ",
                 out.state.tokens_seen, ", negative");
  }
  return out;
}

}  // namespace sparta
