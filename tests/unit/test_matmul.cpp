// Typed matmul (core/matmul.h) against a double-precision reference computed
// from the operands' stored (already rounded) values.
//
// Tolerance for one output element: FP32 accumulation of K products, bounded
// by 8·K·2^-24·Σ|a·b| (8x the textbook worst case, which real summation
// orders stay far below), plus the final rounding of a 16-bit C (2^-8 relative
// for BF16, 2^-11 for FP16), plus 1e-6 absolute. The GELU (slope <= 1.13)
// carries the error through nearly unchanged.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "core/convert.h"
#include "core/error.h"
#include "core/matmul.h"
#include "core/rng.h"

using namespace sparta;

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// A matrix stored in one of the matmul types, with its padding (ld > cols)
// filled with NaN so a kernel reading past a row would poison the result.
struct Stored {
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0, ld = 0;
  std::vector<float> f32;
  std::vector<uint16_t> h16;

  Stored(DType t, int64_t r, int64_t c, int64_t pad) : dtype(t), rows(r), cols(c), ld(c + pad) {
    const size_t n = static_cast<size_t>(std::max<int64_t>(rows * ld, 1));
    if (t == DType::F32) f32.assign(n, kNaN);
    else h16.assign(n, t == DType::BF16 ? f32_to_bf16_bits(kNaN) : f32_to_f16_bits(kNaN));
  }
  void set(int64_t r, int64_t c, float v) {
    const size_t i = static_cast<size_t>(r * ld + c);
    if (dtype == DType::F32) f32[i] = v;
    else h16[i] = dtype == DType::BF16 ? f32_to_bf16_bits(v) : f32_to_f16_bits(v);
  }
  // The stored (rounded) value.
  double at(int64_t r, int64_t c) const {
    const size_t i = static_cast<size_t>(r * ld + c);
    if (dtype == DType::F32) return f32[i];
    return dtype == DType::BF16 ? bf16_bits_to_f32(h16[i]) : f16_bits_to_f32(h16[i]);
  }
  const void* ptr() const { return dtype == DType::F32 ? static_cast<const void*>(f32.data()) : h16.data(); }
  void* ptr() { return dtype == DType::F32 ? static_cast<void*>(f32.data()) : h16.data(); }
  MatRef ref(bool trans) const { return {ptr(), dtype, rows, cols, ld, trans}; }
  MatOut out() { return {ptr(), dtype, rows, cols, ld}; }
  void fill_normal(Rng& rng, double scale) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) set(r, c, static_cast<float>(scale * rng.normal()));
  }
};

double gelu_tanh(double x) { return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); }

double output_rounding(DType t) { return t == DType::BF16 ? 0x1p-8 : t == DType::F16 ? 0x1p-11 : 0.0; }

struct Problem {
  int64_t M, N, K;
  bool ta, tb;
  int64_t pad;
};

