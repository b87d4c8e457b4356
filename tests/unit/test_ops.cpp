// CPU kernels of the GPT (src/ops, src/train/lr_schedule) against naive
// double-precision references and finite differences (op_test_harness.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/convert.h"
#include "core/error.h"
#include "core/rng.h"
#include "op_test_harness.h"
#include "ops/adamw.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/gelu.h"
#include "ops/grad_clip.h"
#include "ops/layernorm.h"
#include "ops/linear.h"
#include "ops/rope.h"
#include "ops/softmax_xent.h"
#include "train/lr_schedule.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // simd:: vectors are only used inline

using namespace sparta;
using namespace sparta::ops;
using namespace sparta::test;

namespace {

// Expects fn() to throw sparta::Error whose message contains `text`.
template <class F>
void expect_error(F&& fn, const std::string& text) {
  try {
    fn();
    ADD_FAILURE() << "expected sparta::Error containing: " << text;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << "message was: " << e.what();
  }
}

// ---------------------------------------------------------------- layernorm

struct LayerNormRef {
  std::vector<double> y, mean, rstd;
};

LayerNormRef layernorm_ref(const std::vector<float>& x, const std::vector<float>& w,
                           const std::vector<float>& b, int64_t N, int64_t C, double eps) {
  LayerNormRef r{std::vector<double>(N * C), std::vector<double>(N), std::vector<double>(N)};
  for (int64_t n = 0; n < N; ++n) {
    double mean = 0, var = 0;
    for (int64_t c = 0; c < C; ++c) mean += x[n * C + c];
    mean /= C;
    for (int64_t c = 0; c < C; ++c) var += (x[n * C + c] - mean) * (x[n * C + c] - mean);
    var /= C;
    const double rstd = 1.0 / std::sqrt(var + eps);
    for (int64_t c = 0; c < C; ++c) r.y[n * C + c] = (x[n * C + c] - mean) * rstd * w[c] + b[c];
    r.mean[n] = mean;
    r.rstd[n] = rstd;
  }
  return r;
}

TEST(OpsLayerNorm, ForwardMatchesReference) {
  // Tolerance: float row sums over C <= 37 elements, relative error ~1e-6.
  Rng rng(1);
  for (auto [N, C] : {std::pair<int64_t, int64_t>{5, 37}, {1, 16}, {4, 3}, {2, 1}}) {
    auto x = random_normal(N * C, rng, 2.0, 3.0);
    auto w = random_normal(C, rng, 0.5, 1.0), b = random_normal(C, rng, 0.5);
    std::vector<float> y(N * C), mean(N), rstd(N);
    layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
    const auto ref = layernorm_ref(x, w, b, N, C, 1e-5);
    const std::string shape = cat("(", N, ", ", C, ")");
    expect_close("layernorm y " + shape, y, ref.y, 1e-5, 1e-5);
    expect_close("layernorm mean " + shape, mean, ref.mean, 1e-5, 1e-6);
    expect_close("layernorm rstd " + shape, rstd, ref.rstd, 1e-5, 0.0);
  }
}

TEST(OpsLayerNorm, ForwardInPlaceEqualsOutOfPlace) {
  Rng rng(2);
  const int64_t N = 3, C = 45;
  auto x = random_normal(N * C, rng), w = random_normal(C, rng), b = random_normal(C, rng);
  std::vector<float> y(N * C), mean(N), rstd(N);
  layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
  layernorm_forward(x.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
  expect_bitwise_equal("layernorm in place", x, y);
}

TEST(OpsLayerNorm, GradientsMatchFiniteDifferences) {
  Rng rng(3);
  const int64_t N = 3, C = 21;
  auto x = random_normal(N * C, rng), w = random_normal(C, rng, 0.5, 1.0), b = random_normal(C, rng);
  const auto R = random_normal(N * C, rng);
  std::vector<float> y(N * C), mean(N), rstd(N);
  auto objective = [&] {
    layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
    return dot(y, R);
  };
  objective();
  std::vector<float> dx(N * C, 7.0f), dw(C, 0.0f), db(C, 0.0f);  // dx is overwritten
  layernorm_backward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(), mean.data(), rstd.data(),
                     N, C, /*accumulate_dx=*/false);
  expect_grad_matches_fd("layernorm dx", x, dx, objective);
  expect_grad_matches_fd("layernorm dw", w, dw, objective);
  expect_grad_matches_fd("layernorm db", b, db, objective);
}

TEST(OpsLayerNorm, BackwardAccumulates) {
  Rng rng(4);
  const int64_t N = 4, C = 19;
  auto x = random_normal(N * C, rng), w = random_normal(C, rng), b = random_normal(C, rng);
  const auto dy = random_normal(N * C, rng);
  std::vector<float> y(N * C), mean(N), rstd(N);
  layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
  std::vector<float> dx(N * C, 0.0f), dw(C, 0.0f), db(C, 0.0f);
  layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(), rstd.data(),
                     N, C, /*accumulate_dx=*/true);
  const auto dx0 = random_normal(N * C, rng), dw0 = random_normal(C, rng), db0 = random_normal(C, rng);
  auto dx1 = dx0, dw1 = dw0, db1 = db0;
  layernorm_backward(dx1.data(), dw1.data(), db1.data(), dy.data(), x.data(), w.data(), mean.data(),
                     rstd.data(), N, C, /*accumulate_dx=*/true);
  expect_accumulated("layernorm dx +=", dx0, dx1, dx);
  expect_accumulated("layernorm dw +=", dw0, dw1, dw);
  expect_accumulated("layernorm db +=", db0, db1, db);
  // Without the flag dx is overwritten with the same values; dw, db still add.
  auto dx2 = dx0, dw2 = dw0, db2 = db0;
  layernorm_backward(dx2.data(), dw2.data(), db2.data(), dy.data(), x.data(), w.data(), mean.data(),
                     rstd.data(), N, C, /*accumulate_dx=*/false);
  expect_bitwise_equal("layernorm dx overwritten", dx2, dx);
  expect_accumulated("layernorm dw += (dx overwritten)", dw0, dw2, dw);
}

