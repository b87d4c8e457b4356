#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "nn/gpt.h"
#include "nn/lm_objective.h"
#include "run/checkpoint_load.h"
#include "run/config.h"
#include "train/train_memory.h"

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

TEST(Config, DistSectionIsValidated) {
  EXPECT_EQ(error_of(kGood, {"dist.compress=q4", "dist.q4_block=64", "dist.full_precision_every=10",
                             "dist.compress_after=100", "dist.timeout_s=30", "dist.bucket_mb=0.5"}),
            "");
  EXPECT_EQ(error_of(kGood, {"dist.bucket_mb=0"}), "");
  EXPECT_NE(error_of(kGood, {"dist.bucket_mb=-1"}).find("dist.bucket_mb must be in [0, 65536]"), std::string::npos);
  EXPECT_NE(error_of(kGood, {"dist.compress=int8"}).find("dist.compress must be \"none\", \"bf16\" or \"q4\""),
            std::string::npos);
  for (const char* bad : {"dist.q4_block=7", "dist.q4_block=4", "dist.q4_block=131072"})
    EXPECT_NE(error_of(kGood, {bad}).find("dist.q4_block must be an even number in [8, 65536]"), std::string::npos)
        << bad;
  EXPECT_NE(error_of(kGood, {"dist.full_precision_every=-1"}).find("dist.full_precision_every must be >= 0"),
            std::string::npos);
  EXPECT_NE(error_of(kGood, {"dist.compress_after=-5"}).find("dist.compress_after must be >= 0"), std::string::npos);
  EXPECT_NE(error_of(kGood, {"dist.timeout_s=0"}).find("dist.timeout_s must be in [1, 86400]"), std::string::npos);
  EXPECT_NE(error_of(kGood, {"dist.compres=q4"}).find("unknown key 'dist.compres'"), std::string::npos);
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

// toml++ 3.3.0 reaches TOML_UNREACHABLE when it tests some non-ASCII
// characters for whitespace; the guard in front of it (run/toml_guard.h)
// must stop every such character before toml++ sees it.
TEST(ConfigTomlGuard, NonAsciiOutsideStringsIsAClearError) {
  std::string e = error_of("\xD1\xA3");  // U+0463, the 2-byte input that hit the bug
  EXPECT_NE(e.find("test.toml:1:1: character U+0463 is only allowed inside a string or a comment"),
            std::string::npos)
      << e;
  e = error_of("[model]\nn_layer\xD1\xA3 = 3\n");
  EXPECT_NE(e.find("test.toml:2:8: character U+0463"), std::string::npos) << e;
  EXPECT_NE(error_of("[model]\nn_layer = 3\xE3\x80\x81\n").find("U+3001"), std::string::npos);
  EXPECT_NE(error_of("[model\xEF\xB9\x90]\n").find("U+FE50"), std::string::npos);
  // A backslash before a non-ASCII character is no escape, in either kind of basic string.
  EXPECT_NE(error_of("[train]\nout = \"\"\"\\\xD1\xA3\"\"\"\n").find("invalid escape"), std::string::npos);
  EXPECT_NE(error_of("[train]\nout = \"a\\\xD1\xA3\"\n").find("invalid escape"), std::string::npos);
}

TEST(ConfigTomlGuard, NonAsciiInStringsAndCommentsStillParses) {
  const Config c = parse_config(
      "\xEF\xBB\xBF# \xD1\xA3 comment \xE3\x80\x80\n"
      "[train]\n"
      "out = \"runs/\xD1\xA3\"  # \xD1\xA3\n"
      "init_from = 'c:\\\xD1\xA3'\n"
      "[data]\n"
      "train = '''\n\xD1\xA3'''\n"
      "task = \"\"\"\"\xD1\xA3\"\"\"\"\n",
      "test.toml", {"data.task="});
  EXPECT_EQ(c.train.out, "runs/\xD1\xA3");
  EXPECT_EQ(c.train.init_from, "c:\\\xD1\xA3");
  EXPECT_EQ(c.data.train, "\xD1\xA3");
  // A line-ending backslash trims the whitespace after it; the character
  // that follows is kept (toml++ would test it for being whitespace).
  for (const char* cp : {"\xD1\xA3", "\xE3\x80\x80", "\xF0\x9F\x98\x80"}) {
    const Config m = parse_config(cat("[train]\nout = \"\"\"a\\\n   \n  ", cp, "b\"\"\"\n"), "test.toml");
    EXPECT_EQ(m.train.out, cat("a", cp, "b"));
  }
  const Config q = parse_config("[train]\nout = \"\"\"x\"\"\"\"\n", "test.toml");
  EXPECT_EQ(q.train.out, "x\"");
}

TEST(ConfigTomlGuard, InvalidUtf8InTheFileIsNamedWithItsPosition) {
  const std::string e = error_of("[train]\nout = \"ab\xFF\"\n");
  EXPECT_NE(e.find("test.toml:2:10: invalid UTF-8 (byte 0xFF)"), std::string::npos) << e;
  EXPECT_NE(error_of("# \xC3\n").find("test.toml:1:3: invalid UTF-8"), std::string::npos);
}

TEST(ConfigOverrides, NumbersIncludeSubnormalsAndOutOfRangeIsNamed) {
  Config c = parse_config(kGood, "test.toml", {"train.eps=1e-320"});
  EXPECT_EQ(c.train.eps, 1e-320);
  c = parse_config(kGood, "test.toml", {"train.eps=4.9e-324", "train.lr=+2.5e-3"});
  EXPECT_EQ(c.train.eps, 4.9e-324);
  EXPECT_EQ(c.train.lr, 2.5e-3);
  // Saved and read back unchanged.
  c = parse_config(config_to_toml(parse_config(kGood, "test.toml", {"train.eps=1e-320"})), "saved.toml");
  EXPECT_EQ(c.train.eps, 1e-320);
  for (const char* bad : {"train.eps=1e999", "train.eps=-1e999", "train.eps=1e-400"})
    EXPECT_NE(error_of(kGood, {bad}).find("train.eps is out of range"), std::string::npos) << bad;
  for (const char* bad : {"train.eps=abc", "train.eps=", "train.eps=1e-3x", "train.eps=++1", "train.eps=0x10",
                          "train.eps= 1"})
    EXPECT_NE(error_of(kGood, {bad}).find("train.eps must be a number"), std::string::npos) << bad;
  // Sign and zero are validation's business.
  EXPECT_NE(error_of(kGood, {"train.eps=0"}).find("train.eps must be > 0"), std::string::npos);
  EXPECT_NE(error_of(kGood, {"train.eps=-1e-320"}).find("train.eps must be > 0"), std::string::npos);
}

TEST(ConfigOverrides, StringsMustBeUtf8AndRoundTrip) {
  const std::string e = error_of(kGood, {"train.out=runs/\xC3("});
  EXPECT_NE(e.find("train.out must be UTF-8 text"), std::string::npos) << e;
  EXPECT_NE(error_of(kGood, {"data.train=\xFF"}).find("data.train must be UTF-8"), std::string::npos);
  // Newlines, quotes and ''' too: toml++'s own formatter wrote such a string
  // as a multi-line literal string that ended early.
  const std::string odd = "runs/\xD1\xA3 \"q\" \\ \t\x01#\n'''x'''\x7F\r\"\"\"";
  const Config c = parse_config(kGood, "test.toml", {"train.out=" + odd});
  EXPECT_EQ(c.train.out, odd);
  EXPECT_EQ(parse_config(config_to_toml(c), "saved.toml").train.out, odd);
}

TEST(ConfigLimits, HugeSizesAreNamedErrors) {
  EXPECT_NE(error_of(kGood, {"model.n_layer=1000000"}).find("model.n_layer must be in [1, 1024]"),
            std::string::npos);
  EXPECT_NE(error_of(kGood, {"model.d_model=1000000"}).find("model.d_model"), std::string::npos);
  EXPECT_NE(error_of(kGood, {"model.context=100000000"}).find("model.context"), std::string::npos);
  EXPECT_NE(error_of(kGood, {"train.batch_size=100000000000"}).find("train.batch_size must be >= 1 and at most"),
            std::string::npos);
  // The bound is on tokens per step: context 32 allows 2^31 / 32 sequences.
  EXPECT_EQ(error_of(kGood, {"train.batch_size=67108863"}), "");
  EXPECT_NE(error_of(kGood, {"train.batch_size=67108864"}).find("train.batch_size"), std::string::npos);
  EXPECT_NE(error_of(kGood, {"train.steps=1000000000000"}).find("train.steps must be >= 1 and at most"),
            std::string::npos);
  EXPECT_NE(error_of(kGood, {"data.task_eval_examples=100000000"}).find("data.task_eval_examples"),
            std::string::npos);
  EXPECT_NE(error_of(kGood, {"train.steps=99999999999999999999"}).find("train.steps must be an integer"),
            std::string::npos);
}

TEST(TrainMemory, EstimateMatchesTheModel) {
  const Config c = parse_config(kGood, "test.toml");
  GPT model(gpt_config_from(c, c.tokenizer.vocab_size));
  GPTActivations model_acts;
  model.init_weights(1);
  const TrainMemoryEstimate e = estimate_train_memory(c);
  EXPECT_EQ(e.param_bytes, 16.0 * static_cast<double>(model.params().count()));
  const int64_t B = c.train.batch_size, T = c.model.context;
  std::vector<int32_t> tokens(B * T, 1), targets(B * T, 2);
  lm_loss_and_gradients(model, model_acts, tokens.data(), targets.data(), B, T);
  // A lower bound, and a close one (buffers are padded to 64 bytes).
  EXPECT_LE(e.activation_bytes, static_cast<double>(model_acts.bytes()));
  EXPECT_GE(e.activation_bytes, 0.95 * static_cast<double>(model_acts.bytes()));
}

TEST(TrainMemory, TooLargeForTheMachineNamesTheKeys) {
  const Config small = parse_config(kGood, "test.toml");
  check_train_memory(small, int64_t{1} << 30);
  const Config big = parse_config(kGood, "test.toml", {"model.n_layer=1024", "model.d_model=65536"});
  EXPECT_GT(estimate_train_memory(big).param_bytes, 8e14);  // 1024 * 12 * 65536^2 * 16 bytes
  try {
    check_train_memory(big, int64_t{64} << 30);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("64.0 GiB of memory is available"), std::string::npos) << m;
    EXPECT_NE(m.find("model.n_layer = 1024, model.d_model = 65536"), std::string::npos) << m;
    EXPECT_NE(m.find("train.batch_size = 4, model.context = 32"), std::string::npos) << m;
  }
  check_train_memory(big, -1);  // unknown: no check
}

