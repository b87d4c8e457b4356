#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "train/config.h"

using namespace sparta;

namespace {
const char* kGood = R"(
[model]
n_layer = 3
n_head = 2
d_model = 64
context = 32
[tokenizer]
kind = "byte"
vocab_size = 257
[data]
train = "corpus.txt"
val_fraction = 0.1
[train]
batch_size = 4
steps = 10
lr = 1e-3
warmup = 2
weight_decay = 0.1
grad_clip = 1.0
seed = 7
eval_every = 5
ckpt_every = 5
threads = 1
out = "runs/x"
)";

std::string error_of(const std::string& text, const std::vector<std::string>& sets = {}) {
  try {
    parse_config(text, "test.toml", sets);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Config, ParsesAllSections) {
  Config c = parse_config(kGood, "test.toml");
  EXPECT_EQ(c.model.n_layer, 3);
  EXPECT_EQ(c.model.d_model, 64);
  EXPECT_EQ(c.tokenizer.kind, "byte");
  EXPECT_EQ(c.data.train, "corpus.txt");
  EXPECT_DOUBLE_EQ(c.train.lr, 1e-3);
  EXPECT_EQ(c.train.out, "runs/x");
  EXPECT_DOUBLE_EQ(c.train.beta2, 0.95);  // default when absent
}

TEST(Config, OverridesApplyInOrderWithTypes) {
  Config c = parse_config(kGood, "test.toml",
                          {"train.steps=99", "train.lr=0.5", "model.attention=dense", "train.out=\"a b\"",
                           "train.steps=100", "tokenizer.lowercase=false"});
  EXPECT_EQ(c.train.steps, 100);
  EXPECT_DOUBLE_EQ(c.train.lr, 0.5);
  EXPECT_EQ(c.train.out, "a b");
  EXPECT_FALSE(c.tokenizer.lowercase);
}

TEST(Config, ReadsTheNestedDsaTable) {
  Config c = parse_config(std::string(kGood) + "\n[model.dsa]\nwindow = 64\ntop_k = 16\n", "test.toml",
                          {"model.attention=dsa", "model.dsa.block=32"});
  EXPECT_EQ(c.model.attention, "dsa");
  EXPECT_EQ(c.model.dsa.window, 64);
  EXPECT_EQ(c.model.dsa.top_k, 16);
  EXPECT_EQ(c.model.dsa.block, 32);
  EXPECT_DOUBLE_EQ(c.model.dsa.keep_short, 0.8);  // default
  Config d = parse_config(config_to_toml(c), "roundtrip.toml");
  EXPECT_EQ(d.model.dsa.block, 32);
  EXPECT_EQ(d.model.dsa.window, 64);
}

TEST(Config, RoundTripsThroughToml) {
  Config c = parse_config(kGood, "test.toml", {"train.lr=0.000123456789", "data.train=/x/y \"q\""});
  Config d = parse_config(config_to_toml(c), "roundtrip.toml");
  EXPECT_EQ(config_to_toml(c), config_to_toml(d));
  EXPECT_DOUBLE_EQ(d.train.lr, 0.000123456789);
  EXPECT_EQ(d.data.train, "/x/y \"q\"");
}

TEST(Config, RejectsUnknownKeysAndSections) {
  EXPECT_NE(error_of(std::string(kGood) + "\n[model2]\nx = 1\n").find("unknown section [model2]"), std::string::npos);
  std::string e = error_of(kGood, {"model.n_layers=3"});
  EXPECT_NE(e.find("unknown key 'model.n_layers'"), std::string::npos) << e;
  EXPECT_NE(e.find("n_layer"), std::string::npos) << e;  // lists the known keys
  EXPECT_NE(error_of("[train]\nlearning_rate = 1\n").find("unknown key 'train.learning_rate'"), std::string::npos);
  EXPECT_NE(error_of(kGood, {"steps=3"}).find("section.key=value"), std::string::npos);
  EXPECT_NE(error_of(kGood, {"train.steps"}).find("section.key=value"), std::string::npos);
}

TEST(Config, RejectsBadValues) {
  EXPECT_NE(error_of(kGood, {"train.lr=-1"}).find("train.lr must be > 0"), std::string::npos);
  EXPECT_NE(error_of(kGood, {"model.n_head=3"}).find("must divide model.d_model"), std::string::npos);
  EXPECT_NE(error_of(kGood, {"train.steps=abc"}).find("must be an integer"), std::string::npos);
  EXPECT_NE(error_of(kGood, {"train.steps=0"}).find("train.steps must be >= 1"), std::string::npos);
  EXPECT_NE(error_of(kGood, {"tokenizer.kind=bpe"}).find("tokenizer.kind"), std::string::npos);
  EXPECT_NE(error_of(kGood, {"tokenizer.vocab_size=300"}).find("257"), std::string::npos);
  EXPECT_NE(error_of(kGood, {"data.val_fraction=0.9"}).find("val_fraction"), std::string::npos);
  EXPECT_NE(error_of(kGood, {"model.attention=magic"}).find("model.attention 'magic'"), std::string::npos);
  EXPECT_NE(error_of(kGood, {"model.dsa.block=0"}).find("block"), std::string::npos);
  for (const char* bad : {"model.rope_dims=3", "model.rope_dims=-2", "model.rope_dims=1000"})
    EXPECT_NE(error_of(kGood, {bad}).find("model.rope_dims must be 0 (whole head) or even in [2, head dimension"),
              std::string::npos) << bad;
  EXPECT_EQ(error_of(kGood, {"model.rope_dims=2"}), "");
  EXPECT_NE(error_of(kGood, {"model.dsa.rank=max"}).find("rank must be \"mean\" or \"bound\", got 'max'"),
            std::string::npos);
  EXPECT_EQ(error_of(kGood, {"model.dsa.rank=bound"}), "");
  EXPECT_NE(error_of(kGood, {"model.dsa.topk=3"}).find("unknown key 'model.dsa.topk'"), std::string::npos);
  EXPECT_NE(error_of("[model]\nn_layer = \"four\"\n").find("model.n_layer must be an integer"), std::string::npos);
  EXPECT_NE(error_of("[model]\nn_layer = 1.5\n").find("model.n_layer must be an integer"), std::string::npos);
  EXPECT_NE(error_of("model = 3\n").find("must be a table"), std::string::npos);
}

TEST(Config, ReportsTomlSyntaxErrorsWithPosition) {
  std::string e = error_of("[model]\nn_layer = = 3\n");
  EXPECT_NE(e.find("test.toml:2:"), std::string::npos) << e;
}

TEST(Config, MissingFileIsAClearError) {
  try {
    load_config("/nonexistent/dir/cfg.toml");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos);
  }
}

