#include "train/checkpoint_save.h"

#include <charconv>
#include <cstring>
#include <map>
#include <optional>

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

fs::path save_checkpoint(const fs::path& out_dir, const Config& cfg, GPT& model, AdamW& opt,
                         const TrainState& st, const Tokenizer& tok,
                         const std::function<void(const fs::path&)>& extra) {
  ParamStore& P = model.params();
  // A checkpoint is what --resume, eval and init_from trust: never one that
  // cannot be used.
  const std::string bad = first_non_finite_param(P);
  SPARTA_CHECK(bad.empty(), "[checkpoint] not saving step ", st.step, " into '", out_dir.string(), "': weight '", bad,
               "' is not finite (NaN or infinity)");
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
        std::map<std::string, std::string> meta = {{"tokens_seen", std::to_string(st.tokens_seen)},
                                                   {"ranks", std::to_string(st.ranks)}};
        if (st.loss_scale > 0) {
          char buf[32];
          meta["loss_scale"] = std::string(buf, std::to_chars(buf, buf + sizeof buf, st.loss_scale).ptr);
          meta["loss_scale_good_steps"] = std::to_string(st.loss_scale_good_steps);
        }
        write_safetensors(dir / "train_state.safetensors",
                          {{"step", t_step}, {"rng", t_rng}, {"data_cursor", t_cur}}, meta);
        write_file_atomic(dir / "config.toml", config_to_toml(cfg));
        tok.save(dir);
        if (extra) extra(dir);
      },
      static_cast<int>(cfg.train.keep_checkpoints));
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
  opt.set_steps_done(checkpoint_metadata_int(f, "step", std::nullopt));
}

}  // namespace sparta