// Runs matmul on random data and checks every element of C (and that C's
// padding is untouched) against the double reference. Returns the largest
// error relative to its tolerance, so callers can also see how close it got.
double check_matmul(const Problem& p, DType ab, DType ct, const MatmulOptions& base, uint64_t seed,
                    double input_scale = 1.0) {
  Rng rng(seed);
  Stored a(ab, p.ta ? p.K : p.M, p.ta ? p.M : p.K, p.pad), b(ab, p.tb ? p.N : p.K, p.tb ? p.K : p.N, p.pad);
  Stored c(ct, p.M, p.N, p.pad);
  a.fill_normal(rng, input_scale);
  b.fill_normal(rng, 1.0);
  c.fill_normal(rng, 1.0);
  std::vector<float> bias(static_cast<size_t>(p.N));
  for (auto& x : bias) x = static_cast<float>(rng.normal());
  MatmulOptions o = base;
  if (o.bias) o.bias = bias.data();
  const Stored c_before = c;
  // MatmulMath::Bf16 multiplies the BF16-rounded inputs.
  auto input = [&o](double v) {
    return o.math == MatmulMath::Bf16 ? bf16_bits_to_f32(f32_to_bf16_bits(static_cast<float>(v))) : v;
  };

  matmul(a.ref(p.ta), b.ref(p.tb), c.out(), o);

  double worst = 0;
  for (int64_t i = 0; i < p.M; ++i) {
    for (int64_t j = 0; j < p.N; ++j) {
      double sum = 0, mag = 0;
      for (int64_t k = 0; k < p.K; ++k) {
        const double prod = input(p.ta ? a.at(k, i) : a.at(i, k)) * input(p.tb ? b.at(j, k) : b.at(k, j));
        sum += prod;
        mag += std::fabs(prod);
      }
      if (o.bias) sum += bias[j], mag += std::fabs(bias[j]);
      if (o.beta != 0) sum += o.beta * c_before.at(i, j), mag += std::fabs(o.beta * c_before.at(i, j));
      const double want = o.gelu ? gelu_tanh(sum) : sum;
      const double tol = 8.0 * p.K * 0x1p-24 * mag + output_rounding(ct) * std::fabs(want) + 1e-6;
      const double got = c.at(i, j);
      const double err = std::fabs(got - want);
      if (!(err <= tol)) {
        ADD_FAILURE() << "C(" << i << "," << j << ") = " << got << ", want " << want << " (tolerance " << tol << ")";
        return INFINITY;
      }
      worst = std::max(worst, err / tol);
    }
    for (int64_t j = p.N; j < c.ld; ++j) {
      if (!std::isnan(c.at(i, j))) {
        ADD_FAILURE() << "padding C(" << i << "," << j << ") was written";
        return INFINITY;
      }
    }
  }
  return worst;
}

const Problem kShapes[] = {{1, 1, 1, false, false, 0}, {1, 7, 13, false, false, 0}, {5, 1, 3, false, false, 0},
                           {17, 19, 33, false, false, 0}, {64, 48, 100, false, false, 0}, {3, 70, 257, false, false, 0}};

void check_all_layouts(DType ab, DType ct) {
  uint64_t seed = 1;
  for (Problem p : kShapes)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (int64_t pad : {0, 3}) {
          p.ta = ta, p.tb = tb, p.pad = pad;
          SCOPED_TRACE(cat(dtype_name(ab), "->", dtype_name(ct), " M=", p.M, " N=", p.N, " K=", p.K, " ta=", ta,
                           " tb=", tb, " pad=", pad));
          check_matmul(p, ab, ct, {}, ++seed);
        }
}

}  // namespace

TEST(CoreMatmul, F32MatchesReferenceInAllLayouts) { check_all_layouts(DType::F32, DType::F32); }

TEST(CoreMatmul, Bf16MatchesReferenceInAllLayouts) {
  check_all_layouts(DType::BF16, DType::F32);
  check_all_layouts(DType::BF16, DType::BF16);
}

TEST(CoreMatmul, F16MatchesReferenceInAllLayouts) {
  check_all_layouts(DType::F16, DType::F32);
  check_all_layouts(DType::F16, DType::F16);
}

TEST(CoreMatmul, BiasAndGeluTanhMatchTheFormula) {
  MatmulOptions o;
  o.bias = reinterpret_cast<const float*>(1);  // check_matmul supplies the real bias
  o.gelu = true;
  // Scaled so pre-activations spread over [-4, 4], where GELU bends; there the
  // erf form differs from the tanh form by up to 5e-4, far above tolerance.
  for (DType t : {DType::F32, DType::BF16, DType::F16})
    for (DType ct : {DType::F32, t}) {
      SCOPED_TRACE(cat(dtype_name(t), "->", dtype_name(ct)));
      check_matmul({31, 29, 40, false, true, 2}, t, ct, o, 11, 0.3);
      check_matmul({8, 5, 17, true, false, 0}, t, ct, o, 12, 0.3);
    }
  // Bias alone.
  o.gelu = false;
  check_matmul({9, 33, 21, false, false, 1}, DType::F32, DType::F32, o, 13);
}

