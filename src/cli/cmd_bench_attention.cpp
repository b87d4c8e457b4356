// `sparta bench attention`: forward / backward / decode time and peak memory
// of the attention implementations over sequence lengths
// (docs/bench-attention.md; the measurement itself is benchmark/attention_bench.h).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "core/interrupt.h"
#include "core/memory.h"
#include "core/parallel.h"
#include "core/plural.h"
#include "io/atomic_file.h"
#include "ops/attention_registry.h"
#include "benchmark/attention_bench.h"

namespace sparta::cli {

namespace {

struct BenchAttentionArgs {
  std::string seqs = "1024,4096,16384,65536";
  std::string impls = "dense,dsa";
  std::string precision = "fp32";
  int64_t heads = 8, head_dim = 64, batch = 1;
  int threads = 0;
  double min_time = 1.0;
  int decode_steps = 16;
  int rounds = 1;
  std::vector<std::string> sets;
  std::string out;
  std::string plot_from;
  bool json = false;
  bool bidirectional = false;
};

std::string g4(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// Records of an earlier run (JSON lines), e.g. bench/bench_attention.py's
// merged sparta + PyTorch records.
std::vector<AttentionBenchRecord> read_records(const std::string& path) {
  std::ifstream f(path);
  SPARTA_CHECK(f.is_open(), "[bench] --plot-from: cannot open '", path, "'");
  std::vector<AttentionBenchRecord> recs;
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = cat(path, ":", n);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error&) {
      throw Error(cat("[bench] ", where, ": not a JSON record"));
    }
    recs.push_back(attention_record_from_json(j, where));
  }
  SPARTA_CHECK(!recs.empty(), "[bench] --plot-from: '", path, "' holds no records");
  return recs;
}

std::string chart_title(const std::vector<AttentionBenchRecord>& recs) {
  const AttentionBenchRecord& r = recs.front();
  if (r.heads <= 0) return "attention forward + backward";
  return cat("attention forward + backward (B=", r.batch, ", H=", r.heads, ", D=", r.head_dim,
             r.causal ? ", causal" : ", bidirectional", ", ", count_noun(r.threads, "thread"), ")");
}

// Rewritten after every measurement, so an interrupted long run keeps what
// it measured.
void write_outputs(const std::filesystem::path& dir, const std::vector<AttentionBenchRecord>& recs) {
  std::string jsonl;
  for (const auto& r : recs) jsonl += attention_record_json(r).dump() + "\n";
  write_file_atomic(dir / "attention.jsonl", jsonl);
  write_file_atomic(dir / "attention.svg", attention_bench_svg(recs, chart_title(recs)));
}

void emit(const std::vector<AttentionBenchRecord>& recs, bool json) {
  if (json) return;  // JSON records are printed as they are measured
  std::fputs(attention_bench_table(recs).c_str(), stdout);
}

void run(const BenchAttentionArgs& a) {
  const std::filesystem::path out_dir = a.out;
  if (!a.out.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(out_dir, ec);
    SPARTA_CHECK(!ec, "[bench] --out: cannot create folder '", a.out, "': ", ec.message());
  }
  if (!a.plot_from.empty()) {
    const auto recs = read_records(a.plot_from);
    if (a.json)
      for (const auto& r : recs) std::printf("%s\n", attention_record_json(r).dump().c_str());
    emit(recs, a.json);
    if (!a.out.empty()) write_outputs(out_dir, recs);
    return;
  }

  const std::vector<int64_t> seqs = parse_seq_list(a.seqs);
  // Every (impl, precision) pair is one measured problem, precisions outer.
  std::vector<std::pair<std::string, std::string>> problems;
  for (const std::string& p : parse_attention_precision_list(a.precision))
    for (const std::string& impl : parse_impl_list(a.impls)) problems.emplace_back(impl, p);
  SPARTA_CHECK(a.heads >= 1, "[bench] --heads must be >= 1, got ", a.heads);
  SPARTA_CHECK(a.head_dim >= 1, "[bench] --head-dim must be >= 1, got ", a.head_dim);
  SPARTA_CHECK(a.batch >= 1, "[bench] --batch must be >= 1, got ", a.batch);
  SPARTA_CHECK(a.threads >= 0, "[bench] --threads must be >= 0 (0 = all usable cores), got ", a.threads);
  SPARTA_CHECK(a.min_time >= 0 && a.min_time <= 3600, "[bench] --min-time must be in [0, 3600] seconds, got ",
               a.min_time);
  SPARTA_CHECK(a.decode_steps >= 1, "[bench] --decode-steps must be >= 1, got ", a.decode_steps);
  SPARTA_CHECK(a.rounds >= 1 && a.rounds <= 100, "[bench] --rounds must be in [1, 100], got ", a.rounds);
  const DsaConfig dsa = dsa_config_from_overrides(a.sets);

  AttentionBenchSpec spec;
  spec.batch = a.batch;
  spec.heads = a.heads;
  spec.head_dim = a.head_dim;
  spec.causal = !a.bidirectional;
  spec.min_time_s = a.min_time;
  spec.decode_steps = a.decode_steps;
  init_compute_threads(a.threads);
  install_interrupt_handlers();
  std::fprintf(stderr, "bench attention: B=%lld H=%lld D=%lld %s, %s, min-time %g s per timing\n",
               static_cast<long long>(a.batch), static_cast<long long>(a.heads), static_cast<long long>(a.head_dim),
               spec.causal ? "causal" : "bidirectional", count_noun(compute_threads(), "thread").c_str(), a.min_time);

  // One untimed pass of every implementation on a small problem, so one-time
  // costs (starting the thread pool, oneDNN's kernel generation) land in no
  // record's time or peak memory.
  {
    AttentionBenchSpec warm = spec;
    warm.min_time_s = 0;
    for (const auto& [impl, precision] : problems) {
      warm.precision = precision;
      (void)measure_attention(impl, std::min<int64_t>(seqs.front(), 256), warm, dsa);
    }
  }

  // Which sequence lengths fit in memory, decided once for every round.
  std::vector<int64_t> fitting;
  for (int64_t seq : seqs) {
    // Skip sizes that cannot fit instead of being killed by the OOM killer
    // halfway through a long run.
    const double need = attention_bench_bytes(seq, spec);
    const int64_t avail = mem_available_bytes();
    if (avail >= 0 && need > static_cast<double>(avail)) {
      std::fprintf(stderr, "warning: skipping seq=%lld: needs about %.0f MiB, only %.0f MiB available\n",
                   static_cast<long long>(seq), need / (1 << 20), static_cast<double>(avail) / (1 << 20));
      continue;
    }
    fitting.push_back(seq);
  }
  // rounds[i]: every round's record of problem i (seq-major, problems in order).
  std::vector<std::vector<AttentionBenchRecord>> rounds(fitting.size() * problems.size());
  std::vector<AttentionBenchRecord> recs;
  bool warned_reset = false;
  for (int round = 1; round <= a.rounds && !interrupt_requested(); ++round) {
    if (a.rounds > 1) std::fprintf(stderr, "round %d of %d\n", round, a.rounds);
    for (size_t si = 0; si < fitting.size() && !interrupt_requested(); ++si)
      for (size_t ii = 0; ii < problems.size() && !interrupt_requested(); ++ii) {
        AttentionBenchSpec problem_spec = spec;
        problem_spec.precision = problems[ii].second;
        const AttentionBenchRecord r = measure_attention(problems[ii].first, fitting[si], problem_spec, dsa);
        if (interrupt_requested()) break;  // cut short by Ctrl-C: fewer runs than asked, not recorded
        std::string line = cat(r.label(), " seq=", fitting[si], ": fwd ", g4(r.fwd_ms), " ms, bwd ", g4(r.bwd_ms), " ms");
        if (r.decode_ms) line += cat(", decode ", g4(*r.decode_ms), " ms/token");
        if (r.selection_ms)
          line += cat(", selection ", g4(*r.selection_ms), " ms (", g4(100 * *r.selection_share()), "% of fwd+bwd)");
        line += cat(", peak ", g4(r.peak_mb), " MB");
        std::fprintf(stderr, "%s\n", line.c_str());
        if (!r.peak_reset && !warned_reset) {
          std::fprintf(stderr, "warning: /proc/self/clear_refs is not writable: peak_mb is the process-lifetime "
                               "VmHWM minus the RSS before each problem (an upper bound)\n");
          warned_reset = true;
        }
        rounds[si * problems.size() + ii].push_back(r);
        if (a.json && a.rounds == 1) {
          std::printf("%s\n", attention_record_json(r).dump().c_str());
          std::fflush(stdout);
        }
        // The records so far: medians over the rounds each problem has had.
        recs.clear();
        for (const auto& x : rounds)
          if (!x.empty()) recs.push_back(median_record(x));
        if (!a.out.empty()) write_outputs(out_dir, recs);
      }
  }
  if (a.json && a.rounds > 1)
    for (const auto& r : recs) std::printf("%s\n", attention_record_json(r).dump().c_str());
  if (interrupt_requested()) {
    // Keep what was measured: the table (or JSON records) and the --out files.
    if (!recs.empty()) emit(recs, a.json);
    std::fflush(stdout);
    throw Interrupted(interrupt_signal(),
                      cat("[bench] ", interrupt_signal_name(), ": stopped after ", recs.size(), " measurements",
                          a.out.empty() ? "" : cat(" (kept in ", (out_dir / "attention.jsonl").string(), ")")));
  }
  SPARTA_CHECK(!recs.empty(), "[bench] nothing was measured: every sequence length was skipped");
  emit(recs, a.json);
  if (!a.out.empty())
    std::fprintf(stderr, "wrote %s and %s\n", (out_dir / "attention.jsonl").string().c_str(),
                 (out_dir / "attention.svg").string().c_str());
}

}  // namespace