TEST(OpsLayerNorm, ResultsIndependentOfThreadCount) {
  Rng rng(5);
  const int64_t N = 300, C = 203;  // above the parallel threshold; C not a multiple of 16
  auto x = random_normal(N * C, rng), w = random_normal(C, rng), b = random_normal(C, rng);
  const auto dy = random_normal(N * C, rng);
  std::vector<float> y[2], dx[2], dw[2], db[2];
  for (int k = 0; k < 2; ++k) {
    with_threads(k + 1, [&] {
      std::vector<float> mean(N), rstd(N);
      y[k].assign(N * C, 0.0f);
      dx[k].assign(N * C, 0.0f);
      dw[k].assign(C, 0.0f);
      db[k].assign(C, 0.0f);
      layernorm_forward(y[k].data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
      layernorm_backward(dx[k].data(), dw[k].data(), db[k].data(), dy.data(), x.data(), w.data(), mean.data(),
                         rstd.data(), N, C, /*accumulate_dx=*/false);
    });
  }
  expect_bitwise_equal("layernorm y 1 vs 2 threads", y[0], y[1]);
  expect_bitwise_equal("layernorm dx 1 vs 2 threads", dx[0], dx[1]);
  expect_bitwise_equal("layernorm dw 1 vs 2 threads", dw[0], dw[1]);
  expect_bitwise_equal("layernorm db 1 vs 2 threads", db[0], db[1]);
}

// The kept-x̂ forms: what a training forward keeps instead of the input and
// output, the recomputed output, and the backward from x̂.
TEST(OpsLayerNorm, KeepingNormalizedRowsChangesNoOutput) {
  Rng rng(6);
  const int64_t N = 300, C = 203;  // above the parallel threshold; C not a multiple of 16
  auto x = random_normal(N * C, rng, 1.0, 2.0), w = random_normal(C, rng, 0.5, 1.0), b = random_normal(C, rng);
  std::vector<float> y(N * C), mean(N), rstd(N);
  layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
  std::vector<double> xhat_ref(N * C);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) xhat_ref[n * C + c] = (double{x[n * C + c]} - mean[n]) * rstd[n];
  for (DType yt : {DType::F32, DType::BF16, DType::F16}) {
    for (DType xt : {DType::F32, DType::BF16}) {
      const std::string what = cat("y ", dtype_name(yt), ", x-hat ", dtype_name(xt));
      std::vector<uint16_t> y16(N * C), xhat16(N * C);
      std::vector<float> y32(N * C), xhat32(N * C), mean2(N), rstd2(N);
      void* yp = yt == DType::F32 ? static_cast<void*>(y32.data()) : y16.data();
      void* xp = xt == DType::F32 ? static_cast<void*>(xhat32.data()) : xhat16.data();
      layernorm_forward(yp, yt, mean2.data(), rstd2.data(), Normalized{xp, xt}, x.data(), w.data(), b.data(), N, C,
                        1e-5f);
      // y is what the form without x-hat gives (16-bit: that result rounded).
      if (yt == DType::F32) {
        expect_bitwise_equal("layernorm y kept x-hat, " + what, y32, y);
      } else {
        std::vector<uint16_t> rounded(N * C);
        round_to_16bit(yt, rounded.data(), y.data(), N * C);
        EXPECT_EQ(y16, rounded) << what;
      }
      expect_bitwise_equal("layernorm mean, " + what, mean2, mean);
      expect_bitwise_equal("layernorm rstd, " + what, rstd2, rstd);
      if (xt == DType::BF16) widen_16bit(xt, xhat32.data(), xhat16.data(), N * C);
      expect_close("layernorm x-hat, " + what, xhat32, xhat_ref, xt == DType::F32 ? 1e-5 : 4e-3, 1e-6);
      // The recomputed output: bit for bit from an FP32 x-hat, the rounded
      // x-hat's output from a 16-bit one.
      std::vector<float> again(N * C);
      layernorm_affine(again.data(), DType::F32, Normalized{xp, xt}, w.data(), b.data(), N, C);
      if (xt == DType::F32)
        expect_bitwise_equal("layernorm_affine of kept x-hat, " + what, again, y);
      else
        expect_close("layernorm_affine of 16-bit x-hat, " + what, again, std::vector<double>(y.begin(), y.end()),
                     1e-2, 1e-2);
    }
  }
}

TEST(OpsLayerNorm, BackwardFromNormalizedRowsEqualsBackwardFromInput) {
  Rng rng(7);
  const int64_t N = 300, C = 203;
  auto x = random_normal(N * C, rng, 1.0, 2.0), w = random_normal(C, rng, 0.5, 1.0), b = random_normal(C, rng);
  const auto dy = random_normal(N * C, rng);
  std::vector<float> y(N * C), mean(N), rstd(N), xhat(N * C);
  layernorm_forward(y.data(), DType::F32, mean.data(), rstd.data(), Normalized{xhat.data(), DType::F32}, x.data(),
                    w.data(), b.data(), N, C, 1e-5f);
  std::vector<float> dx(N * C), dw(C, 0.0f), db(C, 0.0f);
  layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(), rstd.data(), N,
                     C, false);
  const auto dx0 = random_normal(N * C, rng), dw0 = random_normal(C, rng), db0 = random_normal(C, rng);
  for (DType xt : {DType::F32, DType::BF16}) {
    std::vector<uint16_t> xhat16(N * C);
    round_to_16bit(DType::BF16, xhat16.data(), xhat.data(), N * C);
    const Normalized kept{xt == DType::F32 ? static_cast<void*>(xhat.data()) : xhat16.data(), xt};
    // dx overwritten, dw and db added to.
    std::vector<float> dx2(N * C, 7.0f), dw2 = dw0, db2 = db0;
    layernorm_backward(dx2.data(), dw2.data(), db2.data(), dy.data(), kept, w.data(), rstd.data(), N, C, false);
    const double tol = xt == DType::F32 ? 1e-4 : 2e-2;  // 16-bit x-hat: relative error 2^-9 per element
    expect_close(cat("layernorm dx from x-hat ", dtype_name(xt)), dx2, std::vector<double>(dx.begin(), dx.end()),
                 tol, tol);
    std::vector<float> dw_added(C), db_added(C);
    for (int64_t c = 0; c < C; ++c) {
      dw_added[c] = dw2[c] - dw0[c];
      db_added[c] = db2[c] - db0[c];
    }
    expect_close(cat("layernorm dw from x-hat ", dtype_name(xt)), dw_added, std::vector<double>(dw.begin(), dw.end()),
                 tol, tol * 10);
    expect_close(cat("layernorm db from x-hat ", dtype_name(xt)), db_added, std::vector<double>(db.begin(), db.end()),
                 1e-4, 1e-4);
    // accumulate_dx adds to dx.
    auto dx3 = dx0;
    std::vector<float> dw3(C, 0.0f), db3(C, 0.0f);
    layernorm_backward(dx3.data(), dw3.data(), db3.data(), dy.data(), kept, w.data(), rstd.data(), N, C, true);
    expect_accumulated(cat("layernorm dx += from x-hat ", dtype_name(xt)), dx0, dx3, dx2);
  }
}