TEST(CoreMatmul, GeluIsTheTanhApproximation) {
  // One product per output: C = x·1 with x chosen where tanh and erf GELU
  // differ most (|x| ~ 2..3); exact inputs, so only the formula is tested.
  const std::vector<float> xs = {-3.0f, -2.25f, -1.5f, -0.5f, 0.0f, 0.75f, 2.0f, 3.5f};
  const int64_t n = static_cast<int64_t>(xs.size());
  std::vector<float> one = {1.0f}, c(xs.size());
  MatmulOptions o;
  o.gelu = true;
  matmul({xs.data(), DType::F32, n, 1, 1, false}, {one.data(), DType::F32, 1, 1, 1, false},
         {c.data(), DType::F32, n, 1, 1}, o);
  for (size_t i = 0; i < xs.size(); ++i) {
    const double x = xs[i];
    EXPECT_NEAR(c[i], gelu_tanh(x), 2e-6 + 1e-6 * std::fabs(x)) << x;
    const double erf_form = 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    if (std::fabs(erf_form - gelu_tanh(x)) > 1e-4) {
      EXPECT_GT(std::fabs(c[i] - erf_form), 5e-5) << x;
    }
  }
}

TEST(CoreMatmul, BetaAccumulatesIntoC) {
  MatmulOptions o;
  o.beta = 1.0f;
  for (DType t : {DType::F32, DType::BF16, DType::F16})
    for (DType ct : {DType::F32, t}) {
      SCOPED_TRACE(cat(dtype_name(t), "->", dtype_name(ct)));
      check_matmul({13, 21, 34, false, false, 0}, t, ct, o, 21);
      check_matmul({7, 16, 5, true, true, 4}, t, ct, o, 22);
    }
  // Other betas, and beta with bias and GELU (the sum comes before the GELU).
  o.beta = -0.5f;
  check_matmul({6, 10, 12, false, true, 1}, DType::F32, DType::F32, o, 23);
  o.beta = 1.0f;
  o.gelu = true;
  o.bias = reinterpret_cast<const float*>(1);
  check_matmul({6, 10, 12, false, false, 1}, DType::BF16, DType::F32, o, 24, 0.3);
}

TEST(CoreMatmul, BetaZeroNeverReadsC) {
  for (DType t : {DType::F32, DType::BF16, DType::F16}) {
    Stored a(t, 4, 3, 0), b(t, 3, 5, 0), c(t, 4, 5, 0);  // C is all NaN
    Rng rng(5);
    a.fill_normal(rng, 1);
    b.fill_normal(rng, 1);
    matmul(a.ref(false), b.ref(false), c.out());
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 5; ++j) EXPECT_FALSE(std::isnan(c.at(i, j))) << dtype_name(t);
  }
}

