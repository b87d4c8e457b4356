#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "ops/attention.h"
#include "ops/attention_dense.h"
#include "ops/attention_reference.h"

using namespace sparta;

namespace {

constexpr float kSentinel = 12345.0f;

enum class Layout { Separate, Fused, FusedPadded };

// q, k, v of one problem in one buffer. Separate: three contiguous
// (B, T, H, D) blocks (ld = H*D). Fused: (B, T, 3, H, D) (ld = 3*H*D).
// FusedPadded: like Fused plus 5 unused floats after every token, which no
// kernel may touch.
struct Qkv {
  AttnDims d;
  int64_t qo = 0, ko = 0, vo = 0;
  std::vector<float> buf;

  Qkv(int64_t B, int64_t T, int64_t H, int64_t D, bool causal, Layout layout, uint64_t seed, float amp = 1.5f) {
    d.B = B, d.T = T, d.H = H, d.D = D, d.causal = causal;
    const int64_t hd = H * D;
    if (layout == Layout::Separate) {
      d.ld = hd, qo = 0, ko = B * T * hd, vo = 2 * B * T * hd;
      buf.assign(static_cast<size_t>(3 * B * T * hd), kSentinel);
    } else {
      d.ld = 3 * hd + (layout == Layout::FusedPadded ? 5 : 0), qo = 0, ko = hd, vo = 2 * hd;
      buf.assign(static_cast<size_t>(B * T * d.ld), kSentinel);
    }
    Rng rng(seed);
    for_each_slice([&](int64_t off) { buf[off] = static_cast<float>(amp * rng.normal()); });
  }
  // Calls f(offset) for every element of the q, k and v head slices.
  template <typename F>
  void for_each_slice(F f) const {
    for (int64_t base : {qo, ko, vo})
      for (int64_t bt = 0; bt < d.B * d.T; ++bt)
        for (int64_t c = 0; c < d.H * d.D; ++c) f(base + bt * d.ld + c);
  }
  const float* q() const { return buf.data() + qo; }
  const float* k() const { return buf.data() + ko; }
  const float* v() const { return buf.data() + vo; }
  // A gradient buffer with the same layout, filled with the sentinel.
  std::vector<float> grad_buffer() const { return std::vector<float>(buf.size(), kSentinel); }
  int64_t out_size() const { return d.B * d.T * d.H * d.D; }
};

std::vector<float> random_vec(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& e : x) e = static_cast<float>(rng.normal());
  return x;
}

// |a - b| <= atol + rtol*|b| elementwise over n elements at the given
// offsets; reports the worst element.
template <typename OffsetFn>
void expect_close(const float* got, const float* want, int64_t n, OffsetFn off, double rtol, double atol,
                  const std::string& what) {
  double worst = 0;
  int64_t worst_i = -1;
  for (int64_t i = 0; i < n; ++i) {
    const double g = got[off(i)], w = want[off(i)];
    const double excess = std::abs(g - w) - (atol + rtol * std::abs(w));
    if (!(excess <= worst)) worst = std::isnan(excess) ? INFINITY : excess, worst_i = i;
  }
  EXPECT_EQ(worst_i, -1) << what << ": element " << worst_i << " got " << got[off(worst_i < 0 ? 0 : worst_i)]
                         << " want " << want[off(worst_i < 0 ? 0 : worst_i)];
}
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double rtol, double atol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  expect_close(got.data(), want.data(), static_cast<int64_t>(got.size()), [](int64_t i) { return i; }, rtol,
               atol, what);
}

double max_abs_over_slices(const Qkv& x, const std::vector<float>& g, int64_t base) {
  double m = 0;
  for (int64_t bt = 0; bt < x.d.B * x.d.T; ++bt)
    for (int64_t c = 0; c < x.d.H * x.d.D; ++c) m = std::max(m, std::abs(double(g[base + bt * x.d.ld + c])));
  return m;
}

