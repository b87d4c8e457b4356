#include "train/checkpoint.h"

#include <charconv>
#include <cstring>
#include <toml++/toml.h>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/checkpoint_store.h"
#include "io/safetensors.h"

namespace sparta {

namespace fs = std::filesystem;

namespace {
// The shortest text that reads back as the same float: eps 1e-8 is "1e-08",
// not std::to_string's "0.000000".
std::string float_text(float v) {
  char buf[32];
  return std::string(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
}
}  // namespace

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
  return g;
}

fs::path save_checkpoint(const fs::path& out_dir, const Config& cfg, GPT& model, AdamW& opt,
                         const TrainState& st, const Tokenizer& tok) {
  ParamStore& P = model.params();
  return commit_checkpoint(
      out_dir, st.step,
      [&](const fs::path& dir) {
        std::vector<SafetensorsEntry> weights, moments;
        for (const ParamInfo& p : P.params()) {
          weights.push_back({p.name, P.view(p)});
          moments.push_back({"adam_m." + p.name, Tensor::view(opt.m() + p.offset, p.shape)});
          moments.push_back({"adam_v." + p.name, Tensor::view(opt.v() + p.offset, p.shape)});
        }
        std::string step = std::to_string(st.step);
        write_safetensors(dir / "model.safetensors", weights, {{"format", "sparta-gpt-v1"}, {"step", step}});
        const AdamWHyper& h = opt.hyper();
        write_safetensors(dir / "optimizer.safetensors", moments,
                          {{"step", std::to_string(opt.steps_done())},
                           {"beta1", float_text(h.beta1)},
                           {"beta2", float_text(h.beta2)},
                           {"eps", float_text(h.eps)}});
        Tensor t_step = Tensor::empty({1}, DType::I64);
        t_step.data<int64_t>()[0] = st.step;
        Tensor t_rng = Tensor::empty({4}, DType::I64);
        std::memcpy(t_rng.raw(), st.rng.data(), sizeof(uint64_t) * 4);
        Tensor t_cur = Tensor::empty({2}, DType::I64);
        t_cur.data<int64_t>()[0] = st.cursor.epoch;
        t_cur.data<int64_t>()[1] = st.cursor.index;
        write_safetensors(dir / "train_state.safetensors",
                          {{"step", t_step}, {"rng", t_rng}, {"data_cursor", t_cur}},
                          {{"tokens_seen", std::to_string(st.tokens_seen)}});
        write_file_atomic(dir / "config.toml", config_to_toml(cfg));
        tok.save(dir);
      },
      static_cast<int>(cfg.train.keep_checkpoints));
}

namespace {

// Settings whose default changed after checkpoints without them were
// written: such a checkpoint gets the value it was trained with, before the
// caller's overrides. model.dsa.rank defaulted to "mean" until 2026-11-29.
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
  }
  all.insert(all.end(), overrides.begin(), overrides.end());
  return all;
}

}  // namespace

LoadedCheckpoint load_checkpoint(const fs::path& path, const std::vector<std::string>& overrides) {
  LoadedCheckpoint out;
  out.dir = resolve_checkpoint(path);
  out.config = load_config(out.dir / "config.toml", with_legacy_defaults(out.dir / "config.toml", overrides));
  out.tokenizer = load_tokenizer(out.dir);
  out.model = std::make_unique<GPT>(gpt_config_from(out.config, out.tokenizer->vocab_size()));
  SafetensorsFile f = SafetensorsFile::read(out.dir / "model.safetensors");
  ParamStore& P = out.model->params();
  for (const ParamInfo& p : P.params()) {
    const Tensor& t = f.get(p.name, p.shape, DType::F32);
    std::memcpy(P.data() + p.offset, t.raw(), t.nbytes());
  }
  for (const std::string& name : f.names()) {
    bool known = false;
    for (const ParamInfo& p : P.params()) known = known || p.name == name;
    SPARTA_CHECK(known, "[checkpoint] ", (out.dir / "model.safetensors").string(), ": unexpected tensor '", name,
                 "' (the config describes a different model)");
  }
  fs::path state_file = out.dir / "train_state.safetensors";
  if (fs::exists(state_file)) {
    SafetensorsFile s = SafetensorsFile::read(state_file);
    out.state.step = s.get("step", {1}, DType::I64).data<int64_t>()[0];
    std::memcpy(out.state.rng.data(), s.get("rng", {4}, DType::I64).raw(), sizeof(uint64_t) * 4);
    const int64_t* cur = s.get("data_cursor", {2}, DType::I64).data<int64_t>();
    out.state.cursor = {cur[0], cur[1]};
    auto it = s.metadata().find("tokens_seen");
    if (it != s.metadata().end()) out.state.tokens_seen = std::stoll(it->second);
    SPARTA_CHECK(out.state.step >= 0 && out.state.cursor.epoch >= 0 && out.state.cursor.index >= 0,
                 "[checkpoint] ", state_file.string(), ": negative step or data position");
  }
  return out;
}

void load_optimizer_state(const fs::path& ckpt_dir, AdamW& opt, GPT& model) {
  fs::path file = ckpt_dir / "optimizer.safetensors";
  SafetensorsFile f = SafetensorsFile::read(file);
  ParamStore& P = model.params();
  for (const ParamInfo& p : P.params()) {
    const Tensor& m = f.get("adam_m." + p.name, p.shape, DType::F32);
    const Tensor& v = f.get("adam_v." + p.name, p.shape, DType::F32);
    std::memcpy(opt.m() + p.offset, m.raw(), m.nbytes());
    std::memcpy(opt.v() + p.offset, v.raw(), v.nbytes());
  }
  auto it = f.metadata().find("step");
  SPARTA_CHECK(it != f.metadata().end(), "[checkpoint] ", file.string(), ": metadata has no 'step'");
  int64_t t = 0;
  try {
    t = std::stoll(it->second);
  } catch (...) {
    throw Error(cat("[checkpoint] ", file.string(), ": metadata step '", it->second, "' is not an integer"));
  }
  opt.set_steps_done(t);
}

}  // namespace sparta
