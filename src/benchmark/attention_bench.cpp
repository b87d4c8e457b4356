#include "benchmark/attention_bench.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "core/error.h"
#include "core/interrupt.h"
#include "core/memory.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "ops/attention_dsa.h"
#include "ops/attention_registry.h"
#include "run/config.h"
#include "plot/line_chart.h"

namespace sparta {
namespace {

// N(0, 1) in fixed chunks, each from its own generator, so filling hundreds
// of millions of values uses every core yet gives the same numbers for any
// thread count.
void fill_normal(float* p, int64_t n, uint64_t seed) {
  constexpr int64_t kChunk = 1 << 16;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    Rng rng(seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(c));
    const int64_t end = std::min(n, (c + 1) * kChunk);
    for (int64_t i = c * kChunk; i < end; ++i) p[i] = static_cast<float>(rng.normal());
  }
}

Tensor random_tensor(const Shape& shape, uint64_t seed) {
  Tensor t = Tensor::empty(shape);
  fill_normal(t.data<float>(), t.numel(), seed);
  return t;
}

double ms(const std::vector<double>& seconds) { return median(seconds) * 1e3; }

// Trailing whitespace-free integer parse; false on anything else.
bool parse_int(const std::string& s, int64_t& v) {
  if (s.empty()) return false;
  size_t pos = 0;
  try {
    v = std::stoll(s, &pos);
  } catch (...) {
    return false;
  }
  return pos == s.size();
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream is(text);
  while (std::getline(is, cur, ',')) {
    const size_t a = cur.find_first_not_of(" \t"), b = cur.find_last_not_of(" \t");
    out.push_back(a == std::string::npos ? "" : cur.substr(a, b - a + 1));
  }
  return out;
}

// Milliseconds with about three significant digits.
std::string fmt_ms(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, v < 10 ? "%.3f" : v < 100 ? "%.2f" : v < 1000 ? "%.1f" : "%.0f", v);
  return buf;
}