void add_bench_attention_command(CLI::App& bench) {
  auto a = std::make_shared<BenchAttentionArgs>();
  CLI::App* c = bench.add_subcommand(
      "attention", "Attention forward/backward/decode time and peak memory per sequence length (docs/bench-attention.md)");
  c->add_option("--seqs", a->seqs, "Comma-separated sequence lengths")->capture_default_str();
  c->add_option("--impls", a->impls, "Comma-separated implementations:\n" + attention_descriptions_text())
      ->capture_default_str();
  c->add_option("--precision", a->precision,
                "Comma-separated: fp32, bf16 (products with BF16 operands, as bf16 training runs them)")
      ->capture_default_str();
  c->add_option("--heads", a->heads, "Attention heads H")->capture_default_str();
  c->add_option("--head-dim", a->head_dim, "Head dimension D")->capture_default_str();
  c->add_option("--batch", a->batch, "Sequences per batch B (decode always uses one)")->capture_default_str();
  c->add_option("--threads", a->threads, "Threads; 0 = all cores this process may use")->capture_default_str();
  c->add_option("--min-time", a->min_time, "Seconds to keep repeating each timing (median reported; 1..20 runs)")
      ->capture_default_str();
  c->add_option("--decode-steps", a->decode_steps, "Decode calls averaged per decode sample")->capture_default_str();
  c->add_option("--rounds", a->rounds,
                "Measure every (length, impl) this many times, in turn, and report the medians (steadier ratios "
                "on a noisy machine)")
      ->capture_default_str();
  c->add_option("--set", a->sets, "DSA setting model.dsa.KEY=VALUE (repeatable)");
  c->add_option("--out", a->out, "Folder for attention.jsonl and attention.svg");
  c->add_option("--plot-from", a->plot_from,
                "Read records from this JSONL file instead of measuring (table, --json, --out)");
  c->add_flag("--json", a->json, "One JSON record per line instead of the table");
  c->add_flag("--bidirectional", a->bidirectional, "Non-causal attention (no decode timing)");
  c->callback([a] {
    try {
      run(*a);
    } catch (const Interrupted& e) {
      std::fprintf(stderr, "%s\n", e.what());
      throw;
    }
  });
}

}  // namespace sparta::cli