// Gradients in the q/k/v layout of x: compares the three slices and checks
// that every element outside them still holds the sentinel.
void expect_grads_close(const Qkv& x, const std::vector<float>& got, const std::vector<float>& want,
                        double rtol, const std::string& what) {
  const char* names[] = {"dq", "dk", "dv"};
  const int64_t bases[] = {x.qo, x.ko, x.vo};
  const int64_t hd = x.d.H * x.d.D;
  for (int s = 0; s < 3; ++s) {
    // Gradients are O(1) here; the floor covers slices that are exactly 0 in
    // exact arithmetic (e.g. dq with a single visible key) but carry float
    // rounding from dP - Di.
    const double atol = rtol * std::max(1.0, max_abs_over_slices(x, want, bases[s]));
    expect_close(got.data(), want.data(), x.d.B * x.d.T * hd,
                 [&](int64_t i) { return bases[s] + (i / hd) * x.d.ld + i % hd; }, rtol, atol,
                 what + " " + names[s]);
  }
  std::vector<char> inside(got.size(), 0);
  x.for_each_slice([&](int64_t off) { inside[off] = 1; });
  int64_t touched = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (!inside[i] && got[i] != kSentinel) ++touched;
  EXPECT_EQ(touched, 0) << what << ": backward wrote outside the q/k/v slices";
}

struct Shape {
  int64_t B, T, H, D;
  bool causal;
  Layout layout;
};

std::string describe(const Shape& s) {
  return cat("B=", s.B, " T=", s.T, " H=", s.H, " D=", s.D, s.causal ? " causal" : " bidirectional",
             s.layout == Layout::Separate ? " separate" : s.layout == Layout::Fused ? " fused" : " fused+pad");
}

// Shapes that cover: odd T and D, T = 1, exact block multiples, key tiles
// and backward key ranges (T > 512 with few heads), B*H = 1, all layouts.
const Shape kShapes[] = {
    {2, 70, 3, 24, true, Layout::Separate},    {2, 70, 3, 24, false, Layout::Fused},
    {1, 1, 1, 16, true, Layout::Separate},     {2, 1, 2, 8, false, Layout::FusedPadded},
    {3, 64, 2, 8, true, Layout::FusedPadded},  {1, 600, 2, 64, true, Layout::Fused},
    {1, 1100, 1, 32, false, Layout::Separate}, {1, 1030, 1, 20, true, Layout::FusedPadded},
};

// Tiny, independent double-precision forward for finite differences:
// L = Σ out ⊙ R over the allowed (causal ∧ mask) pairs.
double loss_double(const std::vector<double>& buf, const Qkv& x, const std::vector<float>& R,
                   const AttnMask& mask) {
  const AttnDims& d = x.d;
  const double scale = 1.0 / std::sqrt(double(d.D));
  double L = 0;
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h)
      for (int64_t i = 0; i < d.T; ++i) {
        auto at = [&](int64_t base, int64_t t) { return base + (b * d.T + t) * d.ld + h * d.D; };
        std::vector<double> s(static_cast<size_t>(d.T), -INFINITY);
        double mx = -INFINITY;
        for (int64_t j = 0; j < d.T; ++j) {
          if ((d.causal && j > i) || (mask && !mask(b, h, i, j))) continue;
          double dot = 0;
          for (int64_t c = 0; c < d.D; ++c) dot += buf[at(x.qo, i) + c] * buf[at(x.ko, j) + c];
          s[j] = dot * scale;
          mx = std::max(mx, s[j]);
        }
        if (mx == -INFINITY) continue;
        double z = 0;
        for (int64_t j = 0; j < d.T; ++j) z += std::exp(s[j] - mx);
        for (int64_t c = 0; c < d.D; ++c) {
          double o = 0;
          for (int64_t j = 0; j < d.T; ++j) o += std::exp(s[j] - mx) / z * buf[at(x.vo, j) + c];
          L += o * R[((b * d.T + i) * d.H + h) * d.D + c];
        }
      }
  return L;
}

// Central differences of loss_double w.r.t. every q/k/v element, laid out
// like x.buf (sentinel elsewhere).
std::vector<double> finite_difference_grads(const Qkv& x, const std::vector<float>& R, const AttnMask& mask) {
  std::vector<double> buf(x.buf.begin(), x.buf.end());
  std::vector<double> g(buf.size(), 0.0);
  const double eps = 1e-5;
  x.for_each_slice([&](int64_t off) {
    const double keep = buf[off];
    buf[off] = keep + eps;
    const double lp = loss_double(buf, x, R, mask);
    buf[off] = keep - eps;
    const double lm = loss_double(buf, x, R, mask);
    buf[off] = keep;
    g[off] = (lp - lm) / (2 * eps);
  });
  return g;
}

void expect_matches_fd(const Qkv& x, const std::vector<float>& got, const std::vector<double>& fd,
                       const std::string& what) {
  int64_t bad = 0;
  x.for_each_slice([&](int64_t off) {
    if (!(std::abs(got[off] - fd[off]) <= 2e-5 * (1.0 + std::abs(fd[off])))) {
      if (bad++ < 5) ADD_FAILURE() << what << ": offset " << off << " got " << got[off] << " fd " << fd[off];
    }
  });
  EXPECT_EQ(bad, 0) << what;
}