std::string fmt(const char* f, double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

std::optional<double> AttentionBenchRecord::selection_share() const {
  if (!selection_ms) return std::nullopt;
  return *selection_ms / fwd_bwd_ms();
}

nlohmann::json attention_record_json(const AttentionBenchRecord& r) {
  nlohmann::json j = {{"impl", r.impl}, {"precision", r.precision}, {"seq", r.seq}, {"fwd_ms", r.fwd_ms},
                      {"bwd_ms", r.bwd_ms}};
  j["decode_ms"] = r.decode_ms ? nlohmann::json(*r.decode_ms) : nlohmann::json(nullptr);
  j["peak_mb"] = r.peak_mb;
  if (r.selection_ms) j["selection_ms"] = *r.selection_ms;
  j["batch"] = r.batch;
  j["heads"] = r.heads;
  j["head_dim"] = r.head_dim;
  j["threads"] = r.threads;
  j["causal"] = r.causal;
  j["peak_reset"] = r.peak_reset;
  return j;
}

AttentionBenchRecord attention_record_from_json(const nlohmann::json& j, const std::string& where) {
  SPARTA_CHECK(j.is_object(), "[bench] ", where, ": a record must be a JSON object");
  auto number = [&](const char* key, bool required, double fallback) -> double {
    if (!j.contains(key) || j[key].is_null()) {
      SPARTA_CHECK(!required, "[bench] ", where, ": record has no '", key, "'");
      return fallback;
    }
    SPARTA_CHECK(j[key].is_number(), "[bench] ", where, ": '", key, "' must be a number, got ", j[key].dump());
    return j[key].get<double>();
  };
  auto optional_number = [&](const char* key) -> std::optional<double> {
    if (!j.contains(key) || j[key].is_null()) return std::nullopt;
    return number(key, true, 0);
  };
  auto boolean = [&](const char* key, bool fallback) {
    if (!j.contains(key)) return fallback;
    SPARTA_CHECK(j[key].is_boolean(), "[bench] ", where, ": '", key, "' must be true or false");
    return j[key].get<bool>();
  };
  SPARTA_CHECK(j.contains("impl") && j["impl"].is_string() && !j["impl"].get<std::string>().empty(),
               "[bench] ", where, ": record needs a non-empty string 'impl'");
  AttentionBenchRecord r;
  r.impl = j["impl"].get<std::string>();
  if (j.contains("precision")) {
    SPARTA_CHECK(j["precision"].is_string() && !j["precision"].get<std::string>().empty(), "[bench] ", where,
                 ": 'precision' must be a non-empty string, got ", j["precision"].dump());
    r.precision = j["precision"].get<std::string>();
  }
  SPARTA_CHECK(j.contains("seq") && j["seq"].is_number_integer() && j["seq"].get<int64_t>() >= 1, "[bench] ",
               where, ": record needs an integer 'seq' >= 1");
  r.seq = j["seq"].get<int64_t>();
  r.fwd_ms = number("fwd_ms", true, 0);
  r.bwd_ms = number("bwd_ms", true, 0);
  r.decode_ms = optional_number("decode_ms");
  r.peak_mb = number("peak_mb", false, std::numeric_limits<double>::quiet_NaN());
  r.selection_ms = optional_number("selection_ms");
  r.batch = static_cast<int64_t>(number("batch", false, 0));
  r.heads = static_cast<int64_t>(number("heads", false, 0));
  r.head_dim = static_cast<int64_t>(number("head_dim", false, 0));
  r.threads = static_cast<int>(number("threads", false, 0));
  r.causal = boolean("causal", true);
  r.peak_reset = boolean("peak_reset", true);
  return r;
}

std::vector<double> time_runs(const std::function<void()>& fn, double min_time_s, int max_runs) {
  using clock = std::chrono::steady_clock;
  fn();  // warm-up: first touch of buffers, lazily built kernels, cold caches
  std::vector<double> runs;
  double total = 0;
  do {
    const auto t0 = clock::now();
    fn();
    runs.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    total += runs.back();
  } while (total < min_time_s && static_cast<int>(runs.size()) < max_runs && !interrupt_requested());
  return runs;
}

double median(std::vector<double> v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

AttentionBenchRecord median_record(const std::vector<AttentionBenchRecord>& rounds) {
  SPARTA_CHECK(!rounds.empty(), "[bench] median_record needs at least one round");
  AttentionBenchRecord r = rounds.front();
  std::vector<double> fwd, bwd, dec, sel;
  for (const AttentionBenchRecord& x : rounds) {
    SPARTA_CHECK(x.impl == r.impl && x.precision == r.precision && x.seq == r.seq && x.batch == r.batch && x.heads == r.heads &&
                     x.head_dim == r.head_dim && x.causal == r.causal,
                 "[bench] median_record: rounds of different problems (", r.label(), " seq ", r.seq, " vs ",
                 x.label(), " seq ", x.seq, ")");
    fwd.push_back(x.fwd_ms);
    bwd.push_back(x.bwd_ms);
    if (x.decode_ms) dec.push_back(*x.decode_ms);
    if (x.selection_ms) sel.push_back(*x.selection_ms);
    r.peak_mb = std::max(r.peak_mb, x.peak_mb);
    r.peak_reset = r.peak_reset && x.peak_reset;
  }
  r.fwd_ms = median(fwd);
  r.bwd_ms = median(bwd);
  if (!dec.empty()) r.decode_ms = median(dec);
  if (!sel.empty()) r.selection_ms = median(sel);
  return r;
}

double attention_bench_bytes(int64_t seq, const AttentionBenchSpec& s) {
  const double btd = static_cast<double>(s.batch) * static_cast<double>(seq) * static_cast<double>(s.heads);
  return 4.0 * (8.0 * btd * static_cast<double>(s.head_dim) + btd);
}

PeakMemoryMeter::PeakMemoryMeter() {
  // Freed heap that glibc still holds would count as "before" and hide the
  // problem's own allocations, which can reuse it.
  malloc_trim(0);
  baseline_ = proc_status_mib("VmRSS");
}

void PeakMemoryMeter::begin() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  if (!f) reset_ok_ = false;
}

void PeakMemoryMeter::end() { peak_ = std::max(peak_, proc_status_mib("VmHWM") - baseline_); }

AttentionBenchRecord measure_attention(const std::string& impl, int64_t seq, const AttentionBenchSpec& spec,
                                       const DsaConfig& dsa) {
  SPARTA_CHECK(seq >= 1, "[bench] sequence length must be >= 1, got ", seq);
  SPARTA_CHECK(spec.batch >= 1 && spec.heads >= 1 && spec.head_dim >= 1,
               "[bench] batch, heads and head-dim must be >= 1, got ", spec.batch, ", ", spec.heads, ", ",
               spec.head_dim);
  SPARTA_CHECK(spec.min_time_s >= 0 && std::isfinite(spec.min_time_s), "[bench] --min-time must be >= 0, got ",
               spec.min_time_s);
  SPARTA_CHECK(spec.max_runs >= 1, "[bench] max runs must be >= 1, got ", spec.max_runs);
  SPARTA_CHECK(spec.decode_steps >= 1, "[bench] --decode-steps must be >= 1, got ", spec.decode_steps);
  SPARTA_CHECK(spec.precision == "fp32" || spec.precision == "bf16", "[bench] precision must be fp32 or bf16, got '",
               spec.precision, "'");
  std::unique_ptr<Attention> attn = make_attention(impl, dsa);
  const int64_t B = spec.batch, T = seq, H = spec.heads, D = spec.head_dim, HD = H * D;
  AttnDims d{B, T, H, D, 3 * HD, spec.causal};
  d.bf16_products = spec.precision == "bf16";

  AttentionBenchRecord r;
  r.impl = impl;
  r.precision = spec.precision;
  r.seq = seq;
  r.batch = B;
  r.heads = H;
  r.head_dim = D;
  r.causal = spec.causal;
  r.threads = compute_threads();

  PeakMemoryMeter mem;
  {  // Training shape: forward, backward, selection.
    Tensor qkv = random_tensor({B, T, 3, H, D}, spec.seed);
    Tensor dout = random_tensor({B, T, H, D}, spec.seed + 1);
    Tensor out = Tensor::empty({B, T, H, D}), lse = Tensor::empty({B, H, T});
    Tensor dqkv = Tensor::empty({B, T, 3, H, D});
    const float* q = qkv.data<float>();
    const float *k = q + HD, *v = q + 2 * HD;
    float* dq = dqkv.data<float>();

    // As in training: forward keeps what backward reuses (DSA: its plan).
    std::unique_ptr<AttnSaved> saved;
    mem.begin();
    r.fwd_ms = ms(time_runs([&] { attn->forward(out.data<float>(), lse.data<float>(), q, k, v, d, &saved); },
                            spec.min_time_s, spec.max_runs));
    mem.end();
    mem.begin();
    r.bwd_ms = ms(time_runs(
        [&] {
          attn->backward(dq, dq + HD, dq + 2 * HD, dout.data<float>(), out.data<float>(), lse.data<float>(), q, k, v,
                         d, saved.get());
        },
        spec.min_time_s, spec.max_runs));
    mem.end();
    if (impl == "dsa" && !dsa_attends_all(dsa, T)) {  // otherwise DSA runs the dense kernel: no selection
      mem.begin();
      r.selection_ms = ms(time_runs([&] { (void)dsa_plan(q, k, v, d, dsa); }, spec.min_time_s, spec.max_runs));
      mem.end();
    }
  }
  if (spec.causal) {  // Decoding one token of one sequence against seq cached positions.
    malloc_trim(0);  // return the training buffers before allocating the cache
    Tensor q = random_tensor({H, D}, spec.seed + 2), kc = random_tensor({T, H, D}, spec.seed + 3),
           vc = random_tensor({T, H, D}, spec.seed + 4);
    Tensor o = Tensor::empty({H, D});
    // As in generation, the implementation's decode memo (DSA: block means)
    // lives with the cache; the warm-up run fills it, so the timed runs see
    // the steady state of a long generation.
    std::unique_ptr<DecodeMemo> memo = attn->make_decode_memo();
    mem.begin();
    const int steps = spec.decode_steps;
    r.decode_ms = ms(time_runs(
                      [&] {
                        for (int s = 0; s < steps; ++s)
                          attn->decode(o.data<float>(), q.data<float>(), kc.data<float>(), vc.data<float>(), T, H,
                                       D, memo.get());
                      },
                      spec.min_time_s, spec.max_runs)) /
                  steps;
    mem.end();
  }
  r.peak_mb = mem.peak_mib();
  r.peak_reset = mem.reset_ok();
  return r;
}

std::vector<int64_t> parse_seq_list(const std::string& text) {
  std::vector<int64_t> seqs;
  for (const std::string& s : split_commas(text)) {
    int64_t v = 0;
    SPARTA_CHECK(parse_int(s, v), "[bench] --seqs must be a comma-separated list of integers, got '", text, "'");
    SPARTA_CHECK(v >= 1, "[bench] --seqs: sequence length must be >= 1, got ", v);
    seqs.push_back(v);
  }
  SPARTA_CHECK(!seqs.empty(), "[bench] --seqs is empty (give e.g. --seqs 1024,4096)");
  std::sort(seqs.begin(), seqs.end());
  seqs.erase(std::unique(seqs.begin(), seqs.end()), seqs.end());
  return seqs;
}

std::vector<std::string> parse_attention_precision_list(const std::string& text) {
  std::vector<std::string> out;
  for (const std::string& s : split_commas(text)) {
    SPARTA_CHECK(s == "fp32" || s == "bf16", "[bench] --precision: unknown precision '", s,
                 "' (the attention kernels compute in fp32 or bf16)");
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  }
  SPARTA_CHECK(!out.empty(), "[bench] --precision is empty (give fp32, bf16 or fp32,bf16)");
  return out;
}

std::vector<std::string> parse_impl_list(const std::string& text) {
  std::vector<std::string> impls;
  for (const std::string& s : split_commas(text)) {
    SPARTA_CHECK(find_attention(s), "[bench] --impls: unknown implementation '", s,
                 "' (available: ", attention_names_text(), ")");
    if (std::find(impls.begin(), impls.end(), s) == impls.end()) impls.push_back(s);
  }
  SPARTA_CHECK(!impls.empty(), "[bench] --impls is empty (available: ", attention_names_text(), ")");
  return impls;
}

DsaConfig dsa_config_from_overrides(const std::vector<std::string>& sets) {
  for (const std::string& s : sets)
    SPARTA_CHECK(s.rfind("model.dsa.", 0) == 0, "[bench] --set '", s,
                 "': only model.dsa.KEY=VALUE settings apply to the attention benchmark");
  Config cfg;
  apply_overrides(cfg, sets);  // the config parser's types, ranges and messages
  return cfg.model.dsa;
}

std::string seq_label(int64_t seq) {
  if (seq >= (1 << 20) && seq % (1 << 20) == 0) return cat(seq >> 20, "M");
  if (seq >= 1024 && seq % 1024 == 0) return cat(seq >> 10, "K");
  return std::to_string(seq);
}

std::string attention_bench_table(const std::vector<AttentionBenchRecord>& records) {
  std::map<std::pair<int64_t, std::string>, double> dense;  // (seq, precision) -> fwd+bwd ms
  for (const auto& r : records)
    if (r.impl == "dense") dense.emplace(std::pair(r.seq, r.precision), r.fwd_bwd_ms());
  size_t w = 6;
  for (const auto& r : records) w = std::max(w, r.label().size());
  auto row = [&](const std::vector<std::string>& cells) {
    std::string line;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%-*s", static_cast<int>(w), cells[0].c_str());
    line += buf;
    const int widths[] = {8, 10, 10, 10, 12, 9, 9, 9};
    for (size_t i = 1; i < cells.size(); ++i) {
      std::snprintf(buf, sizeof buf, " %*s", widths[i - 1], cells[i].c_str());
      line += buf;
    }
    return line + "\n";
  };
  std::string s = row({"impl", "seq", "fwd ms", "bwd ms", "fwd+bwd", "decode ms/t", "sel %", "peak MB", "speed-up"});
  for (const auto& r : records) {
    const auto share = r.selection_share();
    const auto it = dense.find(std::pair(r.seq, r.precision));
    const bool speedup = r.impl != "dense" && it != dense.end() && r.fwd_bwd_ms() > 0;
    s += row({r.label(), std::to_string(r.seq), fmt_ms(r.fwd_ms), fmt_ms(r.bwd_ms), fmt_ms(r.fwd_bwd_ms()),
              r.decode_ms ? fmt_ms(*r.decode_ms) : "-", share ? fmt("%.1f%%", 100 * *share) : "-",
              std::isfinite(r.peak_mb) ? fmt("%.1f", r.peak_mb) : "-",
              speedup ? fmt("%.2fx", it->second / r.fwd_bwd_ms()) : "-"});
  }
  return s;
}

std::string attention_bench_svg(const std::vector<AttentionBenchRecord>& records, const std::string& title) {
  std::vector<ChartSeries> series;
  std::vector<int64_t> seqs;
  for (const auto& r : records) {
    auto it = std::find_if(series.begin(), series.end(), [&](const ChartSeries& c) { return c.name == r.label(); });
    if (it == series.end()) {
      series.push_back({r.label(), {}, ""});
      it = series.end() - 1;
    }
    it->points.emplace_back(static_cast<double>(r.seq), r.fwd_bwd_ms());
    seqs.push_back(r.seq);
  }
  std::sort(seqs.begin(), seqs.end());
  seqs.erase(std::unique(seqs.begin(), seqs.end()), seqs.end());
  LineChartOptions opt;
  opt.title = title;
  opt.x_title = "sequence length (tokens)";
  opt.y_title = "forward + backward (ms)";
  opt.log_x = opt.log_y = true;
  for (int64_t q : seqs) opt.x_ticks.emplace_back(static_cast<double>(q), seq_label(q));
  return line_chart_svg(series, opt);
}

}  // namespace sparta
