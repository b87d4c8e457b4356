#pragma once
// One harness for every op test (after ggml's test-backend-ops):
//   * forward outputs against a naive scalar reference computed in double,
//     with an explicit tolerance |got - want| <= atol + rtol |want|;
//   * every gradient against central finite differences of a scalar
//     objective evaluated in double from the float forward (usually
//     L = sum(y ⊙ R) for a fixed random R);
//   * accumulation (+=) semantics and thread-count independence.
// Failures name the op, the element and both values.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"

namespace sparta::test {

inline std::vector<float> random_normal(size_t n, Rng& rng, double stddev = 1.0, double mean = 0.0) {
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(mean + stddev * rng.normal());
  return v;
}

inline std::vector<float> random_uniform(size_t n, Rng& rng, double lo, double hi) {
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(lo + (hi - lo) * rng.uniform());
  return v;
}

// Elementwise |got - want| <= atol + rtol |want|; reports the worst offender.
inline void expect_close(const std::string& what, const float* got, const double* want, size_t n, double rtol,
                         double atol) {
  size_t worst = 0;
  double worst_excess = -1.0;
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double allowed = atol + rtol * std::fabs(want[i]);
    const double excess = std::isnan(err) ? 1e300 : err - allowed;
    if (excess > 0.0) ++bad;
    if (excess > worst_excess || i == 0) {
      worst_excess = excess;
      worst = i;
    }
  }
  if (n == 0) return;
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << n << " elements off; worst [" << worst << "] got "
                     << got[worst] << " want " << want[worst] << " (rtol " << rtol << ", atol " << atol
                     << ")";
}

inline void expect_close(const std::string& what, const std::vector<float>& got,
                         const std::vector<double>& want, double rtol, double atol) {
  ASSERT_EQ(got.size(), want.size()) << what;
  expect_close(what, got.data(), want.data(), got.size(), rtol, atol);
}

inline void expect_bitwise_equal(const std::string& what, const std::vector<float>& a,
                                 const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      ADD_FAILURE() << what << ": first difference at [" << i << "]: " << a[i] << " vs " << b[i];
      return;
    }
}

// sum_i y_i r_i in double: the scalar objective whose gradient w.r.t. y is R.
inline double dot(const std::vector<float>& y, const std::vector<float>& r) {
  double s = 0.0;
  for (size_t i = 0; i < y.size(); ++i) s += static_cast<double>(y[i]) * static_cast<double>(r[i]);
  return s;
}

// Central differences of `objective` w.r.t. every element of x (perturbed in
// place and restored), compared with the analytic gradient:
//   |fd_i - analytic_i| <= rel_tol * max(max_j |analytic_j|, floor).
// The step is the float-representable x_i ± eps, divided by the actual
// distance. Error budget with eps = 1e-3: truncation O(eps^2 f''') ~ 1e-6,
// float rounding of the changed outputs ~ 1e-7 |y| / eps ~ 1e-4 — far below
// the default rel_tol = 1e-2 of the gradient scale, while a wrong term in a
// gradient is off by O(1) of it.
struct FdOptions {
  double eps = 1e-3;
  double rel_tol = 1e-2;
  double floor = 1e-3;
};

inline void expect_grad_matches_fd(const std::string& what, std::vector<float>& x,
                                   const std::vector<float>& analytic,
                                   const std::function<double()>& objective, FdOptions opt = {}) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  double scale = opt.floor;
  for (float g : analytic) scale = std::max(scale, std::fabs(static_cast<double>(g)));
  size_t bad = 0, worst = 0;
  double worst_err = -1.0, worst_fd = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const float orig = x[i];
    const float xp = static_cast<float>(orig + opt.eps), xm = static_cast<float>(orig - opt.eps);
    x[i] = xp;
    const double lp = objective();
    x[i] = xm;
    const double lm = objective();
    x[i] = orig;
    const double fd = (lp - lm) / (static_cast<double>(xp) - static_cast<double>(xm));
    const double err = std::fabs(fd - static_cast<double>(analytic[i]));
    if (!(err <= opt.rel_tol * scale)) ++bad;
    if (!(err <= worst_err)) {
      worst_err = err;
      worst = i;
      worst_fd = fd;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << x.size()
                     << " gradient elements disagree with finite "
                     << "differences; worst [" << worst << "] analytic " << analytic[worst] << " fd "
                     << worst_fd << " (tolerance " << opt.rel_tol << " x scale " << scale << ")";
}

// after == before + fresh (the op accumulated instead of overwriting), up to
// float rounding of the final addition and of the GEMM's own summation.
inline void expect_accumulated(const std::string& what, const std::vector<float>& before,
                               const std::vector<float>& after, const std::vector<float>& fresh,
                               double rtol = 1e-5) {
  std::vector<double> want(before.size());
  for (size_t i = 0; i < before.size(); ++i) want[i] = static_cast<double>(before[i]) + fresh[i];
  double scale = 0.0;
  for (size_t i = 0; i < before.size(); ++i) scale = std::max(scale, std::fabs(want[i]));
  expect_close(what, after, want, rtol, rtol * scale);
}

// Runs f with the OpenMP pool set to n threads, restoring the previous size.
template <class F>
void with_threads(int n, F&& f) {
  const int previous = omp_get_max_threads();
  omp_set_num_threads(n);
  f();
  omp_set_num_threads(previous);
}

}  // namespace sparta::test