TEST(OpsLayerNorm, ResidualFormKeepsNormalizedRowsAndSumsInPlace) {
  Rng rng(8);
  const int64_t N = 64, C = 203;
  auto x = random_normal(N * C, rng), r = random_normal(N * C, rng);
  auto w = random_normal(C, rng, 0.5, 1.0), b = random_normal(C, rng);
  std::vector<float> sum(N * C), y(N * C), mean(N), rstd(N), xhat_plain(N * C);
  layernorm_forward(y.data(), DType::F32, mean.data(), rstd.data(), Normalized{xhat_plain.data(), DType::F32},
                    [&] {
                      for (int64_t i = 0; i < N * C; ++i) sum[i] = x[i] + r[i];
                      return sum.data();
                    }(),
                    w.data(), b.data(), N, C, 1e-5f);
  // In place (sum aliases x), keeping x-hat.
  auto stream = x;
  std::vector<float> y2(N * C), mean2(N), rstd2(N), xhat(N * C);
  residual_layernorm_forward(stream.data(), y2.data(), DType::F32, mean2.data(), rstd2.data(), stream.data(),
                             r.data(), w.data(), b.data(), N, C, 1e-5f, Normalized{xhat.data(), DType::F32});
  expect_bitwise_equal("residual add in place", stream, sum);
  expect_bitwise_equal("residual layernorm y keeping x-hat", y2, y);
  expect_bitwise_equal("residual layernorm x-hat", xhat, xhat_plain);
  expect_bitwise_equal("residual layernorm rstd", rstd2, rstd);
}

// --------------------------------------------------------------------- gelu

double gelu_ref(double x) {
  const double k = std::sqrt(2.0 / std::numbers::pi);
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

double gelu_grad_ref(double x) {
  const double k = std::sqrt(2.0 / std::numbers::pi);
  const double t = std::tanh(k * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
}

std::vector<float> gelu_inputs(Rng& rng) {
  std::vector<float> x;
  for (int i = 0; i <= 4000; ++i) x.push_back(static_cast<float>(-12.0 + 24.0 * i / 4000));
  for (float v : random_normal(1003, rng, 3.0)) x.push_back(v);
  for (float v : {0.0f, -0.0f, 1e-20f, -1e-20f, 30.0f, -30.0f, 1e4f, -1e4f}) x.push_back(v);
  return x;
}

TEST(OpsGelu, ForwardMatchesReference) {
  // Relative 1e-6 (a few float ulps). For x << 0, gelu(x) = x / (1 + e^z)
  // with z = -2u ~ 2|x|^3/20: the float rounding of z alone gives a relative
  // error ~|z| * 6e-8, above 1e-6 once z > 15, i.e. where |gelu(x)| < 2e-6;
  // there the absolute 1e-10 applies (PyTorch's float 1 + tanh(u) loses far
  // more in that range).
  Rng rng(6);
  const auto x = gelu_inputs(rng);
  std::vector<float> y(x.size());
  gelu_forward(y.data(), x.data(), static_cast<int64_t>(x.size()));
  std::vector<double> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) want[i] = gelu_ref(x[i]);
  expect_close("gelu forward", y, want, 1e-6, 1e-10);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_TRUE(std::isfinite(y[i])) << "x = " << x[i];
}

TEST(OpsGelu, BackwardMatchesAnalyticDerivative) {
  // gelu' has a zero near x = -0.75, hence an absolute term.
  Rng rng(7);
  const auto x = gelu_inputs(rng);
  const auto dy = random_normal(x.size(), rng);
  std::vector<float> dx(x.size(), 123.0f);  // overwritten, not accumulated
  gelu_backward(dx.data(), dy.data(), x.data(), static_cast<int64_t>(x.size()));
  std::vector<double> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) want[i] = dy[i] * gelu_grad_ref(x[i]);
  expect_close("gelu backward", dx, want, 1e-5, 1e-6);
}

TEST(OpsGelu, GradientMatchesFiniteDifferences) {
  Rng rng(8);
  auto x = random_normal(37, rng, 2.0);
  const auto R = random_normal(37, rng);
  std::vector<float> y(x.size());
  auto objective = [&] {
    gelu_forward(y.data(), x.data(), static_cast<int64_t>(x.size()));
    return dot(y, R);
  };
  std::vector<float> dx(x.size());
  gelu_backward(dx.data(), R.data(), x.data(), static_cast<int64_t>(x.size()));
  expect_grad_matches_fd("gelu dx", x, dx, objective);
}

TEST(OpsGelu, InPlaceAliasing) {
  Rng rng(9);
  const int64_t n = 16 * 1024 * 3 + 5;  // several parallel chunks and a tail
  const auto x = random_normal(n, rng, 2.0), dy = random_normal(n, rng);
  std::vector<float> y(n), dx(n);
  gelu_forward(y.data(), x.data(), n);
  gelu_backward(dx.data(), dy.data(), x.data(), n);
  auto y_in = x, dx_in = dy;
  gelu_forward(y_in.data(), y_in.data(), n);
  gelu_backward(dx_in.data(), dx_in.data(), x.data(), n);
  expect_bitwise_equal("gelu forward y == x", y_in, y);
  expect_bitwise_equal("gelu backward dx == dy", dx_in, dx);
}

// ------------------------------------------------------------------- linear

std::vector<double> linear_ref(const std::vector<float>& x, const std::vector<float>& w, const float* b,
                               int64_t N, int64_t in, int64_t out) {
  std::vector<double> y(N * out);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < out; ++o) {
      double s = b ? b[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) s += static_cast<double>(x[n * in + i]) * w[o * in + i];
      y[n * out + o] = s;
    }
  return y;
}

