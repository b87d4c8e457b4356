#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "core/convert.h"
#include "core/gemm.h"
#include "core/matmul.h"
#include "core/parallel.h"
#include "core/plural.h"
#include "core/rng.h"

namespace sparta::cli {

namespace {

// A square-problem operand filled with normal values, in any matmul type
// (16-bit types as raw bits, rounded from the FP32 draw).
struct BenchOperand {
  std::vector<float> f32;
  std::vector<uint16_t> h16;
  BenchOperand(DType t, int64_t n, uint64_t seed) {
    Rng rng(seed);
    f32.resize(static_cast<size_t>(n));
    for (auto& x : f32) x = static_cast<float>(rng.normal());
    if (t == DType::BF16) h16.resize(f32.size()), f32_to_bf16(h16.data(), f32.data(), n);
    if (t == DType::F16) h16.resize(f32.size()), f32_to_f16(h16.data(), f32.data(), n);
  }
  void* data() { return h16.empty() ? static_cast<void*>(f32.data()) : h16.data(); }
};

// The --dtype choices: operand/output type and arithmetic. "f32" is sgemm,
// the same call (and so the same figure) as before --dtype existed; the
// others go through the typed matmul, with C in the operands' type.
struct BenchType {
  DType dtype;
  MatmulMath math;
};
const std::map<std::string, BenchType>& bench_types() {
  static const std::map<std::string, BenchType> types = {{"f32", {DType::F32, MatmulMath::Strict}},
                                                         {"bf16", {DType::BF16, MatmulMath::Strict}},
                                                         {"f16", {DType::F16, MatmulMath::Strict}},
                                                         {"f32-fast", {DType::F32, MatmulMath::Bf16}}};
  return types;
}

std::string bench_type_names() {
  std::string names;
  for (const auto& [name, type] : bench_types()) names += (names.empty() ? "" : ", ") + name;
  return names;
}

struct GemmRate {
  double gflops;
  std::string impl;
};

// Best-of-N GEMM rate for an (m x k)·(k x n) product: the reference peak
// that the training benchmark's achieved FLOP/s is compared with.
GemmRate gemm_gflops(const std::string& type, int64_t m, int64_t n, int64_t k, int reps) {
  const BenchType t = bench_types().at(type);
  BenchOperand a(t.dtype, m * k, 1), b(t.dtype, k * n, 2), c(t.dtype, m * n, 3);
  MatmulOptions options;
  options.math = t.math;
  const MatRef ra{a.data(), t.dtype, m, k, k, false}, rb{b.data(), t.dtype, k, n, n, false};
  const MatOut rc{c.data(), t.dtype, m, n, n};
  const bool use_sgemm = type == "f32";
  auto run = [&] {
    if (use_sgemm) sgemm(false, false, m, n, k, 1.0f, a.f32.data(), k, b.f32.data(), n, 0.0f, c.f32.data(), n);
    else matmul(ra, rb, rc, options);
  };
  run();  // warm-up: JIT code generation, primitive creation, first-touch pages
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    run();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return {2.0 * m * n * k / best / 1e9, use_sgemm ? std::string("sgemm") : matmul_implementation(ra, rb, rc, options)};
}
}  // namespace

void add_bench_command(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Micro-benchmarks (training throughput: bench/bench_gpt.py)");
  bench->require_subcommand(1);
  struct Args {
    int threads = 0;
    int64_t size = 2048;
    int reps = 5;
    bool json = false;
    std::string dtype = "f32";
  };
  auto a = std::make_shared<Args>();
  CLI::App* gemm = bench->add_subcommand("gemm", "oneDNN GEMM rate (GFLOP/s) on a square problem");
  gemm->add_option("--threads", a->threads, "Threads; 0 = all cores this process may use")->capture_default_str();
  gemm->add_option("--size", a->size, "m = n = k")->capture_default_str();
  gemm->add_option("--reps", a->reps, "Timed repetitions (best is reported)")->capture_default_str();
  gemm->add_option("--dtype", a->dtype,
                   "f32 (sgemm), bf16 / f16 (16-bit operands and output, FP32 accumulation), "
                   "f32-fast (FP32 with BF16-rounded inputs)")
      ->capture_default_str();
  gemm->add_flag("--json", a->json, "One JSON object");
  gemm->callback([a] {
    SPARTA_CHECK(a->size >= 16 && a->size <= 16384, "[bench] --size must be in [16, 16384], got ", a->size);
    SPARTA_CHECK(a->reps >= 1, "[bench] --reps must be >= 1");
    SPARTA_CHECK(bench_types().count(a->dtype), "[bench] --dtype must be one of ", bench_type_names(), ", got '",
                 a->dtype, "'");
    init_compute_threads(a->threads);
    const GemmRate r = gemm_gflops(a->dtype, a->size, a->size, a->size, a->reps);
    if (a->json) {
      nlohmann::json j = {{"gflops", r.gflops}, {"dtype", a->dtype}, {"impl", r.impl}, {"m", a->size},
                          {"n", a->size}, {"k", a->size}, {"threads", compute_threads()}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      const std::string what = a->dtype == "f32" ? "sgemm" : cat("matmul ", a->dtype, " (", r.impl, ")");
      std::printf("oneDNN %s %lld^3: %.1f GFLOP/s on %s\n", what.c_str(), static_cast<long long>(a->size), r.gflops,
                  count_noun(compute_threads(), "thread").c_str());
    }
  });
  add_bench_attention_command(*bench);
}

}  // namespace sparta::cli
