#pragma once
// Layer benchmark: the attention micro-benchmark harness.
// The attention micro-benchmark behind `sparta bench attention`
// (docs/bench-attention.md): for one implementation (a name in
// ops/attention_registry.h) and one sequence length it times forward,
// backward and one-token decode on random inputs, DSA's selection step
// (dsa_plan) alone, and the peak memory of the problem; records render as a
// table, JSON lines and an SVG chart of fwd+bwd time against sequence length.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ops/dsa_budget.h"

namespace sparta {

struct AttentionBenchSpec {
  int64_t batch = 1, heads = 8, head_dim = 64;  // B, H, D (all >= 1)
  bool causal = true;       // false: bidirectional forward/backward, no decode timing
  double min_time_s = 1.0;  // keep repeating a timing until this much was timed (>= 0)
  int max_runs = 20;        // timed runs per timing at most (>= 1)
  int decode_steps = 16;    // decode calls per decode sample (>= 1)
  uint64_t seed = 1;        // inputs are N(0, 1) from this seed
  // "fp32", or "bf16": the kernels' products take BF16 operands
  // (AttnDims::bf16_products, what a bf16 training run computes).
  std::string precision = "fp32";
};

struct AttentionBenchRecord {
  std::string impl;
  std::string precision = "fp32";  // AttentionBenchSpec::precision
  int64_t seq = 0;
  double fwd_ms = 0, bwd_ms = 0;
  std::optional<double> decode_ms;     // ms per decoded token; none when bidirectional
  double peak_mb = 0;                  // see measure_attention
  bool peak_reset = true;              // false: peak_mb uses the process-lifetime VmHWM
  std::optional<double> selection_ms;  // dsa only: one dsa_plan call
  int64_t batch = 0, heads = 0, head_dim = 0;
  bool causal = true;
  int threads = 0;

  double fwd_bwd_ms() const { return fwd_ms + bwd_ms; }
  // The impl, with "/bf16" appended for a bf16 record (tables, chart series).
  std::string label() const { return precision == "fp32" ? impl : impl + "/" + precision; }
  // selection_ms / (fwd_ms + bwd_ms): forward runs the selection once;
  // backward replays forward's choice without ranking (the block scores it
  // recomputes for the summary's gradient count as backward). None without
  // selection_ms.
  std::optional<double> selection_share() const;
};

// {"impl","precision","seq","fwd_ms","bwd_ms","decode_ms" (null when bidirectional),
//  "peak_mb","selection_ms" (only when set),"batch","heads","head_dim",
//  "threads","causal","peak_reset"}.
nlohmann::json attention_record_json(const AttentionBenchRecord& r);
// Inverse of attention_record_json. impl, seq, fwd_ms and bwd_ms are
// required; other fields default (precision to "fp32") (so records of other tools, e.g. PyTorch
// rows written by bench/bench_attention.py, can be read). Throws
// sparta::Error naming `where` and the field on a missing or mistyped field.
AttentionBenchRecord attention_record_from_json(const nlohmann::json& j, const std::string& where);

// Runs fn once untimed (warm-up), then timed until the timed runs add up to
// at least min_time_s, at least once and at most max_runs times (fewer once
// interrupt_requested(): Ctrl-C stops a long benchmark quickly); returns
// each timed run's seconds.
std::vector<double> time_runs(const std::function<void()>& fn, double min_time_s, int max_runs);
// Median (mean of the middle two for an even count); NaN for no values.
double median(std::vector<double> v);

// Estimated peak bytes of measure_attention for seq: 8 (B, T, H, D) float
// buffers (q, k, v, dq, dk, dv, out, dout) plus lse.
double attention_bench_bytes(int64_t seq, const AttentionBenchSpec& spec);

// Peak resident memory of a code region above a baseline. Construction
// releases free heap (malloc_trim) and records the current VmRSS as the
// baseline; each begin() resets the kernel's peak-RSS counter (writes "5" to
// /proc/self/clear_refs, which sets VmHWM to the current RSS) and each end()
// folds VmHWM − baseline into peak_mib(). Where clear_refs cannot be written
// reset_ok() is false and VmHWM is the process-lifetime peak.
class PeakMemoryMeter {
 public:
  PeakMemoryMeter();
  void begin();
  void end();
  double peak_mib() const { return peak_; }
  double baseline_mib() const { return baseline_; }
  bool reset_ok() const { return reset_ok_; }