TEST(OpsLinear, ForwardMatchesReference) {
  // Float GEMM over in <= 37 terms of size ~1: absolute 1e-5.
  Rng rng(10);
  for (auto [N, in, out] : {std::tuple<int64_t, int64_t, int64_t>{5, 37, 11}, {1, 16, 3}, {7, 3, 1}}) {
    const auto x = random_normal(N * in, rng), w = random_normal(out * in, rng), b = random_normal(out, rng);
    std::vector<float> y(N * out, 99.0f);
    linear_forward(y.data(), x.data(), w.data(), b.data(), N, in, out);
    expect_close("linear with bias", y, linear_ref(x, w, b.data(), N, in, out), 1e-5, 1e-5);
    std::vector<float> y2(N * out, 99.0f);  // garbage must be overwritten
    linear_forward(y2.data(), x.data(), w.data(), nullptr, N, in, out);
    expect_close("linear without bias", y2, linear_ref(x, w, nullptr, N, in, out), 1e-5, 1e-5);
  }
}

TEST(OpsLinear, GradientsMatchFiniteDifferences) {
  Rng rng(11);
  const int64_t N = 4, in = 19, out = 7;
  auto x = random_normal(N * in, rng), w = random_normal(out * in, rng), b = random_normal(out, rng);
  const auto R = random_normal(N * out, rng);
  std::vector<float> y(N * out);
  auto objective = [&] {
    linear_forward(y.data(), x.data(), w.data(), b.data(), N, in, out);
    return dot(y, R);
  };
  std::vector<float> dx(N * in, 0.0f), dw(out * in, 0.0f), db(out, 0.0f);
  linear_backward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(), N, in, out);
  expect_grad_matches_fd("linear dx", x, dx, objective);
  expect_grad_matches_fd("linear dw", w, dw, objective);
  expect_grad_matches_fd("linear db", b, db, objective);
}

TEST(OpsLinear, BackwardAccumulationSemantics) {
  Rng rng(12);
  const int64_t N = 6, in = 13, out = 5;
  const auto x = random_normal(N * in, rng), w = random_normal(out * in, rng),
             dy = random_normal(N * out, rng);
  std::vector<float> dx(N * in, 0.0f), dw(out * in, 0.0f), db(out, 0.0f);
  linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), N, in, out);

  const auto dx0 = random_normal(N * in, rng), dw0 = random_normal(out * in, rng),
             db0 = random_normal(out, rng);
  // accumulate_dx = false: dx overwritten; dw, db accumulate.
  auto dx1 = dx0, dw1 = dw0, db1 = db0;
  linear_backward(dx1.data(), dw1.data(), db1.data(), dy.data(), x.data(), w.data(), N, in, out);
  expect_close("linear dx overwritten", dx1, std::vector<double>(dx.begin(), dx.end()), 1e-6, 1e-6);
  expect_accumulated("linear dw +=", dw0, dw1, dw);
  expect_accumulated("linear db +=", db0, db1, db);
  // accumulate_dx = true: dx accumulates too.
  auto dx2 = dx0;
  linear_backward(dx2.data(), dw1.data(), nullptr, dy.data(), x.data(), w.data(), N, in, out, true);
  expect_accumulated("linear dx += (accumulate_dx)", dx0, dx2, dx);
  // dx == nullptr: only the parameter gradients.
  std::vector<float> dw3(out * in, 0.0f), db3(out, 0.0f);
  linear_backward(nullptr, dw3.data(), db3.data(), dy.data(), x.data(), w.data(), N, in, out);
  expect_close("linear dw without dx", dw3, std::vector<double>(dw.begin(), dw.end()), 1e-6, 1e-6);
  expect_bitwise_equal("linear db without dx", db3, db);
}

TEST(OpsLinear, BiasGradientIndependentOfThreadCount) {
  Rng rng(13);
  const int64_t N = 600, in = 8, out = 70;
  const auto x = random_normal(N * in, rng), w = random_normal(out * in, rng),
             dy = random_normal(N * out, rng);
  std::vector<float> db[2];
  for (int k = 0; k < 2; ++k)
    with_threads(k + 1, [&] {
      std::vector<float> dw(out * in, 0.0f);
      db[k].assign(out, 0.0f);
      linear_backward(nullptr, dw.data(), db[k].data(), dy.data(), x.data(), w.data(), N, in, out);
    });
  expect_bitwise_equal("linear db 1 vs 2 threads", db[0], db[1]);
  std::vector<double> want(out, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < out; ++o) want[o] += dy[n * out + o];
  expect_close("linear db vs column sums", db[0], want, 1e-5, 1e-4);
}

// ---------------------------------------------------------------- embedding

TEST(OpsEmbedding, ForwardGathersRows) {
  Rng rng(14);
  const int64_t V = 3, C = 19, N = 7;
  const auto wte = random_normal(V * C, rng);
  const std::vector<int32_t> tokens = {2, 0, 2, 1, 1, 2, 0};
  std::vector<float> x(N * C, 7.0f);
  embedding_forward(x.data(), tokens.data(), wte.data(), N, V, C);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      ASSERT_EQ(x[n * C + c], wte[tokens[n] * C + c]) << "n=" << n << " c=" << c;
}

TEST(OpsEmbedding, BackwardMatchesReferenceAndFiniteDifferences) {
  Rng rng(15);
  const int64_t V = 5, C = 21, N = 11;
  auto wte = random_normal(V * C, rng);
  const std::vector<int32_t> tokens = {4, 0, 4, 4, 1, 3, 0, 4, 1, 1, 3};  // repeats; token 2 unused
  const auto R = random_normal(N * C, rng);
  std::vector<float> x(N * C);
  auto objective = [&] {
    embedding_forward(x.data(), tokens.data(), wte.data(), N, V, C);
    return dot(x, R);
  };
  std::vector<float> dwte(V * C, 0.0f);
  embedding_backward(dwte.data(), R.data(), tokens.data(), N, V, C);
  std::vector<double> want(V * C, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) want[tokens[n] * C + c] += R[n * C + c];
  expect_close("embedding dwte vs reference", dwte, want, 1e-6, 1e-6);
  expect_grad_matches_fd("embedding dwte", wte, dwte, objective);
  // Accumulation.
  const auto d0 = random_normal(V * C, rng);
  auto d1 = d0;
  embedding_backward(d1.data(), R.data(), tokens.data(), N, V, C);
  expect_accumulated("embedding dwte +=", d0, d1, dwte);
}

