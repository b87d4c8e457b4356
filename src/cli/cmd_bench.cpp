#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/parallel.h"
#include "core/plural.h"
#include "core/tensor.h"
#include "core/rng.h"

namespace sparta::cli {

namespace {
// Best-of-N FP32 GEMM rate for an (m x k)·(k x n) product: the reference
// peak that the training benchmark's achieved FLOP/s is compared with.
double gemm_gflops(int64_t m, int64_t n, int64_t k, int reps) {
  Tensor a = Tensor::empty({m, k}), b = Tensor::empty({k, n}), c = Tensor::zeros({m, n});
  Rng rng(1);
  for (int64_t i = 0; i < a.numel(); ++i) a.data<float>()[i] = static_cast<float>(rng.normal());
  for (int64_t i = 0; i < b.numel(); ++i) b.data<float>()[i] = static_cast<float>(rng.normal());
  sgemm(false, false, m, n, k, 1.0f, a.data<float>(), k, b.data<float>(), n, 0.0f, c.data<float>(), n);
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    sgemm(false, false, m, n, k, 1.0f, a.data<float>(), k, b.data<float>(), n, 0.0f, c.data<float>(), n);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 2.0 * m * n * k / best / 1e9;
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
  };
  auto a = std::make_shared<Args>();
  CLI::App* gemm = bench->add_subcommand("gemm", "oneDNN FP32 GEMM rate (GFLOP/s) on a square problem");
  gemm->add_option("--threads", a->threads, "Threads; 0 = all cores this process may use")->capture_default_str();
  gemm->add_option("--size", a->size, "m = n = k")->capture_default_str();
  gemm->add_option("--reps", a->reps, "Timed repetitions (best is reported)")->capture_default_str();
  gemm->add_flag("--json", a->json, "One JSON object");
  gemm->callback([a] {
    SPARTA_CHECK(a->size >= 16 && a->size <= 16384, "[bench] --size must be in [16, 16384], got ", a->size);
    SPARTA_CHECK(a->reps >= 1, "[bench] --reps must be >= 1");
    init_compute_threads(a->threads);
    double g = gemm_gflops(a->size, a->size, a->size, a->reps);
    if (a->json) {
      nlohmann::json j = {{"gflops", g}, {"m", a->size}, {"n", a->size}, {"k", a->size}, {"threads", compute_threads()}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("oneDNN sgemm %lld^3: %.1f GFLOP/s on %s\n", static_cast<long long>(a->size), g,
                  count_noun(compute_threads(), "thread").c_str());
    }
  });
  add_bench_attention_command(*bench);
}

}  // namespace sparta::cli
