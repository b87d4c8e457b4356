#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "benchmark/attention_bench.h"

using namespace sparta;

namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::set<std::string> keys_of(const nlohmann::json& j) {
  std::set<std::string> k;
  for (auto it = j.begin(); it != j.end(); ++it) k.insert(it.key());
  return k;
}

AttentionBenchSpec tiny_spec() {
  AttentionBenchSpec s;
  s.batch = 1;
  s.heads = 2;
  s.head_dim = 16;
  s.min_time_s = 0;
  s.decode_steps = 2;
  return s;
}

}  // namespace

TEST(BenchAttention, TimeRunsWarmsUpAndStopsAtMaxRuns) {
  int calls = 0;
  auto count = [&] { ++calls; };
  EXPECT_EQ(time_runs(count, 0, 20).size(), 1u);  // one warm-up + one timed run
  EXPECT_EQ(calls, 2);
  calls = 0;
  EXPECT_EQ(time_runs(count, 1e9, 5).size(), 5u);  // capped by max_runs
  EXPECT_EQ(calls, 6);
}

TEST(BenchAttention, Median) {
  EXPECT_EQ(median({3, 1, 2}), 2);
  EXPECT_EQ(median({4, 1, 3, 2}), 2.5);
  EXPECT_EQ(median({7}), 7);
  EXPECT_TRUE(std::isnan(median({})));
}

TEST(BenchAttention, MeasuresEveryImplementationOnATinyProblem) {
  for (const std::string impl : {"dense", "window", "dsa"}) {
    // Really sparse at 128 tokens (the default would attend every key there
    // and run the dense kernel, with no selection to time): 1 window block
    // + 6 of 8 blocks selected.
    DsaConfig sparse;
    sparse.dense_len = 0, sparse.block = 16, sparse.window = 16, sparse.top_k = 0;
    const AttentionBenchRecord r = measure_attention(impl, 128, tiny_spec(), sparse);
    EXPECT_EQ(r.impl, impl);
    EXPECT_EQ(r.seq, 128);
    EXPECT_EQ(r.heads, 2);
    EXPECT_EQ(r.head_dim, 16);
    EXPECT_EQ(r.batch, 1);
    EXPECT_GE(r.threads, 1);
    for (double v : {r.fwd_ms, r.bwd_ms, r.decode_ms.value_or(-1)}) {
      EXPECT_TRUE(std::isfinite(v)) << impl;
      EXPECT_GT(v, 0) << impl;
    }
    EXPECT_TRUE(std::isfinite(r.peak_mb)) << impl;
    EXPECT_GE(r.peak_mb, 0) << impl;
    EXPECT_EQ(r.selection_ms.has_value(), impl == "dsa");
    const nlohmann::json j = attention_record_json(r);
    std::set<std::string> want = {"impl", "seq", "fwd_ms", "bwd_ms", "decode_ms", "peak_mb", "batch",
                                  "heads", "head_dim", "threads", "causal", "peak_reset", "precision"};
    if (impl == "dsa") {
      want.insert("selection_ms");
      EXPECT_GT(*r.selection_ms, 0);
      EXPECT_NEAR(*r.selection_share(), *r.selection_ms / (r.fwd_ms + r.bwd_ms), 1e-12);
    } else {
      EXPECT_FALSE(r.selection_share().has_value());
    }
    EXPECT_EQ(keys_of(j), want) << j.dump();
    EXPECT_EQ(j["impl"], impl);
    EXPECT_EQ(j["seq"], 128);
    EXPECT_EQ(j["fwd_ms"].get<double>(), r.fwd_ms);
  }
  // Where DSA attends every key it runs the dense kernel: nothing is selected.
  EXPECT_FALSE(measure_attention("dsa", 128, tiny_spec(), DsaConfig{}).selection_ms.has_value());
}

TEST(BenchAttention, BidirectionalHasNoDecode) {
  AttentionBenchSpec s = tiny_spec();
  s.causal = false;
  const AttentionBenchRecord r = measure_attention("dense", 64, s, DsaConfig{});
  EXPECT_FALSE(r.decode_ms.has_value());
  EXPECT_GT(r.fwd_ms, 0);
  const nlohmann::json j = attention_record_json(r);
  EXPECT_TRUE(j["decode_ms"].is_null());
  EXPECT_EQ(j["causal"], false);
}

TEST(BenchAttention, PeakMemoryCoversTheProblemsBuffers) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's redzones and quarantine change what memory use measures";
#endif
  AttentionBenchSpec s = tiny_spec();
  s.heads = 2;
  s.head_dim = 32;
  // q, k, v, dq, dk, dv (2 x 1.5 MiB), out and dout (0.5 MiB each), lse: 4.02 MiB.
  const AttentionBenchRecord big = measure_attention("dense", 2048, s, DsaConfig{});
  if (!big.peak_reset) GTEST_SKIP() << "/proc/self/clear_refs is not writable here";
  EXPECT_GE(big.peak_mb, 3.9);
  EXPECT_LT(big.peak_mb, 40);
  // The counter is reset per problem: a small problem after a big one does
  // not inherit the big one's peak.
  const AttentionBenchRecord small = measure_attention("dense", 64, s, DsaConfig{});
  EXPECT_LT(small.peak_mb, 1.5);
}