TEST(OpsEmbedding, BackwardIndependentOfThreadCount) {
  Rng rng(16);
  const int64_t V = 50, C = 40, N = 2048;  // two column ranges: [0, 32) and [32, 40)
  std::vector<int32_t> tokens(N);
  for (auto& t : tokens) t = static_cast<int32_t>(rng.below(V));
  const auto dx = random_normal(N * C, rng);
  std::vector<float> d[2];
  for (int k = 0; k < 2; ++k)
    with_threads(k + 1, [&] {
      d[k].assign(V * C, 0.0f);
      embedding_backward(d[k].data(), dx.data(), tokens.data(), N, V, C);
    });
  expect_bitwise_equal("embedding dwte 1 vs 2 threads", d[0], d[1]);
}

TEST(OpsEmbedding, RejectsTokensOutsideVocabulary) {
  const int64_t V = 4096, C = 8, N = 20;
  std::vector<float> wte(V * C, 1.0f), x(N * C), dwte(V * C, 0.0f);
  std::vector<int32_t> tokens(N, 3);
  tokens[17] = 5000;
  expect_error([&] { embedding_forward(x.data(), tokens.data(), wte.data(), N, V, C); },
               "[embedding] token id 5000 at position 17 is outside the vocabulary (size 4096)");
  tokens[17] = 3;
  tokens[0] = -1;
  expect_error([&] { embedding_backward(dwte.data(), x.data(), tokens.data(), N, V, C); },
               "[embedding backward] token id -1 at position 0 is outside the vocabulary (size 4096)");
  for (float v : dwte) ASSERT_EQ(v, 0.0f) << "dwte modified before validation";
}

// --------------------------------------------------------------------- rope

// Naive rotate-half RoPE in double on a (B*T, ld) buffer; sign -1 = inverse.
// R = rotated dims of each head (the first R; the rest are copied).
std::vector<double> rope_ref(const std::vector<float>& x, int64_t B, int64_t T, int64_t H, int64_t D,
                             int64_t ld, int64_t pos0, double base, double sign, int64_t R = 0) {
  if (R == 0) R = D;
  std::vector<double> out(x.begin(), x.end());
  for (int64_t bt = 0; bt < B * T; ++bt)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < R / 2; ++i) {
        const double angle = sign * static_cast<double>(pos0 + bt % T) * std::pow(base, -2.0 * i / R);
        const int64_t a = bt * ld + h * D + i, b = a + R / 2;
        out[a] = x[a] * std::cos(angle) - x[b] * std::sin(angle);
        out[b] = x[b] * std::cos(angle) + x[a] * std::sin(angle);
      }
  return out;
}

TEST(OpsRope, ForwardMatchesReference) {
  // cos/sin tables are float roundings of double values: absolute 1e-6 on O(1) data.
  Rng rng(17);
  const int64_t B = 2, T = 5, H = 3, D = 10, ld = H * D + 3;  // 3 padding floats per token
  for (int64_t pos0 : {0, 7, 5000}) {
    auto x = random_normal(B * T * ld, rng);
    const auto ref = rope_ref(x, B, T, H, D, ld, pos0, 10000.0, 1.0);
    const auto orig = x;
    rope_forward(x.data(), B, T, H, D, ld, pos0, 10000.0f);
    expect_close(cat("rope forward pos0=", pos0), x, ref, 1e-6, 1e-6);
    for (int64_t bt = 0; bt < B * T; ++bt)
      for (int64_t j = H * D; j < ld; ++j) ASSERT_EQ(x[bt * ld + j], orig[bt * ld + j]) << "padding modified";
  }
}

TEST(OpsRope, PartialRotationMatchesReferenceAndLeavesTheRestAlone) {
  Rng rng(20);
  const int64_t B = 2, T = 6, H = 3, D = 12, ld = H * D + 1;
  for (int64_t R : {2, 4, 8, 12}) {
    auto x = random_normal(B * T * ld, rng);
    const auto orig = x;
    rope_forward(x.data(), B, T, H, D, ld, 9, 700.0f, R);
    expect_close(cat("partial rope forward R=", R), x, rope_ref(orig, B, T, H, D, ld, 9, 700.0, 1.0, R), 1e-6, 1e-6);
    for (int64_t bt = 0; bt < B * T; ++bt)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t j = R; j < D; ++j) ASSERT_EQ(x[bt * ld + h * D + j], orig[bt * ld + h * D + j]) << "R=" << R;
    auto y = x;
    rope_backward(y.data(), B, T, H, D, ld, 9, 700.0f, R);
    expect_close(cat("partial rope backward(forward) R=", R), y, std::vector<double>(orig.begin(), orig.end()),
                 1e-6, 1e-6);
  }
  // R = D is the full rotation, bit for bit.
  auto full = random_normal(T * H * D, rng);
  auto same = full;
  rope_forward(full.data(), 1, T, H, D, H * D, 0, 700.0f);
  rope_forward(same.data(), 1, T, H, D, H * D, 0, 700.0f, D);
  expect_bitwise_equal("rope R=D vs default", same, full);
  // Content in the unrotated dims scores the same at every distance.
  std::vector<float> qk(2 * D, 0.0f);
  for (int64_t j = 4; j < D; ++j) qk[j] = qk[D + j] = 0.5f;
  double first = 0.0;
  for (int64_t dist : {1, 100, 5000}) {
    auto q = std::vector<float>(qk.begin(), qk.begin() + D), k = std::vector<float>(qk.begin() + D, qk.end());
    rope_forward(q.data(), 1, 1, 1, D, D, dist, 700.0f, 4);
    rope_forward(k.data(), 1, 1, 1, D, D, 0, 700.0f, 4);
    const double s = dot(q, k);
    if (dist == 1) first = s;
    EXPECT_EQ(s, first) << "distance " << dist;
  }
}

TEST(OpsRope, BackwardIsTransposeAndMatchesFiniteDifferences) {
  Rng rng(18);
  const int64_t B = 1, T = 4, H = 2, D = 6, ld = H * D, pos0 = 3;
  auto x = random_normal(B * T * ld, rng);
  const auto R = random_normal(B * T * ld, rng);
  std::vector<float> y;
  auto objective = [&] {
    y = x;
    rope_forward(y.data(), B, T, H, D, ld, pos0, 500.0f);
    return dot(y, R);
  };
  auto dx = R;
  rope_backward(dx.data(), B, T, H, D, ld, pos0, 500.0f);
  expect_close("rope backward vs inverse rotation", dx, rope_ref(R, B, T, H, D, ld, pos0, 500.0, -1.0), 1e-6,
               1e-6);
  expect_grad_matches_fd("rope dx", x, dx, objective);
  // Rotation is orthogonal: backward(forward(x)) == x.
  auto z = x;
  rope_forward(z.data(), B, T, H, D, ld, pos0, 500.0f);
  rope_backward(z.data(), B, T, H, D, ld, pos0, 500.0f);
  expect_close("rope backward(forward(x))", z, std::vector<double>(x.begin(), x.end()), 1e-6, 1e-6);
}

