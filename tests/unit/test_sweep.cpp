// `sparta sweep` library: grid parsing and its errors, expansion order,
// run folder names, planning (validation before anything is written),
// records <-> JSON, quality metric / best / Pareto front, the markdown table,
// the SVG plot, and the driver's resume / force / refusal rules on a model
// small enough to train in milliseconds.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "io/atomic_file.h"
#include "sweep/sweep.h"

using namespace sparta;
namespace fs = std::filesystem;

namespace {

// The message of the sparta::Error `f` throws ("" if it does not throw).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Asserts a one-line sparta::Error containing every needle.
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& needles) {
  const std::string msg = error_of(f);
  ASSERT_FALSE(msg.empty()) << "no sparta::Error thrown (wanted '" << needles[0] << "')";
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  for (const std::string& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
}

struct SweepDir {
  fs::path path;
  explicit SweepDir(const std::string& tag) {
    static int counter = 0;
    path = fs::temp_directory_path() / cat("sparta_sweep_", tag, "_", ::getpid(), "_", counter++);
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~SweepDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// A corpus and a model small enough that a 2-step run takes milliseconds.
fs::path write_tiny_config(const fs::path& dir, const std::string& extra = "") {
  std::string text;
  const char* words[] = {"the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "owls", "watch"};
  for (int i = 0; i < 300; ++i) text += std::string(words[(i * 7) % 12]) + ((i % 9 == 8) ? ".\n" : " ");
  write_file_atomic(dir / "corpus.txt", text);
  const fs::path cfg = dir / "tiny.toml";
  write_file_atomic(cfg, cat("[model]\nn_layer = 1\nn_head = 2\nd_model = 16\ncontext = 16\n", "[data]\ntrain = \"",
                             (dir / "corpus.txt").string(), "\"\nval_fraction = 0.1\n",
                             "[train]\nbatch_size = 2\nsteps = 2\nwarmup = 1\neval_every = 0\nckpt_every = 0\n",
                             "threads = 1\nout = \"", (dir / "runs" / "tiny").string(), "\"\n", extra));
  return cfg;
}

SweepRecord make_record(int64_t index, std::vector<SweepSetting> settings, double loss, double val, double tps) {
  SweepRecord r;
  r.index = index;
  r.settings = std::move(settings);
  r.folder = run_folder_name(index, 9, r.settings);
  r.steps = 4;
  r.final_loss = loss;
  r.val_loss = val;
  r.tokens_per_s = tps;
  r.wall_s = 1.0;
  r.peak_tracked_bytes = 1 << 20;
  return r;
}

size_t count_of(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + needle.size())) ++n;
  return n;
}

std::vector<std::string> read_lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

}  // namespace

// ---------------------------------------------------------------- grid

TEST(SweepGrid, ParsesKeyAndValuesInOrder) {
  GridAxis a = parse_grid_spec("model.dsa.top_k=16,64,256");
  EXPECT_EQ(a.key, "model.dsa.top_k");
  EXPECT_EQ(a.values, (std::vector<std::string>{"16", "64", "256"}));
  a = parse_grid_spec(" model.attention = dense , dsa ");
  EXPECT_EQ(a.key, "model.attention");
  EXPECT_EQ(a.values, (std::vector<std::string>{"dense", "dsa"}));
  a = parse_grid_spec("train.lr=1e-3");
  EXPECT_EQ(a.values, (std::vector<std::string>{"1e-3"}));
  // Only the first '=' separates: a value may contain '='.
  a = parse_grid_spec("data.train=a=b.txt,c.txt");
  EXPECT_EQ(a.key, "data.train");
  EXPECT_EQ(a.values, (std::vector<std::string>{"a=b.txt", "c.txt"}));
}

TEST(SweepGrid, RejectsEveryMalformedSpecWithOneLineNamingIt) {
  auto bad = [](const std::string& spec, const std::string& why) {
    SCOPED_TRACE(spec);
    expect_error([&] { parse_grid_spec(spec); }, {"[sweep] --grid '" + spec + "'", why});
  };
  bad("model.dsa.top_k", "expected KEY=V1,V2");
  bad("", "expected KEY=V1,V2");
  bad("=16,64", "no config key before '='");
  bad(" =16", "no config key before '='");
  bad("model.dsa.top_k=", "no values after '='");
  bad("model.dsa.top_k=  ", "no values after '='");
  bad("model.dsa.top_k=16,,64", "value 2 is empty");
  bad("model.dsa.top_k=16,", "value 2 is empty");
  bad("model.dsa.top_k=,16", "value 1 is empty");
  bad("model.dsa.top_k=16, ,64", "value 2 is empty");
  bad("model.dsa.top_k=16,64,16", "value '16' is listed twice");
  bad("model.dsa.topk=16", "unknown config key 'model.dsa.topk'");
  bad("model.dsa.topk=16", "known in [model.dsa]: block");
  bad("modle.n_layer=2", "unknown config key 'modle.n_layer'");
  bad("modle.n_layer=2", "sections: model, model.dsa, tokenizer, data, train");
  bad("n_layer=2", "unknown config key 'n_layer'");
  bad("train.out=a,b", "train.out cannot be swept");
}

TEST(SweepGrid, ParseGridRejectsNoSpecAndARepeatedKey) {
  expect_error([] { parse_grid({}); }, {"[sweep]", "at least one --grid"});
  expect_error([] { parse_grid({"model.dsa.top_k=16,64", "model.n_layer=1,2", "model.dsa.top_k=256"}); },
               {"--grid 'model.dsa.top_k=256'", "already swept by --grid 'model.dsa.top_k=16,64'"});
  const auto axes = parse_grid({"model.dsa.top_k=16,64", "model.n_layer=1,2"});
  ASSERT_EQ(axes.size(), 2u);
  EXPECT_EQ(axes[1].key, "model.n_layer");
}

TEST(SweepGrid, ExpandsTheProductWithTheLastAxisFastest) {
  const std::vector<GridAxis> axes = {{"model.attention", {"dense", "dsa"}},
                                      {"model.dsa.top_k", {"16", "64", "256"}},
                                      {"train.lr", {"0.001", "0.002"}}};
  const auto runs = expand_grid(axes);
  // Reference: nested loops, outermost = first axis.
  std::vector<std::vector<SweepSetting>> want;
  for (const auto& a : axes[0].values)
    for (const auto& b : axes[1].values)
      for (const auto& c : axes[2].values)
        want.push_back({{"model.attention", a}, {"model.dsa.top_k", b}, {"train.lr", c}});
  ASSERT_EQ(runs.size(), want.size());
  for (size_t i = 0; i < runs.size(); ++i) {
    EXPECT_EQ(runs[i].index, static_cast<int64_t>(i) + 1);
    EXPECT_EQ(runs[i].settings, want[i]) << "run " << i + 1;
    EXPECT_EQ(runs[i].folder, run_folder_name(runs[i].index, 12, want[i]));
  }
  EXPECT_EQ(runs[0].folder, "01-attention-dense+top_k-16+lr-0.001");
  EXPECT_EQ(runs[11].folder, "12-attention-dsa+top_k-256+lr-0.002");
}

TEST(SweepGrid, LimitsTheNumberOfCombinations) {
  std::vector<std::string> v16, v17;
  for (int i = 0; i < 16; ++i) v16.push_back(std::to_string(i));
  for (int i = 0; i < 17; ++i) v17.push_back(std::to_string(i));
  ASSERT_EQ(v16.size(), 16u);
  ASSERT_EQ(v17.size(), 17u);
  EXPECT_EQ(expand_grid({{"model.n_layer", v16}, {"train.seed", v16}}).size(), 256u);
  expect_error([&] { expand_grid({{"model.n_layer", v17}, {"train.seed", v16}}); },
               {"[sweep] the grid has 272 combinations (17 x 16)", "at most 256"});
  EXPECT_EQ(expand_grid({{"train.seed", {"1", "2", "3"}}}, 3).size(), 3u);
  expect_error([] { expand_grid({{"train.seed", {"1", "2", "3"}}}, 2); }, {"3 combinations", "at most 2"});
  // A product far past int64 must not overflow into a small count.
  std::vector<std::string> v100;
  for (int i = 0; i < 100; ++i) v100.push_back(std::to_string(i));
  std::vector<GridAxis> many(10, GridAxis{"train.seed", v100});
  expect_error([&] { expand_grid(many); }, {"more than", "at most 256"});
}

TEST(SweepGrid, SlugsAreFilesystemSafeAndFolderIndicesPadded) {
  EXPECT_EQ(sweep_slug({{"model.dsa.top_k", "64"}, {"model.attention", "dsa"}}), "top_k-64+attention-dsa");
  EXPECT_EQ(sweep_slug({{"data.train", "/data/my file (v2).txt"}}), "train-_data_my_file__v2_.txt");
  EXPECT_EQ(sweep_slug({{"model.attention", "\"dsa\""}}), "attention-_dsa_");
  EXPECT_EQ(sweep_slug({}), "base");
  const std::string long_slug = sweep_slug({{"data.train", std::string(300, 'x')}});
  EXPECT_EQ(long_slug.size(), 96u);
  EXPECT_EQ(long_slug.substr(0, 7), "train-x");
  for (char c : sweep_slug({{"data.train", "a/b\\c:d*e?f\"g<h>i|j k\tl\nm\xc3\xa9"}}))
    EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' || c == '+')
        << "unsafe character " << static_cast<int>(c);
  EXPECT_EQ(run_folder_name(3, 6, {{"train.lr", "0.01"}}), "03-lr-0.01");
  EXPECT_EQ(run_folder_name(12, 99, {{"train.lr", "0.01"}}), "12-lr-0.01");
  EXPECT_EQ(run_folder_name(7, 100, {{"train.lr", "0.01"}}), "007-lr-0.01");
  EXPECT_EQ(run_folder_name(256, 256, {{"train.lr", "0.01"}}), "256-lr-0.01");
  EXPECT_EQ(sweep_label({{"model.dsa.top_k", "64"}, {"model.attention", "dsa"}}),
            "model.dsa.top_k=64 model.attention=dsa");
  EXPECT_EQ(sweep_overrides({{"model.dsa.top_k", "64"}, {"model.attention", "dsa"}}),
            (std::vector<std::string>{"model.dsa.top_k=64", "model.attention=dsa"}));
}

// ---------------------------------------------------------------- plan

TEST(SweepPlan, ResolvesEveryCombinationIntoItsOwnRunFolder) {
  SweepDir dir("plan");
  const fs::path cfg = write_tiny_config(dir.path);
  SweepPlan p = plan_sweep(cfg, {"model.n_layer=1,2", "model.attention=dense,window"}, {"train.steps=3"});
  EXPECT_EQ(p.out, dir.path / "runs" / "tiny-sweep");
  ASSERT_EQ(p.runs.size(), 4u);
  ASSERT_EQ(p.configs.size(), 4u);
  const int64_t layers[] = {1, 1, 2, 2};
  const char* attn[] = {"dense", "window", "dense", "window"};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(p.configs[i].model.n_layer, layers[i]);
    EXPECT_EQ(p.configs[i].model.attention, attn[i]);
    EXPECT_EQ(p.configs[i].train.steps, 3);  // --set reaches every run
    EXPECT_EQ(p.configs[i].model.d_model, 16);
    EXPECT_EQ(fs::path(p.configs[i].train.out), p.out / p.runs[i].folder);
  }
  EXPECT_NE(p.base_config.find("steps = 3"), std::string::npos);
  EXPECT_FALSE(fs::exists(p.out)) << "planning must not write anything";

  // --out wins; a train.out with a trailing slash still gives a sibling folder.
  EXPECT_EQ(plan_sweep(cfg, {"train.lr=0.1"}, {}, dir.path / "elsewhere").out, dir.path / "elsewhere");
  EXPECT_EQ(plan_sweep(cfg, {"train.lr=0.1"}, {"train.out=" + (dir.path / "r").string() + "/"}).out,
            dir.path / "r-sweep");
}