TEST(Config, FloatsPrintAsWrittenInTomlAndJson) {
  const Config c = parse_config(kGood, "test.toml", {"train.lr=0.003", "model.dsa.keep_short=0.8"});
  const std::string toml = config_to_toml(c);
  // The shortest text that reads back exactly, not 17 significant digits.
  for (const char* line : {"\nlr = 0.003\n", "\nkeep_short = 0.8\n", "\neps = 1e-08\n", "\nweight_decay = 0.1\n",
                           "\ngrad_clip = 1.0\n", "\nrope_base = 10000.0\n"})
    EXPECT_NE(toml.find(line), std::string::npos) << line << " not in:\n" << toml;
  EXPECT_EQ(toml.find("0000000"), std::string::npos) << toml;
  const Config d = parse_config(toml, "roundtrip.toml");
  EXPECT_EQ(d.train.lr, c.train.lr);
  EXPECT_EQ(d.train.eps, c.train.eps);
  EXPECT_EQ(d.model.dsa.keep_short, c.model.dsa.keep_short);
}

TEST(Config, JsonIsAnObjectNestedLikeTheTomlTables) {
  const Config c = parse_config(kGood, "test.toml", {"model.dsa.keep_short=0.8"});
  const nlohmann::ordered_json j = config_to_json(c);
  ASSERT_TRUE(j.is_object());
  std::vector<std::string> sections;
  for (const auto& [k, v] : j.items()) sections.push_back(k);
  EXPECT_EQ(sections, (std::vector<std::string>{"model", "tokenizer", "data", "train"}));
  EXPECT_EQ(j["model"]["n_layer"], 3);
  EXPECT_TRUE(j["model"]["n_layer"].is_number_integer());
  EXPECT_EQ(j["model"]["dsa"]["rank"], "bound");
  EXPECT_EQ(j["model"]["dsa"]["summary"], true);
  EXPECT_EQ(j["train"]["out"], "runs/x");
  EXPECT_EQ(j["tokenizer"]["lowercase"], true);
  // Every key once, and numbers dump as written.
  size_t keys = 0;
  for (const auto& [s, sec] : j.items())
    for (const auto& [k, v] : sec.items()) keys += v.is_object() ? v.size() : 1;
  EXPECT_EQ(keys, config_keys().size());
  const std::string text = j.dump();
  EXPECT_NE(text.find("\"keep_short\":0.8,"), std::string::npos) << text;
  EXPECT_NE(text.find("\"lr\":0.001,"), std::string::npos) << text;
}

TEST(Config, WarnsWhenWarmupIsLongerThanTheRun) {
  EXPECT_TRUE(config_warnings(parse_config(kGood, "test.toml")).empty());
  const auto w = config_warnings(parse_config(kGood, "test.toml", {"train.warmup=50"}));
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0], "train.warmup (50) is longer than train.steps (10): the learning rate never reaches train.lr");
}

TEST(Config, AFolderGivenAsConfigFileIsNamedAFolder) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path();
  try {
    load_config(dir);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "[config] '" + dir.string() +
                                         "' is a folder, not a config file (give a .toml file, e.g. configs/tiny.toml)");
  }
  try {
    load_config(dir / "no-such-config.toml");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
}
