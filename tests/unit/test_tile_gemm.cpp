// Hand-written tile products (ops/tile_gemm.h) against a double-precision
// triple loop, over every row/column remainder the register blocking has.
#include "ops/tile_gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/rng.h"
#include "op_test_harness.h"

namespace sparta::ops {
namespace {

struct Case {
  int64_t m, n, k;
};

// want[i][j] = alpha * Σ_p a(i, p) b(p, j) + beta * c0[i][j] in double.
template <class AElem>
std::vector<double> reference(const Case& c, float alpha, AElem a, const std::vector<float>& B, int64_t ldb,
                              float beta, const std::vector<float>& C0, int64_t ldc) {
  std::vector<double> want(static_cast<size_t>(c.m * ldc));
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = 0; j < c.n; ++j) {
      double s = 0.0;
      for (int64_t p = 0; p < c.k; ++p) s += double(a(i, p)) * B[p * ldb + j];
      want[i * ldc + j] = alpha * s + (beta != 0.0f ? beta * double(C0[i * ldc + j]) : 0.0);
    }
  return want;
}

void expect_matches(const std::vector<float>& got, const std::vector<double>& want, const Case& c, int64_t ldc,
                    const char* what) {
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = 0; j < c.n; ++j) {
      const double w = want[i * ldc + j];
      ASSERT_NEAR(got[i * ldc + j], w, 1e-5 * (1.0 + std::fabs(w)) * std::sqrt(double(c.k)))
          << what << " m=" << c.m << " n=" << c.n << " k=" << c.k << " at (" << i << ", " << j << ")";
    }
}

TEST(OpsTileGemm, NnAndTnMatchTripleLoop) {
  const Case cases[] = {{1, 1, 1},   {3, 5, 7},    {4, 16, 64},  {5, 17, 3},   {16, 64, 64}, {7, 33, 20},
                        {9, 49, 64}, {13, 63, 31}, {16, 100, 8}, {64, 512, 64}, {2, 130, 0}};
  Rng rng(5);
  for (const Case& c : cases)
    for (float beta : {0.0f, 1.0f, -0.5f}) {
      const int64_t lda = c.k + 3, ldat = c.m + 2, ldb = c.n + 5, ldc = c.n + 1;
      const std::vector<float> A = test::random_normal(static_cast<size_t>(c.m * lda + 1), rng, 1.0);
      const std::vector<float> At = test::random_normal(static_cast<size_t>(c.k * ldat + 1), rng, 1.0);
      const std::vector<float> B = test::random_normal(static_cast<size_t>(std::max<int64_t>(c.k, 1) * ldb), rng, 1.0);
      std::vector<float> C0 = test::random_normal(static_cast<size_t>(c.m * ldc), rng, 1.0);
      if (beta == 0.0f)  // C is not read when beta == 0: garbage must not leak in
        for (float& x : C0) x = std::numeric_limits<float>::quiet_NaN();
      std::vector<float> C = C0;
      tile_gemm_nn(c.m, c.n, c.k, 0.75f, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
      expect_matches(C, reference(c, 0.75f, [&](int64_t i, int64_t p) { return A[i * lda + p]; }, B, ldb, beta, C0, ldc),
                     c, ldc, "nn");
      C = C0;
      tile_gemm_tn(c.m, c.n, c.k, 0.75f, At.data(), ldat, B.data(), ldb, beta, C.data(), ldc);
      expect_matches(C,
                     reference(c, 0.75f, [&](int64_t i, int64_t p) { return At[p * ldat + i]; }, B, ldb, beta, C0, ldc),
                     c, ldc, "tn");
    }
}

TEST(OpsTileGemm, TransposeInto) {
  Rng rng(6);
  for (int64_t rows : {1, 15, 16, 40})
    for (int64_t cols : {1, 17, 64}) {
      const std::vector<float> X = test::random_normal(static_cast<size_t>(rows * (cols + 2)), rng, 1.0);
      std::vector<float> out(static_cast<size_t>(cols * (rows + 3)), 0.0f);
      transpose_into(out.data(), rows + 3, X.data(), cols + 2, rows, cols);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(out[c * (rows + 3) + r], X[r * (cols + 2) + c]);
    }
}

}  // namespace
}  // namespace sparta::ops