TEST(SweepPlan, ValidatesEveryCombinationBeforeWritingAnything) {
  SweepDir dir("plan_bad");
  const fs::path cfg = write_tiny_config(dir.path);
  const fs::path out = dir.path / "out";
  auto plan = [&](std::vector<std::string> grid, std::vector<std::string> sets = {}) {
    return [=] { plan_sweep(cfg, grid, sets, out); };
  };
  // A value load_config rejects, named by its combination.
  expect_error(plan({"model.n_head=2,3"}), {"[sweep] run 2/2 (model.n_head=3): ", "[config] model.n_head (3) must divide"});
  expect_error(plan({"model.n_layer=1,2", "model.attention=dense,sparse"}),
               {"[sweep] run 2/4 (model.n_layer=1 model.attention=sparse)", "model.attention 'sparse'"});
  expect_error(plan({"train.lr=0.1,fast"}), {"run 2/2 (train.lr=fast)", "train.lr must be a number, got 'fast'"});
  // Grid syntax and keys.
  expect_error(plan({"model.n_layers=1,2"}), {"--grid 'model.n_layers=1,2'", "unknown config key"});
  expect_error(plan({"model.n_layer"}), {"--grid 'model.n_layer'", "expected KEY=V1,V2"});
  // --set and --grid on one key.
  expect_error(plan({"model.n_layer=1,2"}, {"model.n_layer=3"}), {"model.n_layer is set by both --set"});
  // --set errors are the config's own.
  expect_error(plan({"model.n_layer=1,2"}, {"model.bogus=3"}), {"unknown key 'model.bogus'"});
  // A swept path that does not exist.
  expect_error(plan({"data.train=" + (dir.path / "corpus.txt").string() + ",/no/such/corpus.txt"}),
               {"run 2/2", "data.train '/no/such/corpus.txt' does not exist"});
  expect_error([&] { plan_sweep(dir.path / "missing.toml", {"model.n_layer=1"}, {}, out); }, {"does not exist"});
  EXPECT_FALSE(fs::exists(out));
}

