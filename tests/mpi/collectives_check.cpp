// Run under mpirun by tests/mpi/test_mpi.py: checks every collective of the
// MPI process group against values each rank can compute on its own, and
// that a rank that stops taking part turns into an error, not a hang.
//
//   collectives_check collectives   every collective, exit 0 when all hold
//   collectives_check exchange      gradient averaging: none, bf16, q4 with
//                                   error feedback
//   collectives_check buckets       the trainer's bucketed exchange on its
//                                   own thread, overlapped with "backward"
//   collectives_check stalled       rank 1 skips a barrier; the others must
//                                   fail with the timeout error (exit 3)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "dist/gradient_exchange.h"
#include "dist/process_group.h"
#include "run/config.h"
#include "train/data_parallel.h"

using sparta::dist::Elem;
using sparta::dist::ProcessGroup;

namespace {

int failures = 0;

void expect(bool ok, const std::string& what, int rank) {
  if (ok) return;
  std::fprintf(stderr, "rank %d: FAILED %s\n", rank, what.c_str());
  ++failures;
}

// A value rank r contributes at element i.
float value(int r, int64_t i) { return static_cast<float>(r + 1) * 0.5f + static_cast<float>(i % 97); }

void check_collectives(ProcessGroup& g) {
  const int R = g.size(), me = g.rank();
  expect(g.backend() == "mpi", "backend", me);
  // all_reduce of floats, doubles, int64 (odd length, larger than one message).
  const int64_t n = 100003;
  std::vector<float> f(n);
  for (int64_t i = 0; i < n; ++i) f[i] = value(me, i);
  g.all_reduce_sum(f.data(), n);
  bool ok = true;
  for (int64_t i = 0; i < n; ++i) {
    double want = 0;
    for (int r = 0; r < R; ++r) want += value(r, i);
    ok = ok && std::fabs(f[i] - want) <= 1e-4 * std::fabs(want);
  }
  expect(ok, "all_reduce f32", me);
  double d[2] = {1.0 / 3.0 * (me + 1), 1e300};
  g.all_reduce_sum(d, 1);
  expect(std::fabs(d[0] - R * (R + 1) / 6.0) < 1e-12 && d[1] == 1e300, "all_reduce f64 (and n respected)", me);
  int64_t c = int64_t{1} << (40 + me);
  g.all_reduce_sum(&c, 1);
  int64_t want_c = 0;
  for (int r = 0; r < R; ++r) want_c += int64_t{1} << (40 + r);
  expect(c == want_c, "all_reduce i64", me);
  // reduce_scatter: rank me gets the sum of every rank's block me.
  const int64_t m = 1001;
  std::vector<float> in(R * m), out(m, -1.0f);
  for (int64_t i = 0; i < R * m; ++i) in[i] = value(me, i);
  g.reduce_scatter_sum(out.data(), in.data(), m);
  ok = true;
  for (int64_t i = 0; i < m; ++i) {
    double want = 0;
    for (int r = 0; r < R; ++r) want += value(r, me * m + i);
    ok = ok && std::fabs(out[i] - want) <= 1e-4 * std::fabs(want);
  }
  expect(ok, "reduce_scatter", me);
  // all_gather of bytes: block r is rank r's.
  const int64_t b = 37;
  std::vector<unsigned char> mine(b), all(R * b);
  for (int64_t i = 0; i < b; ++i) mine[i] = static_cast<unsigned char>(me * 31 + i);
  g.all_gather(all.data(), mine.data(), b);
  ok = true;
  for (int r = 0; r < R; ++r)
    for (int64_t i = 0; i < b; ++i) ok = ok && all[r * b + i] == static_cast<unsigned char>(r * 31 + i);
  expect(ok, "all_gather", me);
  // all_to_all: block j of rank r goes to rank j, arriving as block r.
  std::vector<unsigned char> send(R * b), recv(R * b);
  for (int j = 0; j < R; ++j)
    for (int64_t i = 0; i < b; ++i) send[j * b + i] = static_cast<unsigned char>(me * 16 + j * 4 + i);
  g.all_to_all(recv.data(), send.data(), b);
  ok = true;
  for (int r = 0; r < R; ++r)
    for (int64_t i = 0; i < b; ++i) ok = ok && recv[r * b + i] == static_cast<unsigned char>(r * 16 + me * 4 + i);
  expect(ok, "all_to_all", me);
  // broadcast from the last rank.
  char text[32] = {};
  if (me == R - 1) std::snprintf(text, sizeof text, "from %d", R - 1);
  g.broadcast(text, sizeof text, R - 1);
  expect(std::string(text) == "from " + std::to_string(R - 1), "broadcast", me);
  g.barrier();
  // Bad arguments are errors, not MPI aborts.
  bool threw = false;
  try {
    g.broadcast(text, sizeof text, R);
  } catch (const sparta::Error&) {
    threw = true;
  }
  expect(threw, "broadcast from a rank outside the group", me);
}

// A deterministic gradient of rank r at step s.
std::vector<float> gradient(int r, int s, int64_t n) {
  std::vector<float> g(static_cast<size_t>(n));
  uint64_t x = 0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(r * 1000 + s + 1);
  for (int64_t i = 0; i < n; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    g[i] = (static_cast<float>(x % 20001) - 10000.0f) * 1e-7f + (i % 128 == 0 ? 0.05f : 0.0f) + 0.002f * r;
  }
  return g;
}

// Whether every rank holds the same floats, bit for bit.
bool identical_everywhere(ProcessGroup& g, const std::vector<float>& v) {
  std::vector<float> all(v.size() * static_cast<size_t>(g.size()));
  g.all_gather(all.data(), v.data(), static_cast<int64_t>(v.size() * sizeof(float)));
  for (int r = 1; r < g.size(); ++r)
    if (std::memcmp(all.data(), all.data() + r * v.size(), v.size() * sizeof(float)) != 0) return false;
  return true;
}

void check_exchange(ProcessGroup& g) {
  using sparta::dist::Compression;
  const int R = g.size(), me = g.rank();
  const int64_t n = 10007;  // not a multiple of ranks or blocks
  sparta::dist::GradientExchange ex(g, n, 128);  // 7.5x fewer bytes than FP32 (7.1x at 64)
  std::vector<double> mean(n, 0.0);
  for (int r = 0; r < R; ++r) {
    const auto gr = gradient(r, 0, n);
    for (int64_t i = 0; i < n; ++i) mean[i] += gr[i] / R;
  }
  int64_t bytes_none = 0;
  for (Compression mode : {Compression::None, Compression::BF16, Compression::Q4}) {
    const std::string name = sparta::dist::compression_name(mode);
    std::vector<float> v = gradient(me, 0, n);
    expect(ex.average(v.data(), mode), name + ": average returned false", me);
    // none: float rounding; bf16: 8 significant bits, twice; q4: half a
    // scale (max |block| / 14) per phase.
    const double tol = mode == Compression::None ? 1e-7 : mode == Compression::BF16 ? 2e-3 : 0.06 / 7.0;
    double worst = 0.0;
    for (int64_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(v[i] - mean[i]));
    expect(worst <= tol, name + ": off the mean by " + std::to_string(worst), me);
    expect(identical_everywhere(g, v), name + ": ranks disagree", me);
    if (mode == Compression::None) bytes_none = ex.last_bytes_sent();
    if (mode == Compression::Q4)
      expect(bytes_none >= 7 * ex.last_bytes_sent(),
             "q4 sends " + std::to_string(ex.last_bytes_sent()) + " bytes against " + std::to_string(bytes_none), me);
  }
  // Error feedback: over many steps the sum of the averaged gradients
  // tracks the true sum (bounded drift, not growing with the steps).
  sparta::dist::GradientExchange ef(g, n, 64);
  std::vector<double> true_sum(n, 0.0), got_sum(n, 0.0);
  for (int s = 0; s < 40; ++s) {
    std::vector<float> v = gradient(me, s, n);
    for (int r = 0; r < R; ++r) {
      const auto gr = gradient(r, s, n);
      for (int64_t i = 0; i < n; ++i) true_sum[i] += gr[i] / R;
    }
    expect(ef.average(v.data(), Compression::Q4), "q4 step", me);
    for (int64_t i = 0; i < n; ++i) got_sum[i] += v[i];
  }
  double drift = 0.0;
  for (int64_t i = 0; i < n; ++i) drift = std::max(drift, std::fabs(got_sum[i] - true_sum[i]));
  expect(drift <= 2 * 0.06 / 7.0, "q4 with error feedback drifts by " + std::to_string(drift), me);
  // Without error feedback the same 40 steps drift further: what each step
  // drops is lost for good.
  sparta::dist::GradientExchange no_ef(g, n, 64, /*error_feedback=*/false);
  std::vector<double> lossy_sum(n, 0.0);
  for (int s = 0; s < 40; ++s) {
    std::vector<float> v = gradient(me, s, n);
    expect(no_ef.average(v.data(), Compression::Q4), "q4 step without error feedback", me);
    for (int64_t i = 0; i < n; ++i) lossy_sum[i] += v[i];
  }
  double lossy_drift = 0.0;
  for (int64_t i = 0; i < n; ++i) lossy_drift = std::max(lossy_drift, std::fabs(lossy_sum[i] - true_sum[i]));
  expect(lossy_drift > 2 * drift, "q4 without error feedback drifts by " + std::to_string(lossy_drift) +
                                      ", not more than with it (" + std::to_string(drift) + ")", me);
  // sum(): R times the average, in every mode.
  for (Compression mode : {Compression::None, Compression::BF16, Compression::Q4}) {
    sparta::dist::GradientExchange sx(g, n, 128);
    std::vector<float> v = gradient(me, 0, n);
    expect(sx.sum(v.data(), mode), "sum returned false", me);
    const double tol = R * (mode == Compression::None ? 1e-7 : mode == Compression::BF16 ? 2e-3 : 0.06 / 7.0);
    double worst = 0.0;
    for (int64_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(v[i] - R * mean[i]));
    expect(worst <= tol, std::string("sum in ") + sparta::dist::compression_name(mode) + " is off by " +
                             std::to_string(worst), me);
    expect(identical_everywhere(g, v), "sum: ranks disagree", me);
  }
  // A NaN on one rank: every rank refuses the step, nothing changes.
  std::vector<float> v = gradient(me, 0, n);
  if (me == R - 1) v[5] = std::nanf("");
  const std::vector<float> before = v;
  const std::vector<float> residual = ef.send_residual();
  expect(!ef.average(v.data(), Compression::Q4), "q4 with a NaN on one rank went through", me);
  expect(std::memcmp(v.data(), before.data(), n * sizeof(float)) == 0 && ef.send_residual() == residual,
         "a refused q4 step changed the gradient or the residual", me);
}

// The trainer's exchange in buckets (train/data_parallel.h): buckets start
// while "backward" still computes (here: sleeps), on the exchange thread;
// the result is the sum in every mode, identical on every rank; a bucket
// that refuses a NaN skips the step on every rank and leaves every
// bucket's error-feedback residuals as they were.
void check_buckets(ProcessGroup& g) {
  using sparta::dist::Compression;
  const int R = g.size(), me = g.rank();
  const int64_t n = 10007;
  const std::vector<int64_t> cuts = {9000, 6000, 3000, 0};  // as backward would report them
  sparta::Config cfg;
  cfg.train.batch_size = 6;
  cfg.dist.compress = "q4";
  cfg.dist.q4_block = 64;
  cfg.dist.bucket_mb = 1000.0 * sizeof(float) / (1024.0 * 1024.0);  // a bucket per part
  const auto make = [&](double bucket_mb) {
    sparta::Config c = cfg;
    c.dist.bucket_mb = bucket_mb;
    return std::make_unique<sparta::DataParallel>(g, c, n, cuts);
  };
  auto dp = make(cfg.dist.bucket_mb);
  expect(dp->buckets().size() == 4, "4 buckets, got " + std::to_string(dp->buckets().size()), me);
  expect(dp->overlapped(), "the buckets are not exchanged on a thread of their own", me);
  const auto backward = [&](sparta::DataParallel& d, std::vector<float>& v, int64_t step) {
    d.begin_step(v.data(), step);
    for (int64_t cut : cuts) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));  // the layers below
      d.gradients_final_from(cut);
    }
    return d.finish_step();
  };
  std::vector<double> sum(n, 0.0);
  for (int r = 0; r < R; ++r) {
    const auto gr = gradient(r, 0, n);
    for (int64_t i = 0; i < n; ++i) sum[i] += gr[i];
  }
  // FP32 (step 0 inside compress_after = 1) and q4.
  for (Compression mode : {Compression::None, Compression::Q4}) {
    sparta::Config c = cfg;
    c.dist.compress_after = mode == Compression::None ? 1 : 0;
    sparta::DataParallel d(g, c, n, cuts);
    std::vector<float> v = gradient(me, 0, n);
    const std::string name = sparta::dist::compression_name(mode);
    expect(backward(d, v, 0), name + ": finish_step returned false", me);
    expect(std::string(d.last_mode()) == name, name + ": exchanged as " + d.last_mode(), me);
    double worst = 0.0;
    for (int64_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(v[i] - sum[i]));
    const double tol = mode == Compression::None ? 1e-6 : R * 0.06 / 7.0;
    expect(worst <= tol, name + ": bucketed sum off by " + std::to_string(worst), me);
    expect(identical_everywhere(g, v), name + ": ranks disagree", me);
    expect(d.last_bytes() > 0 && d.last_ms() > 0.0, name + ": no bytes or time recorded", me);
  }
  // A NaN in the last bucket on one rank, after three buckets went through:
  // refused everywhere, and the next step equals that of a twin that never
  // saw the refused step (their residuals are the same).
  auto twin = make(cfg.dist.bucket_mb);
  std::vector<float> a = gradient(me, 1, n), b = a;
  expect(backward(*dp, a, 0) && backward(*twin, b, 0), "a q4 step was refused", me);
  std::vector<float> bad = gradient(me, 2, n);
  if (me == R - 1) bad[5] = std::nanf("");
  expect(!backward(*dp, bad, 1), "a NaN in the last bucket went through", me);
  a = gradient(me, 3, n), b = a;
  expect(backward(*dp, a, 2) && backward(*twin, b, 2), "a q4 step was refused", me);
  expect(std::memcmp(a.data(), b.data(), n * sizeof(float)) == 0,
         "the refused step changed the residuals of the buckets before it", me);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "collectives";
  sparta::dist::GroupOptions options;
  if (mode == "stalled") options.timeout_s = 3.0;
  auto g = sparta::dist::make_process_group(options, /*want_mpi=*/true);
  if (mode == "collectives") {
    check_collectives(*g);
    if (failures == 0) std::printf("rank %d of %d: all collectives hold\n", g->rank(), g->size());
    return failures == 0 ? 0 : 1;
  }
  if (mode == "exchange") {
    check_exchange(*g);
    if (failures == 0) std::printf("rank %d of %d: every exchange holds\n", g->rank(), g->size());
    return failures == 0 ? 0 : 1;
  }
  if (mode == "buckets") {
    check_buckets(*g);
    if (failures == 0) std::printf("rank %d of %d: every bucketed exchange holds\n", g->rank(), g->size());
    return failures == 0 ? 0 : 1;
  }
  if (mode == "stalled") {
    if (g->rank() == 1) {
      // Stops taking part: the others' barrier can never complete. (Sleeps
      // past their timeout; the job is ended by their abort.)
      std::this_thread::sleep_for(std::chrono::seconds(30));
      return 0;
    }
    try {
      g->barrier();
    } catch (const sparta::Error& e) {
      std::fprintf(stderr, "%s\n", e.what());
      std::fflush(stderr);
      g->abort(3);
    }
    std::fprintf(stderr, "rank %d: the barrier completed without rank 1\n", g->rank());
    return 1;
  }
  std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
  return 2;
}