// MatmulMath::Bf16 must compute with BF16-rounded inputs: close to the
// reference built from rounded inputs, and far (relative to FP32 error) from
// the strict FP32 result. Inputs in [1, 1 + 2^-6) fall between BF16 values
// (spacing 2^-7 there), so each moves by up to 2^-8 when rounded.
TEST(CoreMatmul, Bf16MathRoundsInputsToBf16) {
  const int64_t M = 24, N = 20, K = 96;
  Rng rng(31);
  std::vector<float> a(M * K), b(K * N), strict(M * N), fast(M * N);
  for (auto& x : a) x = static_cast<float>(1.0 + rng.uniform() / 64);
  for (auto& x : b) x = static_cast<float>(1.0 + rng.uniform() / 64);
  const MatRef ra{a.data(), DType::F32, M, K, K, false}, rb{b.data(), DType::F32, K, N, N, false};
  matmul(ra, rb, {strict.data(), DType::F32, M, N, N});
  MatmulOptions o;
  o.math = MatmulMath::Bf16;
  matmul(ra, rb, {fast.data(), DType::F32, M, N, N}, o);
  double fast_vs_rounded = 0, strict_vs_exact = 0, fast_vs_strict = 0;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double exact = 0, rounded = 0;
      for (int64_t k = 0; k < K; ++k) {
        exact += static_cast<double>(a[i * K + k]) * b[k * N + j];
        rounded += static_cast<double>(bf16_bits_to_f32(f32_to_bf16_bits(a[i * K + k]))) *
                   bf16_bits_to_f32(f32_to_bf16_bits(b[k * N + j]));
      }
      const double f = fast[i * N + j], s = strict[i * N + j];
      fast_vs_rounded = std::max(fast_vs_rounded, std::fabs(f - rounded) / rounded);
      strict_vs_exact = std::max(strict_vs_exact, std::fabs(s - exact) / exact);
      fast_vs_strict = std::max(fast_vs_strict, std::fabs(f - s) / exact);
    }
  EXPECT_LT(fast_vs_rounded, 8.0 * K * 0x1p-24);
  EXPECT_LT(strict_vs_exact, 8.0 * K * 0x1p-24);
  // BF16 input rounding: relative error up to 2^-9 per input; here ~1e-3.
  EXPECT_GT(fast_vs_strict, 1e-4);
  EXPECT_LT(fast_vs_strict, 2 * 0x1p-8);
  // Transposes, padding, bias, beta and GELU on the rounded inputs too.
  o.bias = reinterpret_cast<const float*>(1);
  o.beta = 1.0f;
  o.gelu = true;
  check_matmul({17, 19, 33, true, true, 3}, DType::F32, DType::F32, o, 32, 0.3);
  check_matmul({5, 40, 64, false, true, 0}, DType::F32, DType::F32, o, 33, 0.3);
}

TEST(CoreMatmul, RepeatedCallsReuseThePrimitiveAndAgreeBitwise) {
  Rng rng(41);
  Stored a(DType::BF16, 33, 47, 1), b(DType::BF16, 47, 29, 0);
  a.fill_normal(rng, 1);
  b.fill_normal(rng, 1);
  std::vector<std::vector<uint16_t>> results;
  std::string impl;
  for (int call = 0; call < 3; ++call) {
    Stored c(DType::BF16, 33, 29, 0);
    matmul(a.ref(false), b.ref(false), c.out());
    results.push_back(c.h16);
    const std::string now = matmul_implementation(a.ref(false), b.ref(false), c.out());
    if (call == 0) impl = now;
    EXPECT_EQ(now, impl);
  }
  EXPECT_EQ(results[1], results[0]);
  EXPECT_EQ(results[2], results[0]);
  // A problem differing only in a transpose or a post-op is a different
  // primitive: same data, transposed storage, same numbers.
  Stored at(DType::BF16, 47, 33, 0);
  for (int64_t i = 0; i < 33; ++i)
    for (int64_t k = 0; k < 47; ++k) at.set(k, i, static_cast<float>(a.at(i, k)));
  Stored c(DType::F32, 33, 29, 0), ct(DType::F32, 33, 29, 0);
  matmul(a.ref(false), b.ref(false), c.out());
  matmul(at.ref(true), b.ref(false), ct.out());
  for (int64_t i = 0; i < 33; ++i)
    for (int64_t j = 0; j < 29; ++j) EXPECT_NEAR(c.at(i, j), ct.at(i, j), 1e-4 * (1 + std::fabs(c.at(i, j))));
}

// Inside an OpenMP parallel region oneDNN runs each product on the calling
// thread; every thread's result must still be right, with problems both
// shared between threads (same cached primitive) and distinct.
TEST(CoreMatmul, CorrectInsideAnOpenMPParallelRegion) {
  constexpr int kJobs = 16;
  std::vector<double> worst(kJobs, -1);
  std::vector<std::string> errors(kJobs);
#pragma omp parallel for num_threads(2) schedule(dynamic)
  for (int job = 0; job < kJobs; ++job) {
    const DType t = job % 3 == 0 ? DType::F32 : job % 3 == 1 ? DType::BF16 : DType::F16;
    const Problem p = job % 2 ? Problem{64, 48, 100, true, false, 2} : Problem{19 + job, 23, 37, false, true, 0};
    try {
      worst[job] = check_matmul(p, t, DType::F32, {}, 100 + job);
    } catch (const std::exception& e) {
      errors[job] = e.what();
    }
  }
  for (int job = 0; job < kJobs; ++job) {
    EXPECT_EQ(errors[job], "") << job;
    EXPECT_GE(worst[job], 0) << job;
    EXPECT_LE(worst[job], 1) << job;
  }
}