// ---------------------------------------------------------------- records

TEST(SweepRecords, JsonHasTheDocumentedKeysInOrderAndRoundTrips) {
  SweepRecord r = make_record(3, {{"model.dsa.top_k", "64"}, {"model.attention", "dsa"}}, 2.5, 2.25, 41234.5);
  r.wall_s = 12.5;
  r.peak_tracked_bytes = 123456789;
  const std::string line = sweep_record_json(r);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(line.rfind("{\"index\":3,\"run\":\"03-top_k-64+attention-dsa\",\"settings\":{", 0), 0u) << line;
  const auto j = nlohmann::ordered_json::parse(line);
  std::vector<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"index", "run", "settings", "status", "steps", "final_loss", "val_loss",
                                            "tokens_per_s", "wall_s", "peak_tracked_bytes"}));
  EXPECT_EQ(j["settings"].dump(), "{\"model.dsa.top_k\":\"64\",\"model.attention\":\"dsa\"}");
  EXPECT_EQ(j["status"], "ok");
  EXPECT_EQ(j["val_loss"].get<double>(), 2.25);
  EXPECT_EQ(j["peak_tracked_bytes"].get<int64_t>(), 123456789);

  SweepRecord back = sweep_record_from_json(line, "t");
  EXPECT_EQ(back.index, 3);
  EXPECT_EQ(back.folder, r.folder);
  EXPECT_EQ(back.settings, r.settings);
  EXPECT_TRUE(back.ok);
  EXPECT_EQ(back.final_loss, 2.5);
  EXPECT_EQ(back.tokens_per_s, 41234.5);
  EXPECT_EQ(back.wall_s, 12.5);
  EXPECT_TRUE(std::isnan(back.val_accuracy));

  // Task run: task and val_accuracy appear; failed run: error, nulls for the unknown.
  SweepRecord t = r;
  t.task = "passkey";
  t.val_accuracy = 0.75;
  auto jt = nlohmann::json::parse(sweep_record_json(t));
  EXPECT_EQ(jt["task"], "passkey");
  EXPECT_EQ(jt["val_accuracy"].get<double>(), 0.75);
  EXPECT_EQ(sweep_record_from_json(sweep_record_json(t), "t").val_accuracy, 0.75);
  SweepRecord f;
  f.index = 2;
  f.folder = "02-x";
  f.ok = false;
  f.error = "[train] loss is nan at step 3";
  auto jf = nlohmann::json::parse(sweep_record_json(f));
  EXPECT_EQ(jf["status"], "failed");
  EXPECT_EQ(jf["error"], f.error);
  EXPECT_TRUE(jf["val_loss"].is_null());
  EXPECT_TRUE(jf["tokens_per_s"].is_null());
  EXPECT_FALSE(jf.contains("val_accuracy"));
  SweepRecord fb = sweep_record_from_json(sweep_record_json(f), "t");
  EXPECT_FALSE(fb.ok);
  EXPECT_EQ(fb.error, f.error);
  EXPECT_TRUE(std::isnan(fb.final_loss));

  expect_error([] { sweep_record_from_json("{\"index\":1", "OUT/sweep.jsonl:4"); },
               {"[sweep] OUT/sweep.jsonl:4: malformed record"});
  expect_error([] { sweep_record_from_json("{\"index\":1,\"settings\":{},\"status\":\"ok\"}", "L"); },
               {"[sweep] L: record has no 'run'"});
  expect_error([] { sweep_record_from_json("{\"index\":1,\"run\":\"a\",\"settings\":{},\"status\":\"meh\"}", "L"); },
               {"status must be"});
}