// Runs f with the OpenMP thread count set to n, restoring it afterwards.
template <typename F>
void with_threads(int n, F f) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(n);
  f();
  omp_set_num_threads(before);
}

}  // namespace

TEST(AttentionFactory, MakesDenseAndRejectsUnknownNames) {
  auto a = make_attention("dense");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->name(), "dense");
  EXPECT_NE(dynamic_cast<DenseAttention*>(a.get()), nullptr);
  try {
    make_attention("flash");
    FAIL() << "expected sparta::Error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[attention] unknown implementation 'flash' (available: dense, window, dsa)");
  }
}

TEST(AttentionFactory, RejectsBadDimensions) {
  DenseAttention att;
  std::vector<float> buf(64, 0.0f);
  AttnDims d{1, 2, 2, 4, 6, true};  // ld = 6 < H*D = 8
  try {
    att.forward(buf.data(), buf.data(), buf.data(), buf.data(), buf.data(), d);
    FAIL() << "expected sparta::Error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[attention.dense] token stride ld=6 is smaller than H*D=8");
  }
  d = AttnDims{1, 2, 0, 4, 8, true};
  EXPECT_THROW(att.backward(buf.data(), buf.data(), buf.data(), buf.data(), buf.data(), buf.data(), buf.data(),
                            buf.data(), buf.data(), d),
               Error);
  EXPECT_THROW(att.decode(buf.data(), buf.data(), buf.data(), buf.data(), 0, 2, 4), Error);
  d = AttnDims{1, 2, 2, 4, 8, true};
  for (double bad : {0.0, -1.0, std::nan(""), HUGE_VAL}) {
    d.aux_grad_scale = bad;
    EXPECT_THROW(att.backward(buf.data(), buf.data(), buf.data(), buf.data(), buf.data(), buf.data(), buf.data(),
                              buf.data(), buf.data(), d),
                 Error)
        << bad;
  }
}

TEST(AttentionReference, MaskSelectsKeys) {
  // Only the diagonal allowed: out_i = v_i and lse_i = scale·q_i·k_i.
  Qkv x(1, 5, 2, 4, false, Layout::Fused, 3);
  std::vector<float> out(x.out_size()), lse(10);
  attention_reference_forward(out.data(), lse.data(), x.q(), x.k(), x.v(), x.d,
                              [](int64_t, int64_t, int64_t i, int64_t j) { return i == j; });
  for (int64_t t = 0; t < 5; ++t)
    for (int64_t h = 0; h < 2; ++h) {
      double dot = 0;
      for (int64_t c = 0; c < 4; ++c) {
        EXPECT_FLOAT_EQ(out[(t * 2 + h) * 4 + c], x.v()[t * x.d.ld + h * 4 + c]);
        dot += double(x.q()[t * x.d.ld + h * 4 + c]) * x.k()[t * x.d.ld + h * 4 + c];
      }
      EXPECT_NEAR(lse[h * 5 + t], dot / 2.0, 1e-6);
    }
  // A row with no allowed key: out = 0, lse = -inf.
  attention_reference_forward(out.data(), lse.data(), x.q(), x.k(), x.v(), x.d,
                              [](int64_t, int64_t, int64_t i, int64_t j) { return j < i; });
  EXPECT_EQ(lse[0], -std::numeric_limits<float>::infinity());
  for (int c = 0; c < 4; ++c) EXPECT_EQ(out[c], 0.0f);
  // A causal mask given explicitly equals the causal flag.
  std::vector<float> out2(out.size()), lse2(lse.size());
  attention_reference_forward(out.data(), lse.data(), x.q(), x.k(), x.v(), x.d,
                              [](int64_t, int64_t, int64_t i, int64_t j) { return j <= i; });
  AttnDims dc = x.d;
  dc.causal = true;
  attention_reference_forward(out2.data(), lse2.data(), x.q(), x.k(), x.v(), dc);
  EXPECT_EQ(out, out2);
  EXPECT_EQ(lse, lse2);
}