TEST(CoreMatmul, EmptyProductIsANoOp) {
  std::vector<float> c = {kNaN};
  std::vector<float> b(5, 1.0f);
  matmul({nullptr, DType::F32, 0, 5, 5, false}, {b.data(), DType::F32, 5, 1, 1, false}, {c.data(), DType::F32, 0, 1, 1});
  EXPECT_TRUE(std::isnan(c[0]));
}

TEST(CoreMatmul, RejectsBadInputWithOneLineMessages) {
  std::vector<float> f(64, 1.0f);
  std::vector<uint16_t> h(64, 0);
  auto expect_error = [](auto&& call, const std::string& want) {
    try {
      call();
      ADD_FAILURE() << "no error; wanted: " << want;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(want), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      EXPECT_EQ(msg.rfind("[matmul] ", 0), 0u) << msg;
    }
  };
  const MatRef a32{f.data(), DType::F32, 2, 3, 3, false}, b32{f.data(), DType::F32, 3, 4, 4, false};
  const MatRef a16{h.data(), DType::BF16, 2, 3, 3, false}, bh{h.data(), DType::F16, 3, 4, 4, false};
  const MatOut c32{f.data(), DType::F32, 2, 4, 4};
  expect_error([&] { matmul(a16, bh, c32); }, "A is BF16 but B is F16: A and B must have the same type");
  expect_error([&] { matmul(a32, {h.data(), DType::BF16, 3, 4, 4, false}, c32); }, "A is F32 but B is BF16");
  expect_error([&] { matmul({f.data(), DType::I32, 2, 3, 3, false}, b32, c32); },
               "A is I32; matmul takes F32, BF16 or F16");
  expect_error([&] { matmul(a16, {h.data(), DType::BF16, 3, 4, 4, false}, {h.data(), DType::F16, 2, 4, 4}); },
               "C is F16 but A and B are BF16: C must be F32 or BF16");
  expect_error([&] { matmul(a32, b32, {h.data(), DType::BF16, 2, 4, 4}); }, "C is BF16 but A and B are F32: C must be F32 too");
  expect_error([&] { matmul({f.data(), DType::F32, 2, 3, 2, false}, b32, c32); }, "A: leading dimension 2 < 3 columns");
  expect_error([&] { matmul(a32, b32, {f.data(), DType::F32, 2, 4, 3}); }, "C: leading dimension 3 < 4 columns");
  expect_error([&] { matmul(a32, {f.data(), DType::F32, 5, 4, 4, false}, c32); },
               "op(A) is 2x3 but op(B) is 5x4: inner dimensions differ");
  expect_error([&] { matmul(a32, b32, {f.data(), DType::F32, 2, 5, 5}); }, "C is 2x5 but op(A)·op(B) is 2x4");
  expect_error([&] { matmul({nullptr, DType::F32, 2, 3, 3, false}, b32, c32); }, "A is 2x3 but its data pointer is null");
  expect_error([&] { matmul({f.data(), DType::F32, 2, 0, 1, false}, {f.data(), DType::F32, 0, 4, 4, false}, c32); },
               "the inner dimension K is 0");
  MatmulOptions o;
  o.math = MatmulMath::Bf16;
  expect_error([&] { matmul(a16, {h.data(), DType::BF16, 3, 4, 4, false}, c32, o); },
               "MatmulMath::Bf16 is for F32 operands and output, got A BF16");
  o = {};
  o.beta = kNaN;
  expect_error([&] { matmul(a32, b32, c32, o); }, "beta must be finite");
}
