// Loading a checkpoint folder someone may have edited or mixed up: the
// weights are checked against the config before the model is allocated, and
// bad numbers in the state files name the file and the field.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <map>
#include <string>

#include "core/error.h"
#include "core/memory.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "scratch_test.h"
#include "run/checkpoint_load.h"
#include "train/checkpoint_save.h"

using namespace sparta;
using sparta::test_util::error_of;
namespace fs = std::filesystem;

namespace {

class CheckpointLoad : public test_util::ScratchTest {
 protected:
  void SetUp() override {
    ScratchTest::SetUp();
    run_ = dir_ / "run";
    const Config cfg = parse_config(
        "[model]\nn_layer = 1\nn_head = 2\nd_model = 16\ncontext = 32\n"
        "[tokenizer]\nkind = \"byte\"\nvocab_size = 257\n",
        "tiny");
    auto tok = make_byte_tokenizer();
    GPT model(gpt_config_from(cfg, tok->vocab_size()));
    model.init_weights(1);
    AdamW opt(model.params(), AdamWHyper{});
    TrainState st;
    st.step = 3;
    st.tokens_seen = 1234;
    ckpt_ = save_checkpoint(run_, cfg, model, opt, st, *tok);
  }
  // Rewrites the metadata entry `key` of the checkpoint file `name`.
  void set_metadata(const std::string& name, const std::string& key, const std::string& value) {
    const SafetensorsFile f = SafetensorsFile::read(ckpt_ / name);
    std::vector<SafetensorsEntry> entries;
    for (const std::string& n : f.names()) entries.push_back({n, f.get(n)});
    std::map<std::string, std::string> metadata = f.metadata();
    metadata[key] = value;
    write_safetensors(ckpt_ / name, entries, metadata);
  }

  fs::path run_, ckpt_;
};

}  // namespace

TEST_F(CheckpointLoad, LoadsWhatWasSaved) {
  const LoadedCheckpoint ck = load_checkpoint(run_);
  EXPECT_EQ(ck.dir, ckpt_);
  EXPECT_EQ(ck.state.step, 3);
  EXPECT_EQ(ck.state.tokens_seen, 1234);
  EXPECT_EQ(ck.model->config().d_model, 16);
}

TEST_F(CheckpointLoad, BadTokensSeenNamesTheFileAndTheField) {
  const std::string file = (ckpt_ / "train_state.safetensors").string();
  for (const std::string bad : {"12x", "", " 12", "1e3", "99999999999999999999"}) {
    set_metadata("train_state.safetensors", "tokens_seen", bad);
    const std::string msg = error_of([&] { load_checkpoint(run_); });
    EXPECT_EQ(msg.rfind(cat("[checkpoint] ", file, ": metadata 'tokens_seen' is '", bad, "', not an integer"), 0), 0u)
        << msg;
  }
  set_metadata("train_state.safetensors", "tokens_seen", "99999999999999999999");
  EXPECT_NE(error_of([&] { load_checkpoint(run_); }).find("not an integer that fits in int64"), std::string::npos);
  set_metadata("train_state.safetensors", "tokens_seen", "-5");
  EXPECT_EQ(error_of([&] { load_checkpoint(run_); }),
            cat("[checkpoint] ", file, ": metadata 'tokens_seen' is -5, negative"));
}

TEST_F(CheckpointLoad, BadOptimizerStepNamesTheFileAndTheField) {
  set_metadata("optimizer.safetensors", "step", "three");
  LoadedCheckpoint ck = load_checkpoint(run_);
  AdamW opt(ck.model->params(), AdamWHyper{});
  EXPECT_EQ(error_of([&] { load_optimizer_state(ck.dir, opt, *ck.model); }),
            cat("[checkpoint] ", (ckpt_ / "optimizer.safetensors").string(),
                ": metadata 'step' is 'three', not an integer"));
}

TEST_F(CheckpointLoad, AConfigThatDoesNotFitTheWeightsFailsBeforeTheModelIsAllocated) {
  // This config's model is 8 layers of width 1024 (about 100M parameters,
  // 800 MB with gradients): the shape check must come first.
  const size_t before = memory_stats().current_bytes;
  reset_memory_peak();
  // (Overrides that reshape the model are refused by name before this check,
  // so the config file itself says so, as an edited or mixed-up one would.)
  const fs::path config = ckpt_ / "config.toml";
  const std::string original = read_file(config);
  auto write_config = [&](const std::vector<std::pair<std::string, std::string>>& edits) {
    std::string text = original;
    for (const auto& [from, to] : edits) {
      const size_t at = text.find(from);
      ASSERT_NE(at, std::string::npos) << from;
      text.replace(at, from.size(), to);
    }
    write_file_atomic(config, text);
  };
  write_config({{"d_model = 16", "d_model = 1024"}, {"n_layer = 1", "n_layer = 8"}, {"n_head = 2", "n_head = 8"}});
  const std::string msg = error_of([&] { load_checkpoint(run_); });
  EXPECT_EQ(msg, cat("[checkpoint] ", (ckpt_ / "model.safetensors").string(),
                     ": tensor 'wte' has shape (257, 16) F32 but the model expects (257, 1024) F32"));
  EXPECT_LT(memory_stats().peak_bytes - before, size_t{16} << 20);

  write_config({{"n_layer = 1", "n_layer = 2"}});
  EXPECT_NE(error_of([&] { load_checkpoint(run_); }).find("tensor 'h.1.ln1.weight' is missing"), std::string::npos);
  // A --set that reshapes the model names the key instead.
  write_file_atomic(config, original);
  EXPECT_NE(error_of([&] { load_checkpoint(run_, {"model.n_layer=8"}); })
                .find("model.n_layer is 1 in the checkpoint but 8 in the overrides"),
            std::string::npos);
}

TEST_F(CheckpointLoad, ExtraOrWronglyTypedTensorsAreRejected) {
  const fs::path model = ckpt_ / "model.safetensors";
  SafetensorsFile f = SafetensorsFile::read(model);
  std::vector<SafetensorsEntry> entries;
  for (const std::string& n : f.names()) entries.push_back({n, f.get(n)});
  entries.push_back({"h.7.extra", Tensor::zeros({2})});
  write_safetensors(model, entries, f.metadata());
  EXPECT_EQ(error_of([&] { load_checkpoint(run_); }),
            cat("[checkpoint] ", model.string(), ": unexpected tensor 'h.7.extra' (the config describes a different model)"));
  entries.pop_back();
  for (auto& e : entries)
    if (e.name == "ln_f.bias") e.tensor = Tensor::zeros({16}, DType::I32);
  write_safetensors(model, entries, f.metadata());
  EXPECT_NE(error_of([&] { load_checkpoint(run_); }).find("tensor 'ln_f.bias' has shape (16,) I32 but the model expects (16,) F32"),
            std::string::npos);
}