TEST(OpsRope, DecodingStepsMatchWholeSequence) {
  // One token at a time (pos0 = t, T = 1), as a KV-cache decoder calls it,
  // must give bit-identical results to the whole sequence, whichever table
  // size the cache holds at the time.
  Rng rng(19);
  const int64_t T = 300, H = 2, D = 64, ld = H * D;
  const auto x = random_normal(T * ld, rng);
  auto whole = x;
  rope_forward(whole.data(), 1, T, H, D, ld, 0, 12345.0f);
  auto steps = x;
  for (int64_t t = T - 1; t >= 0; --t) rope_forward(steps.data() + t * ld, 1, 1, H, D, ld, t, 12345.0f);
  expect_bitwise_equal("rope per-token vs whole sequence", steps, whole);
}

TEST(OpsRope, RejectsBadShapes) {
  std::vector<float> x(64);
  expect_error([&] { rope_forward(x.data(), 1, 2, 1, 7, 7, 0, 10000.0f); },
               "[rope] head dim D=7 must be even");
  expect_error([&] { rope_backward(x.data(), 1, 2, 2, 8, 8, 0, 10000.0f); },
               "[rope backward] row stride ld=8 is smaller than H*D=16");
  expect_error([&] { rope_forward(x.data(), 1, 2, 1, 8, 8, 0, 10000.0f, 3); },
               "[rope] rotary dims 3 must be even and in [2, D=8]");
  expect_error([&] { rope_forward(x.data(), 1, 2, 1, 8, 8, 0, 10000.0f, 10); },
               "[rope] rotary dims 10 must be even and in [2, D=8]");
}

// ------------------------------------------------------------- softmax_xent

struct XentRef {
  double loss = 0;
  int64_t count = 0;
  std::vector<double> dlogits, row_loss;
};

XentRef xent_ref(const std::vector<float>& logits, const std::vector<int32_t>& targets, int64_t N, int64_t V,
                 double scale) {
  XentRef r;
  r.dlogits.assign(N * V, 0.0);
  r.row_loss.assign(N, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    double m = -std::numeric_limits<double>::infinity(), s = 0;
    for (int64_t v = 0; v < V; ++v) m = std::max(m, static_cast<double>(logits[n * V + v]));
    for (int64_t v = 0; v < V; ++v) s += std::exp(logits[n * V + v] - m);
    r.row_loss[n] = std::log(s) + m - logits[n * V + targets[n]];
    r.loss += r.row_loss[n];
    ++r.count;
    for (int64_t v = 0; v < V; ++v)
      r.dlogits[n * V + v] = (std::exp(logits[n * V + v] - m) / s - (v == targets[n] ? 1.0 : 0.0)) * scale;
  }
  return r;
}

TEST(OpsSoftmaxXent, MatchesReferenceWithIgnoredRows) {
  // Loss: exp sums in double, relative 1e-6. Gradient: absolute 1e-6 * scale.
  Rng rng(20);
  for (auto [N, V] : {std::pair<int64_t, int64_t>{6, 3}, {7, 1000}, {1, 17}}) {
    const auto logits = random_normal(N * V, rng, 3.0);
    std::vector<int32_t> targets(N);
    for (auto& t : targets) t = static_cast<int32_t>(rng.below(V));
    if (N > 2) targets[1] = targets[N - 1] = -1;
    const float scale = 1.0f / 5.0f;
    const auto ref = xent_ref(logits, targets, N, V, scale);
    std::vector<float> d(N * V, 42.0f);
    int64_t count = -1;
    const double loss =
        softmax_xent_forward_backward(d.data(), logits.data(), targets.data(), N, V, scale, &count);
    const std::string shape = cat("(", N, ", ", V, ")");
    EXPECT_EQ(count, ref.count) << shape;
    EXPECT_NEAR(loss, ref.loss, 1e-6 * std::fabs(ref.loss)) << shape;
    expect_close("xent dlogits " + shape, d, ref.dlogits, 0.0, 1e-6 * scale);

    std::vector<float> rows(N, 42.0f);
    int64_t count2 = -1;
    const double loss2 = softmax_xent_forward(rows.data(), logits.data(), targets.data(), N, V, &count2);
    EXPECT_EQ(count2, ref.count);
    EXPECT_DOUBLE_EQ(loss2, loss) << "forward-only and fused losses differ " << shape;
    expect_close("xent row losses " + shape, rows, ref.row_loss, 1e-6, 1e-6);
  }
}

TEST(OpsSoftmaxXent, GradientMatchesFiniteDifferences) {
  Rng rng(21);
  const int64_t N = 3, V = 21;
  auto logits = random_normal(N * V, rng, 2.0);
  const std::vector<int32_t> targets = {4, 20, 0};
  const float scale = 0.5f;
  auto objective = [&] {
    return scale * softmax_xent_forward(nullptr, logits.data(), targets.data(), N, V, nullptr);
  };
  std::vector<float> d(N * V);
  softmax_xent_forward_backward(d.data(), logits.data(), targets.data(), N, V, scale, nullptr);
  expect_grad_matches_fd("softmax_xent dlogits", logits, d, objective);
}

TEST(OpsSoftmaxXent, HugeLogitsStayFiniteAndRowsSumToZero) {
  const int64_t N = 3, V = 5;
  const std::vector<float> logits = {1e4f,  -1e4f, 0.0f, 1e4f,  -1e4f,  // target -1e4: loss 2e4 + log 2
                                     -1e4f, -1e4f, 1e4f, -1e4f, -1e4f,  // target the max: loss 0
                                     1.0f,  2.0f,  3.0f, 4.0f,  5.0f};
  const std::vector<int32_t> targets = {1, 2, 0};
  std::vector<float> d(N * V), rows(N);
  const double loss =
      softmax_xent_forward_backward(d.data(), logits.data(), targets.data(), N, V, 1.0f, nullptr);
  softmax_xent_forward(rows.data(), logits.data(), targets.data(), N, V, nullptr);
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_NEAR(rows[0], 2e4 + std::log(2.0), 1e-2);
  EXPECT_EQ(rows[1], 0.0f);
  EXPECT_TRUE(all_finite(d.data(), N * V));
  const auto ref = xent_ref(logits, targets, N, V, 1.0);
  expect_close("xent huge-logit gradient", d, ref.dlogits, 0.0, 1e-6);
  for (int64_t n = 0; n < N; ++n) {
    double s = 0;
    for (int64_t v = 0; v < V; ++v) s += d[n * V + v];
    EXPECT_NEAR(s, 0.0, 1e-6) << "row " << n;
  }
}