TEST(SweepRecords, MetricBestAndParetoFront) {
  const double nan = kSweepNaN;
  std::vector<SweepRecord> rs = {
      make_record(1, {{"train.lr", "a"}}, 3.0, 2.50, 1000),  // fast, worst
      make_record(2, {{"train.lr", "b"}}, 3.0, 2.00, 500),   // slower, better: front
      make_record(3, {{"train.lr", "c"}}, 3.0, 2.20, 400),   // dominated by 2
      make_record(4, {{"train.lr", "d"}}, 3.0, 1.90, 100),   // slowest, best
  };
  EXPECT_EQ(sweep_metric(rs), SweepMetric::ValLoss);
  EXPECT_EQ(best_record(rs, SweepMetric::ValLoss), 3);
  EXPECT_EQ(pareto_front(rs, SweepMetric::ValLoss), (std::vector<bool>{true, true, false, true}));

  // Equal loss: the faster run wins (and dominates the slower).
  rs[3].val_loss = 2.0;
  EXPECT_EQ(best_record(rs, SweepMetric::ValLoss), 1);
  EXPECT_EQ(pareto_front(rs, SweepMetric::ValLoss), (std::vector<bool>{true, true, false, false}));

  // Failed and metric-less runs never win and are not on the front.
  rs[1].ok = false;
  rs[3].val_loss = nan;
  EXPECT_EQ(sweep_metric(rs), SweepMetric::TrainLoss);  // an ok run without val_loss
  rs[3].ok = false;
  EXPECT_EQ(sweep_metric(rs), SweepMetric::ValLoss);
  EXPECT_EQ(best_record(rs, SweepMetric::ValLoss), 2);
  EXPECT_EQ(pareto_front(rs, SweepMetric::ValLoss), (std::vector<bool>{true, false, true, false}));
  EXPECT_EQ(best_record({}, SweepMetric::ValLoss), -1);

  // Tasks: accuracy, higher is better; a tie goes to the lower answer loss.
  std::vector<SweepRecord> ts = {make_record(1, {{"train.lr", "a"}}, 1.0, 0.9, 900),
                                 make_record(2, {{"train.lr", "b"}}, 1.0, 0.5, 300),
                                 make_record(3, {{"train.lr", "c"}}, 1.0, 0.7, 600)};
  for (auto& t : ts) t.task = "passkey";
  ts[0].val_accuracy = 0.5, ts[1].val_accuracy = 0.75, ts[2].val_accuracy = 0.75;
  EXPECT_EQ(sweep_metric(ts), SweepMetric::ValAccuracy);
  EXPECT_EQ(best_record(ts, SweepMetric::ValAccuracy), 1);
  EXPECT_EQ(pareto_front(ts, SweepMetric::ValAccuracy), (std::vector<bool>{true, false, true}));
  EXPECT_STREQ(metric_name(SweepMetric::ValAccuracy), "val_accuracy");
  EXPECT_EQ(metric_value(ts[0], SweepMetric::TrainLoss), 1.0);
}

