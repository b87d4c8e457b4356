#include <gtest/gtest.h>

#include <sched.h>
#include <signal.h>

#include <cstdlib>

#include <string>
#include <vector>

#include "core/crash_report.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/memory.h"
#include "core/parallel.h"
#include "core/plural.h"
#include "core/rng.h"
#include "core/tensor.h"

using namespace sparta;

TEST(Core, GemmMatchesScalar) {
  const int M = 7, N = 5, K = 9;
  Rng rng(1);
  std::vector<float> A(M * K), B(N * K), C(M * N, 1.0f), R(M * N);
  for (auto& x : A) x = rng.normal();
  for (auto& x : B) x = rng.normal();
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += A[i * K + k] * B[j * K + k];
      R[i * N + j] = 2.0 * s + 0.5;
    }
  sgemm(false, true, M, N, K, 2.0f, A.data(), K, B.data(), K, 0.5f, C.data(), N);
  for (int i = 0; i < M * N; ++i) EXPECT_NEAR(C[i], R[i], 1e-4);
}

TEST(Core, TensorTracksMemoryAndReshapes) {
  size_t before = memory_stats().current_bytes;
  {
    Tensor t = Tensor::zeros({4, 8});
    EXPECT_EQ(t.numel(), 32);
    EXPECT_GE(memory_stats().current_bytes, before + 128);
    EXPECT_THROW(t.reshape({5, 7}), Error);
    EXPECT_EQ(t.reshape({32}).dim(0), 32);
  }
  EXPECT_EQ(memory_stats().current_bytes, before);
}

TEST(Core, ShapeNumelNeverOverflows) {
  const int64_t big = int64_t{1} << 40;
  // A zero dimension empties the tensor whatever the others are: a
  // safetensors file may declare (2^40, 2^40, 0) with no bytes.
  EXPECT_EQ(shape_numel({big, big, 0}), 0);
  EXPECT_EQ(Tensor::empty({big, big, 0}).numel(), 0);
  EXPECT_EQ(shape_numel({}), 1);
  EXPECT_EQ(shape_numel({big, 1 << 22}), int64_t{1} << 62);
  EXPECT_THROW(shape_numel({big, big}), Error);  // 2^80 wraps to 0 without the check
  EXPECT_THROW(shape_numel({3, big, 1 << 22}), Error);
  EXPECT_THROW(Tensor::empty({int64_t{1} << 62}, DType::F32), Error);  // 2^64 bytes
}

TEST(Core, ArenaRefusesOverflow) {
  Arena a(256);
  a.alloc(100);
  a.alloc(100);
  EXPECT_THROW(a.alloc(100), Error);
  a.reset();
  EXPECT_NO_THROW(a.alloc(200));
  EXPECT_EQ(a.high_water(), 256u);
}

TEST(Core, RngStateRoundTrips) {
  Rng a(42);
  a.next_u64();
  Rng b;
  b.set_state(a.state());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.next_u64(), b.next_u64());
}

TEST(Core, CountNounAgreesWithTheCount) {
  EXPECT_EQ(sparta::count_noun(1, "thread"), "1 thread");
  EXPECT_EQ(sparta::count_noun(2, "thread"), "2 threads");
  EXPECT_EQ(sparta::count_noun(0, "run"), "0 runs");
  EXPECT_EQ(sparta::count_noun(1, "binary file"), "1 binary file");
  EXPECT_EQ(sparta::count_noun(3, "box", "boxes"), "3 boxes");
}

TEST(Core, UsableCoresFollowTheAffinityMask) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  EXPECT_EQ(sparta::usable_cores(), CPU_COUNT(&set));
  // Restricted to one CPU (like `taskset -c 0`), one core is usable.
  int first = 0;
  while (!CPU_ISSET(first, &set)) ++first;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
  const int restricted = sparta::usable_cores();
  ASSERT_EQ(sched_setaffinity(0, sizeof set, &set), 0);
  EXPECT_EQ(restricted, 1);
}

TEST(Core, MachineLoadWarningOnlyWhenTheCoresAreOverbooked) {
  EXPECT_EQ(sparta::machine_load_warning(1.5, 2, 2), "");   // room left
  EXPECT_EQ(sparta::machine_load_warning(5.0, 2, 1), "");   // one thread: nothing fewer to suggest
  EXPECT_EQ(sparta::machine_load_warning(-1.0, 2, 2), "");  // load unknown
  EXPECT_EQ(sparta::machine_load_warning(3.1, 2, 2),
            "the machine is busy (1-minute load average 3.10 on 2 usable cores): training with 2 threads will be "
            "slower than usual, since threads wait for each other; consider fewer threads, e.g. --set "
            "train.threads=1");
  EXPECT_NE(sparta::machine_load_warning(9.0, 1, 4).find("on 1 usable core)"), std::string::npos);
}

// A crash names its signal and prints a backtrace, then still dies of that
// signal (exit status and core dumps unchanged).
TEST(CrashReport, FatalSignalsAreReportedWithABacktraceThenKillTheProcess) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "under ASan the sanitizer's own handler reports crashes";
#endif
  testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_EXIT(
      {
        install_crash_handlers("crashtest");
        std::abort();
      },
      testing::KilledBySignal(SIGABRT), "crashtest: fatal error: SIGABRT \\(aborted\\).*backtrace:\n.*0x");
  EXPECT_EXIT(
      {
        install_crash_handlers("crashtest");
        raise(SIGSEGV);
      },
      testing::KilledBySignal(SIGSEGV), "crashtest: fatal error: SIGSEGV \\(invalid memory access\\)");
}