TEST(TrainMemory, ProcessesOnOneMachineShareItsMemory) {
  // Data parallel: each process holds the parameters and its rows'
  // activations; those on one machine need the sum.
  const Config c = parse_config(kGood, "test.toml", {"train.batch_size=8"});
  Config half = c;
  half.train.batch_size = 4;
  const double one = estimate_train_memory(c).total(), per_rank = estimate_train_memory(half).total();
  ASSERT_LT(per_rank, one);
  const auto fits = [&](double bytes, int64_t ranks, int64_t local) {
    try {
      check_train_memory(c, static_cast<int64_t>(bytes), ranks, local);
      return true;
    } catch (const Error& e) {
      if (local > 1) {
        EXPECT_NE(std::string(e.what()).find(" for each of the 2 processes on this machine)"), std::string::npos)
            << e.what();
      }
      return false;
    }
  };
  EXPECT_TRUE(fits(one, 1, 1));
  EXPECT_TRUE(fits(per_rank, 2, 1));        // two machines: each holds one process
  EXPECT_FALSE(fits(per_rank, 2, 2));       // one machine holds both
  EXPECT_TRUE(fits(2 * per_rank, 2, 2));
}

// Found by fuzz_config: toml++ reads a number, boolean or date up to a
// value terminator, testing every character, quotes included.
TEST(ConfigTomlGuard, QuotesInsideABareValueOpenNoString) {
  std::string e = error_of("[data]\nval_fraction = 5ee'''e\xCF\x9A-320'''\n");
  EXPECT_NE(e.find("test.toml:2:23: character U+03DA is only allowed inside a string"), std::string::npos) << e;
  EXPECT_NE(error_of("[train]\nlr = 1.'\xD1\xA3'\n").find("U+0463"), std::string::npos);
  EXPECT_NE(error_of("[train]\nlr = [1, -\"\xD1\xA3\"]\n").find("U+0463"), std::string::npos);
  // Quoted keys and strings in arrays and inline tables are strings: valid
  // TOML that reaches the config checks.
  e = error_of("[train]\n'\xD1\xA3'.x = 1\n");
  EXPECT_NE(e.find("unknown key 'train.\xD1\xA3'"), std::string::npos) << e;
  e = error_of("[train]\nx = [ '\xD1\xA3', { a.'\xD1\xA3' = \"\xD1\xA3\" },\n  \"\xD1\xA3\" ]\n");
  EXPECT_NE(e.find("unknown key 'train.x'"), std::string::npos) << e;
}