TEST(BenchAttention, MeasureRejectsBadInput) {
  EXPECT_NE(error_of([] { measure_attention("flash", 128, tiny_spec(), DsaConfig{}); })
                .find("unknown implementation 'flash' (available: dense, window, dsa)"),
            std::string::npos);
  EXPECT_NE(error_of([] { measure_attention("dense", 0, tiny_spec(), DsaConfig{}); })
                .find("sequence length must be >= 1, got 0"),
            std::string::npos);
  AttentionBenchSpec s = tiny_spec();
  s.heads = 0;
  EXPECT_NE(error_of([&] { measure_attention("dense", 16, s, DsaConfig{}); }).find("must be >= 1, got 1, 0, 16"),
            std::string::npos);
}

TEST(BenchAttention, ParsesLists) {
  EXPECT_EQ(parse_seq_list("4096, 1024,1024"), (std::vector<int64_t>{1024, 4096}));
  EXPECT_EQ(parse_seq_list("7"), (std::vector<int64_t>{7}));
  EXPECT_EQ(error_of([] { parse_seq_list(""); }), "[bench] --seqs is empty (give e.g. --seqs 1024,4096)");
  EXPECT_EQ(error_of([] { parse_seq_list("1024,4k"); }),
            "[bench] --seqs must be a comma-separated list of integers, got '1024,4k'");
  EXPECT_EQ(error_of([] { parse_seq_list("1024,,2048"); }),
            "[bench] --seqs must be a comma-separated list of integers, got '1024,,2048'");
  EXPECT_EQ(error_of([] { parse_seq_list("1024,0"); }), "[bench] --seqs: sequence length must be >= 1, got 0");

  EXPECT_EQ(parse_impl_list("dsa,dense,dsa"), (std::vector<std::string>{"dsa", "dense"}));
  EXPECT_EQ(error_of([] { parse_impl_list("dense,sparse"); }),
            "[bench] --impls: unknown implementation 'sparse' (available: dense, window, dsa)");
  EXPECT_EQ(error_of([] { parse_impl_list(""); }), "[bench] --impls is empty (available: dense, window, dsa)");
}

TEST(BenchAttention, DsaOverrides) {
  EXPECT_EQ(dsa_config_from_overrides({}).block, DsaConfig{}.block);
  const DsaConfig c = dsa_config_from_overrides({"model.dsa.block=32", "model.dsa.summary=false"});
  EXPECT_EQ(c.block, 32);
  EXPECT_FALSE(c.summary);
  EXPECT_EQ(c.window, DsaConfig{}.window);
  EXPECT_NE(error_of([] { dsa_config_from_overrides({"model.dsa.nope=1"}); }).find("unknown key 'model.dsa.nope'"),
            std::string::npos);
  EXPECT_NE(error_of([] { dsa_config_from_overrides({"model.dsa.block=abc"}); })
                .find("model.dsa.block must be an integer, got 'abc'"),
            std::string::npos);
  EXPECT_EQ(error_of([] { dsa_config_from_overrides({"model.n_layer=2"}); }),
            "[bench] --set 'model.n_layer=2': only model.dsa.KEY=VALUE settings apply to the attention benchmark");
  // Values are validated as a whole config: keep_long may not exceed keep_short.
  EXPECT_NE(error_of([] { dsa_config_from_overrides({"model.dsa.keep_long=0.9"}); }).find("keep_long <= keep_short"),
            std::string::npos);
}

TEST(BenchAttention, SeqLabels) {
  EXPECT_EQ(seq_label(128), "128");
  EXPECT_EQ(seq_label(1000), "1000");
  EXPECT_EQ(seq_label(1024), "1K");
  EXPECT_EQ(seq_label(1536), "1536");
  EXPECT_EQ(seq_label(65536), "64K");
  EXPECT_EQ(seq_label(3 << 20), "3M");
}

TEST(BenchAttention, MedianRecordOverRounds) {
  const auto rec = [](double f, double b, double dec, double sel, double peak, bool reset) {
    AttentionBenchRecord r;
    r.impl = "dsa", r.seq = 4096, r.batch = 1, r.heads = 8, r.head_dim = 64;
    r.fwd_ms = f, r.bwd_ms = b, r.decode_ms = dec, r.selection_ms = sel, r.peak_mb = peak, r.peak_reset = reset;
    return r;
  };
  const AttentionBenchRecord m =
      median_record({rec(3, 10, 0.5, 1, 40, true), rec(1, 30, 0.1, 3, 60, false), rec(2, 20, 0.3, 2, 50, true)});
  EXPECT_EQ(m.fwd_ms, 2);  // each field's median, not one round's record
  EXPECT_EQ(m.bwd_ms, 20);
  EXPECT_EQ(*m.decode_ms, 0.3);
  EXPECT_EQ(*m.selection_ms, 2);
  EXPECT_EQ(m.peak_mb, 60);  // the largest
  EXPECT_FALSE(m.peak_reset);
  EXPECT_EQ(median_record({rec(1, 2, 0.5, 1, 4, true), rec(3, 4, 0.5, 1, 4, true)}).fwd_ms, 2);  // even: mean of two
  AttentionBenchRecord other = rec(1, 2, 0.5, 1, 4, true);
  other.seq = 1024;
  EXPECT_EQ(error_of([&] { median_record({rec(1, 2, 0.5, 1, 4, true), other}); }),
            "[bench] median_record: rounds of different problems (dsa seq 4096 vs dsa seq 1024)");
  EXPECT_EQ(error_of([] { median_record({}); }), "[bench] median_record needs at least one round");
}