TEST(SweepTable, MarkdownRowsPaddedWithBestParetoAndFailures) {
  SweepRecord a = make_record(1, {{"model.attention", "dense"}, {"model.dsa.top_k", "16"}}, 2.5, 2.25, 41234);
  a.wall_s = 1.5;
  a.peak_tracked_bytes = 3 << 20;
  SweepRecord b;
  b.index = 2;
  b.settings = {{"model.attention", "dsa"}, {"model.dsa.top_k", "16"}};
  b.ok = false;
  b.error = "boom | x";
  SweepRecord c = make_record(3, {{"model.attention", "dsa"}, {"model.dsa.top_k", "64"}}, 2.4, 2.125, 950);
  c.wall_s = 75;
  const std::string want =
      "|   # | model.attention | model.dsa.top_k | steps |   loss | val_loss | tok/s |  wall | peak MiB | note      "
      "        |\n"
      "| --: | --------------- | --------------- | ----: | -----: | -------: | ----: | ----: | -------: | ----------"
      "------- |\n"
      "|   1 | dense           | 16              |     4 | 2.5000 |   2.2500 | 41.2k | 1.50s |      3.0 | pareto    "
      "        |\n"
      "|   2 | dsa             | 16              |     - |      - |        - |     - |     - |        - | failed: bo"
      "om \\| x |\n"
      "|   3 | dsa             | 64              |     4 | 2.4000 |   2.1250 |   950 | 1m15s |      1.0 | **best**  "
      "        |\n";
  EXPECT_EQ(sweep_table_markdown({a, b, c}, SweepMetric::ValLoss), want);

  // Task tables add the accuracy column and name the loss.
  c.task = "passkey";
  c.val_accuracy = 0.813;
  const std::string t = sweep_table_markdown({c}, SweepMetric::ValAccuracy);
  EXPECT_NE(t.find("| val_loss (answer) | val_acc |"), std::string::npos) << t;
  EXPECT_NE(t.find("|            2.1250 |   0.813 |"), std::string::npos) << t;
  // No records: just the header.
  EXPECT_EQ(count_of(sweep_table_markdown({}, SweepMetric::ValLoss), "\n"), 2u);
}

// ---------------------------------------------------------------- plot