TEST(Config, ValueOfAKeyAsText) {
  Config c = parse_config(kGood, "good.toml");
  EXPECT_EQ(config_value(c, "train.lr"), "0.001");  // shortest round trip, not 0.0010000000000000000
  EXPECT_EQ(config_value(c, "model.n_layer"), "3");
  EXPECT_EQ(config_value(c, "model.attention"), "\"dense\"");
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
  EXPECT_EQ(sections, (std::vector<std::string>{"model", "tokenizer", "data", "train", "precision", "dist"}));
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

TEST(Config, PrecisionTableParsesOverridesAndRoundTrips) {
  const Config d = parse_config(kGood, "test.toml");
  EXPECT_EQ(d.train.precision, "fp32");
  EXPECT_EQ(d.precision.fp32, (std::vector<std::string>{"head"}));
  const std::string text = std::string(kGood) +
                           "\n[precision]\nfp32 = [\"head\", \"h.0.*\"]\ninit_scale = 1024.0\ngrowth_interval = 10\n";
  Config c = parse_config(text, "test.toml", {"train.precision=bf16"});
  EXPECT_EQ(c.train.precision, "bf16");
  EXPECT_EQ(c.precision.fp32, (std::vector<std::string>{"head", "h.0.*"}));
  EXPECT_EQ(c.precision.init_scale, 1024.0);
  EXPECT_EQ(c.precision.growth_interval, 10);
  const Config back = parse_config(config_to_toml(c), "back.toml");
  EXPECT_EQ(config_to_toml(back), config_to_toml(c));
  EXPECT_EQ(config_value(c, "precision.fp32"), "[\"head\", \"h.0.*\"]");
  // --set takes a TOML array, a comma-separated list, or nothing.
  apply_overrides(c, {"precision.fp32=h.*.mlp.fc,head"});
  EXPECT_EQ(c.precision.fp32, (std::vector<std::string>{"h.*.mlp.fc", "head"}));
  apply_overrides(c, {"precision.fp32=[\"h.1.attn.*\"]"});
  EXPECT_EQ(c.precision.fp32, (std::vector<std::string>{"h.1.attn.*"}));
  apply_overrides(c, {"precision.fp32="});
  EXPECT_TRUE(c.precision.fp32.empty());
  apply_overrides(c, {"precision.fp32=[]"});
  EXPECT_TRUE(c.precision.fp32.empty());
  EXPECT_THROW(apply_overrides(c, {"precision.fp32=head,,x"}), Error);
  EXPECT_THROW(parse_config(std::string(kGood) + "\n[precision]\nfp32 = \"head\"\n", "t.toml"), Error);
  EXPECT_THROW(parse_config(kGood, "t.toml", {"train.precision=int8"}), Error);
  EXPECT_THROW(parse_config(kGood, "t.toml", {"precision.fp32=h.99.*"}), Error);
  EXPECT_THROW(parse_config(kGood, "t.toml", {"precision.growth_interval=0"}), Error);
}
