// Run under mpirun by tests/mpi/test_mpi.py: checks every collective of the
// MPI process group against values each rank can compute on its own, and
// that a rank that stops taking part turns into an error, not a hang.
//
//   collectives_check collectives   every collective, exit 0 when all hold
//   collectives_check stalled       rank 1 skips a barrier; the others must
//                                   fail with the timeout error (exit 3)
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "dist/process_group.h"

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