 private:
  double baseline_ = 0, peak_ = 0;
  bool reset_ok_ = true;
};

// Measures one (impl, seq) problem with AttnDims{B, seq, H, D, ld = 3*H*D}
// (q, k, v interleaved in one (B, seq, 3, H, D) buffer as in the GPT):
//   fwd_ms       median forward time;
//   bwd_ms       median backward time, given forward's out and lse;
//   decode_ms    median over samples of (time of decode_steps decode calls
//                for ONE new token, len = seq: the cache holds seq positions
//                including the new one) / decode_steps; causal only;
//   selection_ms (dsa) median time of dsa_plan on the same q, k, v;
//   peak_mb      max over the timed regions (warm-ups included) of
//                VmHWM − VmRSS before the problem's buffers were allocated
//                (PeakMemoryMeter): buffers + workspace, in MiB.
// Each median comes from time_runs(min_time_s, max_runs). Throws
// sparta::Error for an unknown impl, seq < 1 or an invalid spec.
AttentionBenchRecord measure_attention(const std::string& impl, int64_t seq, const AttentionBenchSpec& spec,
                                       const DsaConfig& dsa);

// One record from the same problem measured in several rounds (same impl,
// seq and shape; throws sparta::Error otherwise or when empty): fwd_ms,
// bwd_ms, decode_ms and selection_ms are the medians over the rounds, peak_mb
// the largest, peak_reset true only if every round's was. On a noisy machine
// rounds spread over the whole run (`bench attention --rounds`) make ratios
// between implementations and lengths steadier than one longer timing.
AttentionBenchRecord median_record(const std::vector<AttentionBenchRecord>& rounds);

// "1024,4096" -> {1024, 4096}: sorted ascending, duplicates removed.
// sparta::Error "[bench] --seqs ..." on an empty list, a non-integer or a value < 1.
std::vector<int64_t> parse_seq_list(const std::string& text);
// "fp32,bf16" -> {"fp32", "bf16"} in the given order, duplicates removed.
// sparta::Error on an empty list or another name (the attention kernels
// compute in FP32 or with BF16 products; fp16 training runs them in FP32).
std::vector<std::string> parse_attention_precision_list(const std::string& text);
// "dense,dsa" -> {"dense", "dsa"} in the given order, duplicates removed.
// sparta::Error on an empty list or a name attention_registry() lacks
// (the message lists the available ones).
std::vector<std::string> parse_impl_list(const std::string& text);
// DsaConfig defaults with "model.dsa.KEY=VALUE" overrides applied through
// the config parser (run/config.h): unknown keys, bad values and settings
// outside model.dsa are sparta::Error.
DsaConfig dsa_config_from_overrides(const std::vector<std::string>& sets);

// 1024 -> "1K", 65536 -> "64K", 1000 -> "1000", 3145728 -> "3M".
std::string seq_label(int64_t seq);
// Human table, one row per record in order: impl (label()), seq,
// fwd/bwd/fwd+bwd ms, decode ms per token, selection share, peak MB and, for
// non-dense rows, the speed-up of fwd+bwd over the "dense" record with the
// same seq and precision (when there is one). Missing values print as "-".
std::string attention_bench_table(const std::vector<AttentionBenchRecord>& records);
// Line chart of fwd+bwd ms (log) against seq (log), one series per label()
// in order of first appearance, x ticks at the measured sequence lengths.
std::string attention_bench_svg(const std::vector<AttentionBenchRecord>& records, const std::string& title);

}  // namespace sparta