TEST(OpsSoftmaxXent, InPlaceAndThreadCountGiveIdenticalResults) {
  Rng rng(22);
  const int64_t N = 64, V = 1003;  // above the parallel threshold; V % 16 != 0
  const auto logits = random_normal(N * V, rng, 2.0);
  std::vector<int32_t> targets(N);
  for (auto& t : targets) t = static_cast<int32_t>(rng.below(V));
  targets[5] = -1;
  std::vector<float> d[2];
  double loss[2];
  for (int k = 0; k < 2; ++k)
    with_threads(k + 1, [&] {
      d[k].assign(N * V, 0.0f);
      loss[k] =
          softmax_xent_forward_backward(d[k].data(), logits.data(), targets.data(), N, V, 1.0f / N, nullptr);
    });
  EXPECT_EQ(loss[0], loss[1]);
  expect_bitwise_equal("xent dlogits 1 vs 2 threads", d[0], d[1]);
  auto inplace = logits;
  const double loss_in =
      softmax_xent_forward_backward(inplace.data(), inplace.data(), targets.data(), N, V, 1.0f / N, nullptr);
  EXPECT_EQ(loss_in, loss[0]);
  expect_bitwise_equal("xent dlogits in place", inplace, d[0]);
}

TEST(OpsSoftmaxXent, RejectsBadTargets) {
  std::vector<float> logits(3 * 1000), d(3 * 1000);
  std::vector<int32_t> targets = {0, 5, 1000};
  expect_error(
      [&] { softmax_xent_forward_backward(d.data(), logits.data(), targets.data(), 3, 1000, 1.0f, nullptr); },
      "[softmax_xent] target 1000 at row 2 is outside [0, 1000) and not -1 (ignore)");
  targets[2] = -2;
  expect_error([&] { softmax_xent_forward(nullptr, logits.data(), targets.data(), 3, 1000, nullptr); },
               "[softmax_xent] target -2 at row 2");
}

TEST(OpsSoftmaxXent, SoftmaxRowWithTemperature) {
  Rng rng(23);
  const int64_t V = 37;
  auto logits = random_normal(V, rng, 4.0);
  logits[3] = -std::numeric_limits<float>::infinity();  // masked token
  for (float temperature : {1.0f, 0.7f, 2.5f}) {
    std::vector<float> p(V);
    softmax_row(p.data(), logits.data(), V, temperature);
    double m = -1e300, s = 0;
    for (float l : logits) m = std::max(m, static_cast<double>(l));
    for (float l : logits) s += std::exp((l - m) / temperature);
    std::vector<double> want(V);
    for (int64_t v = 0; v < V; ++v) want[v] = std::exp((logits[v] - m) / temperature) / s;
    expect_close(cat("softmax_row T=", temperature), p, want, 1e-5, 1e-7);
    EXPECT_EQ(p[3], 0.0f);
  }
  std::vector<float> p(V);
  expect_error([&] { softmax_row(p.data(), logits.data(), V, 0.0f); },
               "[softmax] temperature must be positive, got 0");
}

// -------------------------------------------------------------------- adamw

TEST(OpsAdamW, MatchesDoubleFormulaOverSeveralSteps) {
  // Float vs double over 5 steps: relative 1e-5 on p, m, v, plus an absolute
  // 1e-6 of each quantity's scale (p ~ 1, m ~ g ~ 0.1, v ~ g^2 ~ 0.01) for
  // entries where the moment sums cancel to near 0.
  const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
  for (int64_t n : {int64_t{37}, int64_t{40000}}) {  // a tail; several parallel chunks
    Rng rng(24);
    auto p = random_normal(n, rng);
    std::vector<float> m(n, 0.0f), v(n, 0.0f);
    std::vector<double> pd(p.begin(), p.end()), md(n, 0.0), vd(n, 0.0);
    for (int64_t t = 1; t <= 5; ++t) {
      const auto g = random_normal(n, rng, 0.1);
      adamw_update(p.data(), g.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd, t);
      const double bc1 = 1.0 - std::pow(static_cast<double>(b1), t),
                   bc2 = 1.0 - std::pow(static_cast<double>(b2), t);
      for (int64_t i = 0; i < n; ++i) {
        pd[i] *= 1.0 - static_cast<double>(lr) * wd;
        md[i] = b1 * md[i] + (1.0 - b1) * g[i];
        vd[i] = b2 * vd[i] + (1.0 - b2) * static_cast<double>(g[i]) * g[i];
        pd[i] -= (lr / bc1) * md[i] / (std::sqrt(vd[i]) / std::sqrt(bc2) + eps);
      }
    }
    const std::string tag = cat(" n=", n);
    expect_close("adamw p" + tag, p, pd, 1e-5, 1e-6);
    expect_close("adamw m" + tag, m, md, 1e-5, 1e-7);
    expect_close("adamw v" + tag, v, vd, 1e-5, 1e-8);
  }
}

TEST(OpsAdamW, RejectsStepZero) {
  std::vector<float> p(4), g(4), m(4), v(4);
  expect_error(
      [&] { adamw_update(p.data(), g.data(), m.data(), v.data(), 4, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0); },
      "[adamw] step t=0 must be >= 1");
}

// ---------------------------------------------------------------- grad_clip

