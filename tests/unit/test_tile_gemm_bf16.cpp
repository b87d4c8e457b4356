// BF16 tile products (ops/tile_gemm_bf16.h) against a double-precision
// triple loop over the BF16-rounded operands, for every packing form and
// every row/column remainder of the register blocking, odd k included.
#include "ops/tile_gemm_bf16.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/convert.h"
#include "core/rng.h"
#include "op_test_harness.h"

namespace sparta::ops {
namespace {

struct Case {
  int64_t m, n, k;
};

double bf(float x) { return bf16_bits_to_f32(f32_to_bf16_bits(x)); }

TEST(OpsTileGemmBf16, EveryPackingMatchesTripleLoopOfRoundedOperands) {
  const Case cases[] = {{1, 1, 1},   {3, 5, 7},    {4, 16, 64},  {5, 17, 3},    {16, 64, 64}, {7, 33, 20},
                        {9, 49, 64}, {13, 63, 31}, {16, 100, 8}, {64, 512, 64}, {2, 130, 0},  {6, 70, 129}};
  Rng rng(7);
  for (const Case& c : cases)
    for (float beta : {0.0f, 1.0f, -0.5f}) {
      const int64_t kp = bf16_pairs_len(c.k);
      // X is A (m × k), Xt is A stored transposed; Y is B (k × n), Yt is B stored transposed.
      const int64_t ldx = c.k + 3, ldxt = c.m + 2, ldy = c.n + 5, ldyt = c.k + 1, ldc = c.n + 1;
      const std::vector<float> X = test::random_normal(static_cast<size_t>(c.m * ldx + 1), rng, 1.0);
      const std::vector<float> Y = test::random_normal(static_cast<size_t>(std::max<int64_t>(c.k, 1) * ldy), rng, 1.0);
      std::vector<float> Xt(static_cast<size_t>(std::max<int64_t>(c.k, 1) * ldxt)), Yt(static_cast<size_t>(c.n * ldyt));
      for (int64_t i = 0; i < c.m; ++i)
        for (int64_t p = 0; p < c.k; ++p) Xt[p * ldxt + i] = X[i * ldx + p];
      for (int64_t p = 0; p < c.k; ++p)
        for (int64_t j = 0; j < c.n; ++j) Yt[j * ldyt + p] = Y[p * ldy + j];

      // Packed buffers start as NaN bits, so a slot the packers forget to
      // write (the zero pad of an odd k) poisons the result.
      const int64_t lda = kp + 2, ldb = 2 * c.n + 6;
      std::vector<uint16_t> A(static_cast<size_t>(c.m * lda + 1), 0x7fc0), At = A;
      std::vector<uint16_t> B(static_cast<size_t>(std::max<int64_t>(kp / 2, 1) * ldb), 0x7fc0), Bt = B;
      pack_bf16_rows(A.data(), lda, X.data(), ldx, c.m, c.k);
      pack_bf16_rows_t(At.data(), lda, Xt.data(), ldxt, c.m, c.k);
      pack_bf16_pairs(B.data(), ldb, Y.data(), ldy, c.k, c.n);
      pack_bf16_pairs_t(Bt.data(), ldb, Yt.data(), ldyt, c.k, c.n);
      ASSERT_EQ(A, At) << "rows and rows_t pack the same matrix";
      ASSERT_EQ(B, Bt) << "pairs and pairs_t pack the same matrix";

      std::vector<float> C0 = test::random_normal(static_cast<size_t>(c.m * ldc), rng, 1.0);
      if (beta == 0.0f)  // C is not read when beta == 0: garbage must not leak in
        for (float& x : C0) x = std::numeric_limits<float>::quiet_NaN();
      std::vector<float> C = C0;
      tile_gemm_bf16(c.m, c.n, c.k, 0.75f, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
      for (int64_t i = 0; i < c.m; ++i)
        for (int64_t j = 0; j < c.n; ++j) {
          double s = 0.0, mag = 0.0;
          for (int64_t p = 0; p < c.k; ++p) {
            const double t = bf(X[i * ldx + p]) * bf(Y[p * ldy + j]);
            s += t;
            mag += std::fabs(t);
          }
          const double c0 = beta != 0.0f ? double(C0[i * ldc + j]) : 0.0;
          const double want = 0.75 * s + beta * c0;
          // FP32 accumulation of k exact products: a few ulps of the sum of magnitudes.
          ASSERT_NEAR(C[i * ldc + j], want, 4e-7 * (0.75 * mag + std::fabs(c0)) * std::sqrt(double(c.k) + 1) + 1e-30)
              << "m=" << c.m << " n=" << c.n << " k=" << c.k << " beta=" << beta << " at (" << i << ", " << j << ")";
        }
    }
}

TEST(OpsTileGemmBf16, ProductsAreOfRoundedOperandsNotOfFp32) {
  // 1 + 2^-10 is not a BF16 value (8 bits of mantissa): it rounds to 1, so
  // the product is exactly 1·1·k, where FP32 operands would give more.
  const int64_t k = 4;
  const std::vector<float> X(k, 1.0f + 0x1p-10f), Y(k, 1.0f);
  std::vector<uint16_t> A(k), B(k);
  pack_bf16_rows(A.data(), k, X.data(), k, 1, k);
  pack_bf16_pairs(B.data(), 2, Y.data(), 1, k, 1);
  float C = 0.0f;
  tile_gemm_bf16(1, 1, k, 1.0f, A.data(), k, B.data(), 2, 0.0f, &C, 1);
  EXPECT_EQ(C, 4.0f);
}

}  // namespace
}  // namespace sparta::ops
