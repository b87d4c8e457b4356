#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "core/gemm.h"
#include "core/memory.h"
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