TEST(OpsGradClip, NormAndClippingFollowTorchSemantics) {
  Rng rng(25);
  const int64_t n = 100003;  // several chunks and a tail
  const auto g0 = random_normal(n, rng, 0.01);
  double ss = 0;
  for (float x : g0) ss += static_cast<double>(x) * x;
  const double want = std::sqrt(ss);
  EXPECT_NEAR(grad_norm(g0.data(), n), want, 1e-12 * want);
  EXPECT_EQ(grad_norm(g0.data(), 0), 0.0);

  // norm > max_norm: scaled by max_norm / (norm + 1e-6).
  auto g = g0;
  const double max_norm = want / 3.0;
  EXPECT_NEAR(clip_grad_norm(g.data(), n, max_norm), want, 1e-12 * want);
  const float coef = static_cast<float>(max_norm / (want + 1e-6));
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(g[i], g0[i] * coef) << i;
  EXPECT_NEAR(grad_norm(g.data(), n), max_norm, 1e-6 * max_norm);

  // norm < max_norm, and max_norm <= 0: untouched, pre-clip norm returned.
  for (double mn : {want * 2.0, 0.0, -1.0}) {
    g = g0;
    EXPECT_NEAR(clip_grad_norm(g.data(), n, mn), want, 1e-12 * want);
    expect_bitwise_equal(cat("clip with max_norm ", mn), g, g0);
  }
}

TEST(OpsGradClip, NormIndependentOfThreadCount) {
  Rng rng(26);
  const int64_t n = 200001;
  const auto g = random_normal(n, rng);
  double norm[2];
  for (int k = 0; k < 2; ++k) with_threads(k + 1, [&] { norm[k] = grad_norm(g.data(), n); });
  EXPECT_EQ(norm[0], norm[1]);
}

// -------------------------------------------------------------- elementwise

TEST(OpsElementwise, AddScaleAndFiniteCheck) {
  Rng rng(27);
  const int64_t n = 50001;
  const auto x = random_normal(n, rng), y0 = random_normal(n, rng);
  auto y = y0;
  add_inplace(y.data(), x.data(), n);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], y0[i] + x[i]) << i;
  scale_inplace(y.data(), 0.25f, n);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], (y0[i] + x[i]) * 0.25f) << i;
  auto z = x;
  add_inplace(z.data(), z.data(), n);  // y and x the same buffer
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(z[i], 2.0f * x[i]) << i;

  EXPECT_TRUE(all_finite(x.data(), n));
  EXPECT_TRUE(all_finite(x.data(), 0));
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t pos : {int64_t{0}, int64_t{16384}, int64_t{n - 1}})
    for (float bad : {nan, inf, -inf}) {
      z = x;
      z[pos] = bad;
      EXPECT_FALSE(all_finite(z.data(), n)) << bad << " at " << pos;
    }
  z = x;
  z[7] = std::numeric_limits<float>::max();
  z[8] = std::numeric_limits<float>::denorm_min();
  EXPECT_TRUE(all_finite(z.data(), n));
}

TEST(OpsElementwise, VectorExpAccuracy) {
  // The exp under GELU and softmax (defined for x <= 88): <= 2e-7 relative
  // (~3 ulp) on the normal range, exactly 0 below it, NaN propagates.
  std::vector<float> x;
  for (int i = 0; i <= 200000; ++i) x.push_back(static_cast<float>(-87.3 + 175.3 * i / 200000));
  double worst = 0;
  for (size_t i = 0; i < x.size(); i += simd::kLanes) {
    const int64_t n = std::min<int64_t>(simd::kLanes, static_cast<int64_t>(x.size() - i));
    const simd::f32v e = simd::exp(simd::load_partial(x.data() + i, n, 0.0f));
    for (int64_t k = 0; k < n; ++k) {
      const double want = std::exp(static_cast<double>(x[i + k]));
      worst = std::max(worst, std::fabs(e[k] - want) / want);
    }
  }
  EXPECT_LT(worst, 2e-7);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const float special[16] = {-88.0f, -100.0f, -1e30f, -inf, nan, 88.0f, 87.5f, 0.0f, 1.0f, -1.0f};
  const simd::f32v e = simd::exp(simd::load(special));
  EXPECT_EQ(e[0], 0.0f);
  EXPECT_EQ(e[1], 0.0f);
  EXPECT_EQ(e[2], 0.0f);
  EXPECT_EQ(e[3], 0.0f);
  EXPECT_TRUE(std::isnan(e[4]));
  EXPECT_NEAR(e[5], std::exp(88.0), 2e-7 * std::exp(88.0));
  EXPECT_NEAR(e[6], std::exp(87.5), 2e-7 * std::exp(87.5));
  EXPECT_EQ(e[7], 1.0f);
  EXPECT_NEAR(e[8], std::exp(1.0), 2e-7 * std::exp(1.0));
  EXPECT_NEAR(e[9], std::exp(-1.0), 2e-7 * std::exp(-1.0));
}

// -------------------------------------------------------------- lr_schedule

TEST(OpsLrSchedule, WarmupThenCosineToMinimum) {
  const float max_lr = 6e-4f, ratio = 0.1f;
  const int64_t warmup = 10, total = 110;
  const double mx = max_lr, mn = 0.1 * mx;
  EXPECT_FLOAT_EQ(lr_at(0, max_lr, warmup, total, ratio), static_cast<float>(mx / 10));
  EXPECT_FLOAT_EQ(lr_at(4, max_lr, warmup, total, ratio), static_cast<float>(mx * 5 / 10));
  EXPECT_FLOAT_EQ(lr_at(9, max_lr, warmup, total, ratio), max_lr);   // end of warm-up
  EXPECT_FLOAT_EQ(lr_at(10, max_lr, warmup, total, ratio), max_lr);  // cosine starts at p = 0
  EXPECT_FLOAT_EQ(lr_at(60, max_lr, warmup, total, ratio), static_cast<float>((mx + mn) / 2));  // p = 0.5
  EXPECT_FLOAT_EQ(lr_at(35, max_lr, warmup, total, ratio),                                      // p = 0.25
                  static_cast<float>(mn + 0.5 * (mx - mn) * (1 + std::sqrt(0.5))));
  EXPECT_FLOAT_EQ(lr_at(109, max_lr, warmup, total, ratio),  // last step, p = 0.99
                  static_cast<float>(mn + 0.5 * (mx - mn) * (1 + std::cos(0.99 * std::numbers::pi))));
  EXPECT_FLOAT_EQ(lr_at(110, max_lr, warmup, total, ratio), static_cast<float>(mn));
  EXPECT_FLOAT_EQ(lr_at(5000, max_lr, warmup, total, ratio), static_cast<float>(mn));
  EXPECT_FLOAT_EQ(lr_at(0, max_lr, 0, total, ratio), max_lr);  // no warm-up
  EXPECT_FLOAT_EQ(lr_at(3, max_lr, 0, 0, ratio), static_cast<float>(mn));
  expect_error([&] { lr_at(-1, max_lr, warmup, total, ratio); }, "[lr_schedule] step -1");
}

}  // namespace