TEST(AttentionReference, BackwardMatchesFiniteDifferences) {
  const AttnMask sparse = [](int64_t, int64_t h, int64_t i, int64_t j) { return (i + 2 * j + h) % 3 != 1; };
  for (bool causal : {true, false})
    for (bool masked : {false, true}) {
      Qkv x(2, 5, 2, 3, causal, Layout::FusedPadded, 11);
      const std::vector<float> R = random_vec(x.out_size(), 12);
      const AttnMask mask = masked ? sparse : AttnMask{};
      std::vector<float> g = x.grad_buffer();
      attention_reference_backward(g.data() + x.qo, g.data() + x.ko, g.data() + x.vo, R.data(), x.q(), x.k(),
                                   x.v(), x.d, mask);
      expect_matches_fd(x, g, finite_difference_grads(x, R, mask),
                        cat("reference causal=", causal, " masked=", masked));
    }
}

TEST(AttentionDense, BackwardMatchesFiniteDifferences) {
  for (bool causal : {true, false}) {
    Qkv x(2, 6, 2, 5, causal, Layout::FusedPadded, 21);
    const std::vector<float> R = random_vec(x.out_size(), 22);
    DenseAttention att;
    std::vector<float> out(x.out_size()), lse(x.d.B * x.d.H * x.d.T);
    att.forward(out.data(), lse.data(), x.q(), x.k(), x.v(), x.d);
    std::vector<float> g = x.grad_buffer();
    att.backward(g.data() + x.qo, g.data() + x.ko, g.data() + x.vo, R.data(), out.data(), lse.data(), x.q(),
                 x.k(), x.v(), x.d);
    expect_matches_fd(x, g, finite_difference_grads(x, R, {}), cat("dense causal=", causal));
  }
}

TEST(AttentionDense, ForwardMatchesReference) {
  for (const Shape& s : kShapes) {
    Qkv x(s.B, s.T, s.H, s.D, s.causal, s.layout, 100 + s.T);
    const std::vector<float> input = x.buf;
    const int64_t n = x.out_size(), nl = s.B * s.H * s.T;
    // One guard element past out and lse must survive.
    std::vector<float> out(n + 1, kSentinel), lse(nl + 1, kSentinel), ro(n), rl(nl);
    DenseAttention att;
    att.forward(out.data(), lse.data(), x.q(), x.k(), x.v(), x.d);
    attention_reference_forward(ro.data(), rl.data(), x.q(), x.k(), x.v(), x.d);
    EXPECT_EQ(out[n], kSentinel) << describe(s);
    EXPECT_EQ(lse[nl], kSentinel) << describe(s);
    out.pop_back(), lse.pop_back();
    expect_close(out, ro, 1e-5, 1e-5, describe(s) + " out");
    expect_close(lse, rl, 1e-5, 1e-5, describe(s) + " lse");
    EXPECT_TRUE(x.buf == input) << describe(s) << ": forward modified its inputs";
  }
}

TEST(AttentionDense, BackwardMatchesReference) {
  for (const Shape& s : kShapes) {
    Qkv x(s.B, s.T, s.H, s.D, s.causal, s.layout, 200 + s.T);
    const std::vector<float> input = x.buf;
    const std::vector<float> dout = random_vec(x.out_size(), 300 + s.T);
    std::vector<float> out(x.out_size()), lse(s.B * s.H * s.T);
    DenseAttention att;
    att.forward(out.data(), lse.data(), x.q(), x.k(), x.v(), x.d);
    std::vector<float> g = x.grad_buffer(), rg = x.grad_buffer();
    att.backward(g.data() + x.qo, g.data() + x.ko, g.data() + x.vo, dout.data(), out.data(), lse.data(), x.q(),
                 x.k(), x.v(), x.d);
    attention_reference_backward(rg.data() + x.qo, rg.data() + x.ko, rg.data() + x.vo, dout.data(), x.q(), x.k(),
                                 x.v(), x.d);
    expect_grads_close(x, g, rg, 1e-4, describe(s));
    EXPECT_TRUE(x.buf == input) << describe(s) << ": backward modified its inputs";
  }
}

TEST(AttentionDense, BackwardOverwritesPreviousGradients) {
  // dq/dk/dv hold garbage (not the sentinel, not zero) before the call: the
  // result must not depend on it.
  Qkv x(1, 130, 2, 16, true, Layout::Fused, 5);
  const std::vector<float> dout = random_vec(x.out_size(), 6);
  std::vector<float> out(x.out_size()), lse(2 * 130);
  DenseAttention att;
  att.forward(out.data(), lse.data(), x.q(), x.k(), x.v(), x.d);
  std::vector<float> g1 = x.grad_buffer(), g2 = random_vec(static_cast<int64_t>(x.buf.size()), 7);
  for (auto* g : {&g1, &g2})
    att.backward(g->data() + x.qo, g->data() + x.ko, g->data() + x.vo, dout.data(), out.data(), lse.data(), x.q(),
                 x.k(), x.v(), x.d);
  EXPECT_TRUE(g1 == g2);
}