TEST(BenchAttention, RecordJsonRoundTripAndErrors) {
  AttentionBenchRecord r;
  r.impl = "dsa";
  r.seq = 4096;
  r.fwd_ms = 1.5;
  r.bwd_ms = 4.25;
  r.decode_ms = 0.125;
  r.peak_mb = 12.5;
  r.selection_ms = 0.5;
  r.batch = 2, r.heads = 8, r.head_dim = 64, r.threads = 2;
  const AttentionBenchRecord back = attention_record_from_json(attention_record_json(r), "x");
  EXPECT_EQ(attention_record_json(back), attention_record_json(r));

  // Foreign records (PyTorch rows) need only impl, seq, fwd_ms and bwd_ms.
  const auto torch = attention_record_from_json(
      nlohmann::json{{"impl", "torch"}, {"seq", 1024}, {"fwd_ms", 3}, {"bwd_ms", 6}}, "x");
  EXPECT_EQ(torch.impl, "torch");
  EXPECT_FALSE(torch.decode_ms.has_value());
  EXPECT_TRUE(std::isnan(torch.peak_mb));

  EXPECT_EQ(error_of([] { attention_record_from_json(nlohmann::json{{"impl", "a"}, {"seq", 1}, {"fwd_ms", 1}}, "f:3"); }),
            "[bench] f:3: record has no 'bwd_ms'");
  EXPECT_EQ(error_of([] {
              attention_record_from_json(nlohmann::json{{"impl", "a"}, {"seq", 1.5}, {"fwd_ms", 1}, {"bwd_ms", 1}}, "f:1");
            }),
            "[bench] f:1: record needs an integer 'seq' >= 1");
  EXPECT_EQ(error_of([] {
              attention_record_from_json(nlohmann::json{{"impl", "a"}, {"seq", 1}, {"fwd_ms", "x"}, {"bwd_ms", 1}}, "f:1");
            }),
            "[bench] f:1: 'fwd_ms' must be a number, got \"x\"");
  EXPECT_EQ(error_of([] { attention_record_from_json(nlohmann::json::array(), "f:2"); }),
            "[bench] f:2: a record must be a JSON object");
}

TEST(BenchAttention, TableAndChart) {
  auto rec = [](std::string impl, int64_t seq, double f, double b, std::optional<double> sel) {
    AttentionBenchRecord r;
    r.impl = impl;
    r.seq = seq;
    r.fwd_ms = f;
    r.bwd_ms = b;
    r.decode_ms = 0.25;
    r.peak_mb = 3;
    r.selection_ms = sel;
    return r;
  };
  const std::vector<AttentionBenchRecord> recs = {rec("dense", 1024, 10, 30, {}), rec("dsa", 1024, 5, 15, 2.0),
                                                  rec("window", 4096, 50, 150, {})};
  const std::string t = attention_bench_table(recs);
  std::vector<std::string> lines;
  for (size_t a = 0, b; (b = t.find('\n', a)) != std::string::npos; a = b + 1) lines.push_back(t.substr(a, b - a));
  ASSERT_EQ(lines.size(), 4u) << t;
  for (const char* col : {"impl", "seq", "fwd ms", "bwd ms", "fwd+bwd", "decode ms/t", "sel %", "peak MB", "speed-up"})
    EXPECT_NE(lines[0].find(col), std::string::npos) << col;
  EXPECT_NE(lines[1].find("40.00"), std::string::npos) << lines[1];  // dense fwd+bwd
  EXPECT_NE(lines[2].find("10.0%"), std::string::npos) << lines[2];  // 2 / (5 + 15)
  EXPECT_NE(lines[2].find("2.00x"), std::string::npos) << lines[2];  // 40 / 20
  EXPECT_EQ(lines[3].find('x'), std::string::npos) << lines[3];      // no dense at 4096
  EXPECT_EQ(lines[1].size(), lines[2].size());

  const std::string svg = attention_bench_svg(recs, "t");
  for (const char* text : {">dense</text>", ">dsa</text>", ">window</text>", ">1K</text>", ">4K</text>",
                           ">sequence length (tokens)</text>", ">forward + backward (ms)</text>"})
    EXPECT_NE(svg.find(text), std::string::npos) << text;
}