TEST(SweepPlot, SvgLabelsEveryRunAndIsWellFormed) {
  std::vector<SweepRecord> rs;
  const char* ks[] = {"16", "64", "256"};
  const char* ws[] = {"64", "128"};
  int64_t i = 0;
  for (const char* k : ks)
    for (const char* w : ws) {
      ++i;
      rs.push_back(make_record(i, {{"model.dsa.top_k", k}, {"model.dsa.window", w}}, 3.0, 2.0 + 0.05 * i,
                               1000.0 * static_cast<double>(i)));  // faster runs lose quality: all on the front
    }
  rs.push_back(make_record(7, {{"data.train", "a&b<c>.txt"}}, 3.0, 2.5, 3500));
  SweepRecord failed;
  failed.index = 8;
  failed.settings = {{"model.dsa.top_k", "999"}};
  failed.ok = false;
  rs.push_back(failed);
  const std::string svg = sweep_plot_svg(rs, SweepMetric::ValLoss, "sparta sweep: <demo>");
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("\n<svg xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
  ASSERT_GE(svg.size(), 7u);
  EXPECT_EQ(svg.substr(svg.size() - 7), "</svg>\n");
  for (const char* k : ks)
    for (const char* w : ws)
      EXPECT_NE(svg.find(cat(">top_k=", k, " window=", w, "</text>")), std::string::npos) << k << " " << w;
  EXPECT_NE(svg.find(">train=a&amp;b&lt;c&gt;.txt</text>"), std::string::npos);
  EXPECT_NE(svg.find("sparta sweep: &lt;demo&gt;"), std::string::npos);
  EXPECT_EQ(svg.find("top_k=999"), std::string::npos) << "failed runs are not plotted";
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
  // One circle per plotted run plus the two legend markers; the best is highlighted once.
  EXPECT_EQ(count_of(svg, "<circle"), 7u + 2u);
  EXPECT_EQ(count_of(svg, "r=\"6\" fill=\"#e8710a\""), 2u);  // legend + best point
  EXPECT_EQ(count_of(svg, "<g"), count_of(svg, "</g>"));
  EXPECT_EQ(count_of(svg, "<text"), count_of(svg, "</text>"));
  EXPECT_EQ(count_of(svg, "<title>"), 7u);
  EXPECT_EQ(count_of(svg, "stroke-dasharray"), 2u);  // Pareto line + its legend sample
  EXPECT_EQ(count_of(svg, "<svg"), 1u);
  EXPECT_NE(svg.find("validation loss (lower is better)"), std::string::npos);

  const std::string acc = sweep_plot_svg({}, SweepMetric::ValAccuracy, "t");
  EXPECT_NE(acc.find("no finished runs yet"), std::string::npos);
  EXPECT_NE(acc.find("validation accuracy (higher is better)"), std::string::npos);
  EXPECT_EQ(acc.substr(acc.size() - 7), "</svg>\n");
}

// ---------------------------------------------------------------- driver

TEST(SweepRun, TrainsRecordsResumesAndRefuses) {
  SweepDir dir("run");
  const fs::path cfg = write_tiny_config(dir.path);
  const fs::path out = dir.path / "sw";
  const std::vector<std::string> grid = {"train.lr=0.001,0.003"};
  SweepOptions quiet;  // no reporter: silent

  SweepPlan plan = plan_sweep(cfg, grid, {}, out);
  SweepResult r = run_sweep(plan, quiet);
  ASSERT_EQ(r.records.size(), 2u);
  EXPECT_EQ(r.trained, 2);
  EXPECT_EQ(r.failed, 0);
  EXPECT_EQ(r.metric, SweepMetric::ValLoss);
  for (const SweepRecord& rec : r.records) {
    EXPECT_TRUE(rec.ok) << rec.error;
    EXPECT_EQ(rec.steps, 2);
    EXPECT_TRUE(std::isfinite(rec.val_loss) && rec.val_loss > 0);
    EXPECT_GT(rec.tokens_per_s, 0);
    EXPECT_GT(rec.wall_s, 0);
    EXPECT_GT(rec.peak_tracked_bytes, 0);
    EXPECT_TRUE(fs::exists(out / rec.folder / "summary.json"));
  }
  EXPECT_EQ(r.records[1].folder, "02-lr-0.003");
  const auto lines = read_lines(out / "sweep.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(sweep_record_from_json(lines[1], "x").final_loss, r.records[1].final_loss);
  EXPECT_NE(read_file(out / "sweep.md").find("**best**"), std::string::npos);
  EXPECT_NE(read_file(out / "sweep.svg").find(">lr=0.003</text>"), std::string::npos);
  EXPECT_EQ(r.table, sweep_table_markdown(r.records, SweepMetric::ValLoss));

  // Results in OUT: refused without --resume / --force, and never both.
  expect_error([&] { run_sweep(plan, quiet); }, {"already holds sweep results", "--resume", "--force"});
  SweepOptions both = quiet;
  both.resume = both.force = true;
  expect_error([&] { run_sweep(plan, both); }, {"give one"});

  // --resume skips finished runs (same records) and redoes one whose summary is gone.
  SweepOptions resume = quiet;
  resume.resume = true;
  SweepResult again = run_sweep(plan, resume);
  EXPECT_EQ(again.skipped, 2);
  EXPECT_EQ(again.trained, 0);
  EXPECT_EQ(again.records[0].final_loss, r.records[0].final_loss);
  EXPECT_EQ(again.records[1].wall_s, r.records[1].wall_s);
  fs::remove(out / r.records[1].folder / "summary.json");
  again = run_sweep(plan, resume);
  EXPECT_EQ(again.skipped, 1);
  EXPECT_EQ(again.trained, 1);
  EXPECT_EQ(again.records[1].final_loss, r.records[1].final_loss);  // same seed, same data: same run
  EXPECT_EQ(read_lines(out / "sweep.jsonl").size(), 2u);

  // --resume of another grid or base config is refused.
  expect_error([&] { run_sweep(plan_sweep(cfg, {"train.lr=0.001,0.002"}, {}, out), resume); },
               {"cannot resume", "another grid (--grid train.lr=0.001,0.003)"});
  expect_error([&] { run_sweep(plan_sweep(cfg, grid, {"train.steps=3"}, out), resume); },
               {"cannot resume", "another base config"});

  // --force starts over with the new grid and removes the old run folders.
  SweepOptions force = quiet;
  force.force = true;
  SweepResult fresh = run_sweep(plan_sweep(cfg, {"train.lr=0.002"}, {}, out), force);
  EXPECT_EQ(fresh.trained, 1);
  EXPECT_FALSE(fs::exists(out / "02-lr-0.003"));
  EXPECT_EQ(read_lines(out / "sweep.jsonl").size(), 1u);

  // A non-empty folder no sweep made is never overwritten without --force.
  const fs::path out2 = dir.path / "sw2";
  SweepPlan plan2 = plan_sweep(cfg, grid, {}, out2);
  fs::create_directories(out2 / plan2.runs[0].folder);
  write_file_atomic(out2 / plan2.runs[0].folder / "notes.txt", "mine");
  expect_error([&] { run_sweep(plan2, quiet); }, {"run folder", "01-lr-0.001", "no sweep", "--force"});
  EXPECT_EQ(read_file(out2 / plan2.runs[0].folder / "notes.txt"), "mine");
}

// The library prints nothing; a reporter hears every run and its training as data.
TEST(SweepRun, ReporterHearsEachRunAndItsTraining) {
  struct Training : TrainReporter {
    std::vector<std::string> events;
    void started(const TrainStart& s) override {
      events.push_back(cat("started ", s.first_step, "/", s.total_steps, " ", s.tokenizer));
    }
    void evaluated(const EvalReport& e) override { events.push_back(cat("evaluated ", e.step)); }
    void step_done(const StepReport& s) override { events.push_back(cat("step ", s.step, " ", s.tokens)); }
    void finished() override { events.push_back("finished"); }
  };
  struct Sweep : SweepReporter {
    Training train;
    std::vector<std::string> events;
    TrainReporter* training() override { return &train; }
    void run_started(const SweepRun& run, int64_t runs) override { events.push_back(cat("run ", run.index, "/", runs)); }
    void run_finished(const SweepRun& run, int64_t, const SweepRecord& rec) override {
      events.push_back(cat("done ", run.index, rec.ok ? " ok" : " failed"));
    }
    void finished(const SweepResult& r, double seconds) override {
      events.push_back(cat("sweep ", r.trained, " trained"));
      EXPECT_GT(seconds, 0);
    }
  };
  SweepDir dir("report");
  const fs::path cfg = write_tiny_config(dir.path);
  Sweep sweep;
  SweepOptions opt;
  opt.reporter = &sweep;
  run_sweep(plan_sweep(cfg, {"train.lr=0.001,0.003"}, {}, dir.path / "sw"), opt);
  EXPECT_EQ(sweep.events, (std::vector<std::string>{"run 1/2", "done 1 ok", "run 2/2", "done 2 ok", "sweep 2 trained"}));
  // batch 2 x context 16 tokens a step; the last step validates (eval_every = 0).
  const std::vector<std::string> run = {"started 0/2 byte", "step 1 32", "evaluated 2", "step 2 32", "finished"};
  std::vector<std::string> both = run;
  both.insert(both.end(), run.begin(), run.end());
  EXPECT_EQ(sweep.train.events, both);
}

TEST(SweepRun, AFailedRunIsRecordedAndTheSweepGoesOn) {
  SweepDir dir("fail");
  const fs::path cfg = write_tiny_config(dir.path);
  SweepOptions quiet;  // no reporter: silent
  // context 4096 passes validation but the corpus is far shorter.
  SweepResult r = run_sweep(plan_sweep(cfg, {"model.context=4096,16"}, {}, dir.path / "sw"), quiet);
  ASSERT_EQ(r.records.size(), 2u);
  EXPECT_EQ(r.failed, 1);
  EXPECT_EQ(r.trained, 1);
  EXPECT_FALSE(r.records[0].ok);
  EXPECT_NE(r.records[0].error.find("context"), std::string::npos) << r.records[0].error;
  EXPECT_TRUE(r.records[1].ok);
  EXPECT_NE(r.table.find("failed: [data]"), std::string::npos) << r.table;
  EXPECT_EQ(best_record(r.records, r.metric), 1);
  EXPECT_EQ(read_lines(dir.path / "sw" / "sweep.jsonl").size(), 2u);
}

// ---------------------------------------------------------------- equivalent runs

TEST(SweepEquivalence, ADsaBudgetCoveringTheContextIsDense) {
  ModelConfig m;
  m.context = 128;  // 2 key blocks of 64; the default window (128) covers both
  m.attention = "dsa";
  EXPECT_EQ(effective_attention(m), "dense");
  m.attention = "window";
  EXPECT_EQ(effective_attention(m), "dense");
  // Up to dense_len (1536) tokens DSA attends every key.
  m.context = 1024;
  m.attention = "dsa";
  EXPECT_EQ(effective_attention(m), "dense");
  // Without it, at 1024 tokens the budget (20%) leaves most blocks out: really sparse.
  m.dsa.dense_len = 0;
  const std::string eff = effective_attention(m);
  EXPECT_EQ(eff.rfind("dsa(W=2, top=2, block=64", 0), 0u) << eff;  // 205 keys: 128 window + 2 blocks
  m.attention = "window";
  EXPECT_EQ(effective_attention(m), "window(W=2, block=64)");
  // Exactly at the edge: window blocks + selected blocks = all key blocks.
  m.context = 256;
  m.attention = "dsa";
  m.dsa.window = 64;
  m.dsa.top_k = 0;
  m.dsa.keep_short = m.dsa.keep_long = 0.5;  // 128 keys: 1 window block + 1 selected of 4
  EXPECT_NE(effective_attention(m), "dense");
  m.dsa.keep_short = m.dsa.keep_long = 1.0;  // 256 keys: 1 + 3 = 4 blocks
  EXPECT_EQ(effective_attention(m), "dense");
}

TEST(SweepEquivalence, PlanNamesRunsThatTrainTheSameModel) {
  SweepDir dir("equiv");
  const fs::path cfg = write_tiny_config(dir.path);  // context 16
  // At context 16 every DSA setting covers the whole context, and dense
  // ignores top_k: all four runs train the dense model of run 1.
  SweepPlan plan = plan_sweep(cfg, {"model.attention=dense,dsa", "model.dsa.top_k=16,64"},
                              {"model.dsa.block=8", "model.dsa.window=8"}, dir.path / "out");
  EXPECT_EQ(plan.equivalence.same_as, (std::vector<int64_t>{0, 1, 1, 1}));
  ASSERT_EQ(plan.equivalence.notes.size(), 1u);
  EXPECT_EQ(plan.equivalence.notes[0],
            "runs 2, 3 and 4 are equivalent to run 1: dense attention ignores the model.dsa settings; "
            "the DSA budget covers the whole context of 16");
  // Long enough that DSA selects (with dense_len = 0; the default 1024 would
  // attend every key at 64 tokens): dense runs still repeat each other, the
  // DSA runs differ from them and from each other.
  plan = plan_sweep(cfg, {"model.attention=dense,dsa", "model.dsa.top_k=8,24"},
                    {"model.dsa.block=8", "model.dsa.window=8", "model.context=64", "model.dsa.keep_short=0.25",
                     "model.dsa.keep_long=0.2", "model.dsa.dense_len=0"},
                    dir.path / "out");
  EXPECT_EQ(plan.equivalence.same_as, (std::vector<int64_t>{0, 1, 0, 0}));
  EXPECT_EQ(plan.equivalence.notes, (std::vector<std::string>{
                                        "run 2 is equivalent to run 1: dense attention ignores the model.dsa settings"}));
  // Settings that only differ below what the kernels see still collapse.
  plan = plan_sweep(cfg, {"model.dsa.window=8,16"}, {"model.attention=window", "model.dsa.block=16", "model.context=64"},
                    dir.path / "out");
  EXPECT_EQ(plan.equivalence.same_as, (std::vector<int64_t>{0, 1}));
  EXPECT_NE(plan.equivalence.notes.at(0).find("both select the same key blocks (window(W=1, block=16)"),
            std::string::npos)
      << plan.equivalence.notes[0];
  plan = plan_sweep(cfg, {"train.lr=0.001,0.002"}, {}, dir.path / "out");
  EXPECT_EQ(plan.equivalence.same_as, (std::vector<int64_t>{0, 0}));
  EXPECT_TRUE(plan.equivalence.notes.empty());
}

TEST(SweepEquivalence, EquivalentRunsAreMarkedAndNeverBest) {
  // Run 2 repeats run 1 and is "better" by rounding noise only.
  std::vector<SweepRecord> recs = {make_record(1, {{"model.attention", "dense"}}, 2.5, 2.4, 1000),
                                   make_record(2, {{"model.attention", "dsa"}}, 2.5, 2.4 - 5e-9, 1100),
                                   make_record(3, {{"model.attention", "window"}}, 2.6, 2.5, 900)};
  recs[1].same_as = 1;
  EXPECT_EQ(best_record(recs, SweepMetric::ValLoss), 0);
  EXPECT_EQ(pareto_front(recs, SweepMetric::ValLoss), (std::vector<bool>{true, false, false}));
  const std::string table = sweep_table_markdown(recs, SweepMetric::ValLoss);
  EXPECT_NE(table.find("| = #1"), std::string::npos) << table;
  const std::string line = sweep_record_json(recs[1]);
  EXPECT_NE(line.find(",\"same_as\":1}"), std::string::npos) << line;
  EXPECT_EQ(sweep_record_from_json(line, "x").same_as, 1);
  EXPECT_EQ(sweep_record_json(recs[0]).find("same_as"), std::string::npos);
}

TEST(SweepPlot, NegligibleQualityDifferencesAreNotStretched) {
  // 5e-9 apart: the axis is still at least 2% of the values wide.
  auto [lo, hi] = sweep_quality_range(2.4, 2.4 + 5e-9);
  EXPECT_NEAR(hi - lo, 0.02 * 2.4, 1e-3);
  EXPECT_LT(lo, 2.4);
  EXPECT_GT(hi, 2.4 + 5e-9);
  // Real differences keep the padded data range.
  std::tie(lo, hi) = sweep_quality_range(2.0, 3.0);
  EXPECT_DOUBLE_EQ(lo, 1.92);
  EXPECT_DOUBLE_EQ(hi, 3.08);
  // In the SVG, the two points sit on (almost) the same height.
  std::vector<SweepRecord> recs = {make_record(1, {{"model.dsa.top_k", "16"}}, 2.5, 2.4, 1000),
                                   make_record(2, {{"model.dsa.top_k", "64"}}, 2.5, 2.4 + 5e-9, 1100)};
  const std::string svg = sweep_plot_svg(recs, SweepMetric::ValLoss, "t");
  std::vector<double> cy;
  for (size_t p = svg.find("<circle cx="); p != std::string::npos; p = svg.find("<circle cx=", p + 1)) {
    const size_t at = svg.find("cy=\"", p) + 4;
    cy.push_back(std::stod(svg.substr(at)));
  }
  ASSERT_EQ(cy.size(), 2u + 2u);  // two legend markers, then the runs
  EXPECT_LT(std::fabs(cy[2] - cy[3]), 1.0);
}

TEST(SweepRun, CheckSweepOutRefusesWhatRunSweepWouldWithoutWriting) {
  SweepDir dir("check");
  const fs::path cfg = write_tiny_config(dir.path);
  const fs::path out = dir.path / "sw";
  SweepOptions quiet;  // no reporter: silent
  SweepPlan plan = plan_sweep(cfg, {"train.lr=0.001"}, {}, out);
  check_sweep_out(plan, quiet);  // a fresh folder is fine ...
  EXPECT_FALSE(fs::exists(out));  // ... and nothing is written
  run_sweep(plan, quiet);
  expect_error([&] { check_sweep_out(plan, quiet); }, {"already holds sweep results"});
  SweepOptions resume = quiet;
  resume.resume = true;
  check_sweep_out(plan, resume);
  expect_error([&] { check_sweep_out(plan_sweep(cfg, {"train.lr=0.002"}, {}, out), resume); }, {"another grid"});
  SweepOptions both = resume;
  both.force = true;
  expect_error([&] { check_sweep_out(plan, both); }, {"give one"});
}