TEST(AttentionDense, DecodeEqualsFullForwardAtEveryPrefix) {
  // The cache layout (len, H, D) is the separate layout with B = 1.
  for (int64_t H : {1, 3}) {
    Qkv x(1, 300, H, 24, true, Layout::Separate, 40 + H);
    const int64_t hd = H * 24;
    std::vector<float> out(x.out_size()), lse(H * 300), dec(hd);
    DenseAttention att;
    att.forward(out.data(), lse.data(), x.q(), x.k(), x.v(), x.d);
    for (int64_t len = 1; len <= 300; ++len) {
      att.decode(dec.data(), x.q() + (len - 1) * H * 24, x.k(), x.v(), len, H, 24);
      expect_close(dec.data(), out.data() + (len - 1) * hd, hd, [](int64_t i) { return i; }, 1e-5, 1e-5,
                   cat("decode H=", H, " len=", len));
    }
  }
}

TEST(AttentionDense, DecodeLongCacheMatchesForward) {
  // Long enough for the threaded decode path and several score tiles.
  Qkv x(1, 2000, 4, 64, true, Layout::Separate, 77);
  std::vector<float> out(x.out_size()), lse(4 * 2000), dec(256);
  DenseAttention att;
  att.forward(out.data(), lse.data(), x.q(), x.k(), x.v(), x.d);
  for (int64_t len : {1999, 2000}) {
    att.decode(dec.data(), x.q() + (len - 1) * 4 * 64, x.k(), x.v(), len, 4, 64);
    expect_close(dec.data(), out.data() + (len - 1) * 256, 256, [](int64_t i) { return i; }, 1e-5, 1e-5,
                 cat("decode len=", len));
  }
}

TEST(AttentionDense, ResultsIndependentOfThreadCount) {
  // Promise: bit-identical forward, backward and decode for any thread count.
  const Shape shapes[] = {{1, 700, 2, 40, true, Layout::Fused}, {2, 300, 1, 24, false, Layout::Separate},
                          {4, 130, 5, 16, true, Layout::FusedPadded}};
  for (const Shape& s : shapes) {
    Qkv x(s.B, s.T, s.H, s.D, s.causal, s.layout, 900 + s.T);
    const std::vector<float> dout = random_vec(x.out_size(), 901);
    std::vector<float> out[2], lse[2], g[2], dec[2];
    for (int run = 0; run < 2; ++run)
      with_threads(run + 1, [&] {
        DenseAttention att;
        out[run].resize(x.out_size()), lse[run].resize(s.B * s.H * s.T), g[run] = x.grad_buffer();
        att.forward(out[run].data(), lse[run].data(), x.q(), x.k(), x.v(), x.d);
        att.backward(g[run].data() + x.qo, g[run].data() + x.ko, g[run].data() + x.vo, dout.data(),
                     out[run].data(), lse[run].data(), x.q(), x.k(), x.v(), x.d);
        if (s.layout == Layout::Separate) {  // the cache layout
          dec[run].resize(s.H * s.D);
          att.decode(dec[run].data(), x.q() + (s.T - 1) * s.H * s.D, x.k(), x.v(), s.T, s.H, s.D);
        }
      });
    EXPECT_TRUE(out[0] == out[1]) << describe(s);
    EXPECT_TRUE(lse[0] == lse[1]) << describe(s);
    EXPECT_TRUE(g[0] == g[1]) << describe(s);
    EXPECT_TRUE(dec[0] == dec[1]) << describe(s);
  }
}

TEST(AttentionDense, PeakyScoresStayFinite) {
  // Scores with a spread of ~±200 drive most probabilities to exp(-huge) = 0
  // (below the float range); the result must stay finite and match the
  // reference. Float scores of this size carry ~1e-5 absolute error, which
  // sets the tolerance.
  Qkv x(1, 200, 2, 16, true, Layout::Separate, 55, 8.0f);
  std::vector<float> out(x.out_size()), lse(400), ro(out.size()), rl(lse.size());
  DenseAttention att;
  att.forward(out.data(), lse.data(), x.q(), x.k(), x.v(), x.d);
  attention_reference_forward(ro.data(), rl.data(), x.q(), x.k(), x.v(), x.d);
  EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](float e) { return std::isfinite(e); }));
  expect_close(out, ro, 1e-3, 1e-3, "peaky out");
  expect_close(lse, rl, 1e-5, 1e-5, "peaky lse");
}
