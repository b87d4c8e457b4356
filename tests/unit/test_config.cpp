#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

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

TEST(Config, ValueOfAKeyAsText) {
  Config c = parse_config(kGood, "good.toml");
  EXPECT_EQ(config_value(c, "train.lr"), "0.001");  // shortest round trip, not 0.0010000000000000000
  EXPECT_EQ(config_value(c, "model.n_layer"), "3");
  EXPECT_EQ(config_value(c, "model.attention"), "'dense'");
  EXPECT_THROW(config_value(c, "train.nope"), Error);
}

TEST(Config, ResumeSafeKeysAreConfigKeysAndLeaveTheModelAlone) {
  const std::vector<std::string> all = config_keys();
  for (const std::string& k : resume_safe_keys()) {
    EXPECT_NE(std::find(all.begin(), all.end(), k), all.end()) << k;
    EXPECT_NE(k, "model.attention");
    EXPECT_NE(k.rfind("tokenizer.", 0), 0u) << k;
  }
}

TEST(Config, MaxBadStepsMustBePositive) {
  EXPECT_EQ(parse_config(kGood, "good.toml").train.max_bad_steps, 3);
  EXPECT_THROW(parse_config(kGood, "good.toml", {"train.max_bad_steps=0"}), Error);
}
