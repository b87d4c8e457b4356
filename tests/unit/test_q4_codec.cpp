// The 4-bit gradient codec: layout and bytes, the round-trip error bound per
// block, zeros, tiny and huge values, non-finite input refused, and error
// feedback keeping the sum of what was sent on the true sum.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "dist/q4_codec.h"

using namespace sparta;
using namespace sparta::dist;

namespace {

std::vector<float> normal_values(int64_t n, double stddev, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = static_cast<float>(stddev * rng.normal());
  return v;
}

std::vector<float> round_trip(const std::vector<float>& x, int64_t block) {
  const Q4Layout L = q4_layout(static_cast<int64_t>(x.size()), block);
  std::vector<uint8_t> packed(static_cast<size_t>(L.bytes()));
  EXPECT_TRUE(q4_encode(packed.data(), x.data(), nullptr, L));
  std::vector<float> y(x.size(), -99.0f);
  q4_decode(y.data(), packed.data(), L);
  return y;
}

// Each value is within half a scale (max|block| / 7 / 2) of its block.
void expect_within_half_a_scale(const std::vector<float>& x, const std::vector<float>& y, int64_t block) {
  for (size_t b0 = 0; b0 < x.size(); b0 += static_cast<size_t>(block)) {
    const size_t end = std::min(x.size(), b0 + static_cast<size_t>(block));
    float m = 0.0f;
    for (size_t i = b0; i < end; ++i) m = std::max(m, std::fabs(x[i]));
    for (size_t i = b0; i < end; ++i)
      ASSERT_LE(std::fabs(x[i] - y[i]), m / 14.0f * (1.0f + 1e-5f) + 1e-30f) << "index " << i << " block max " << m;
  }
}

}  // namespace

TEST(Q4Codec, LayoutCountsScalesAndNibbles) {
  const Q4Layout a = q4_layout(1000, 64);
  EXPECT_EQ(a.blocks(), 16);
  EXPECT_EQ(a.code_bytes(), 500);
  EXPECT_EQ(a.bytes(), 16 * 4 + 500);
  EXPECT_EQ(q4_layout(129, 128).bytes(), 2 * 4 + 65);
  // Bytes per value at large n: 7.1x (block 64) and 7.5x (block 128) fewer than FP32.
  EXPECT_NEAR(4.0 * 1e6 / static_cast<double>(q4_layout(1000000, 64).bytes()), 7.11, 0.01);
  EXPECT_NEAR(4.0 * 1e6 / static_cast<double>(q4_layout(1000000, 128).bytes()), 7.53, 0.01);
  EXPECT_EQ(q4_layout(0, 64).bytes(), 0);
  for (int64_t bad : {0, 1, 3, 65538}) EXPECT_THROW(q4_layout(10, bad), Error) << bad;
  EXPECT_THROW(q4_layout(-1, 64), Error);
}

TEST(Q4Codec, RoundTripIsWithinHalfAScalePerBlock) {
  for (int64_t block : {2, 64, 128}) {
    for (int64_t n : {1, 7, 64, 1000, 4099}) {
      SCOPED_TRACE(testing::Message() << "block " << block << " n " << n);
      std::vector<float> x = normal_values(n, 1e-3, static_cast<uint64_t>(n * 31 + block));
      if (n > 100) x[50] = 0.5f;  // one outlier block: its small values round to 0
      const std::vector<float> y = round_trip(x, block);
      expect_within_half_a_scale(x, y, block);
      // The block's largest value is exact up to float rounding (code ±7).
      if (n > 100) {
        EXPECT_NEAR(y[50], 0.5f, 1e-6f);
      }
    }
  }
}

TEST(Q4Codec, ZerosTinyAndHugeValues) {
  std::vector<float> zeros(100, 0.0f);
  for (float v : round_trip(zeros, 64)) EXPECT_EQ(v, 0.0f);
  // Huge: near FLT_MAX without overflow. Tiny: normal and subnormal.
  const float big = std::numeric_limits<float>::max();
  std::vector<float> x = {big, -big, big / 3, 1.0f, 0.0f, -big / 7, 2.5e37f, -1e38f};
  std::vector<float> y = round_trip(x, 8);
  for (float v : y) EXPECT_TRUE(std::isfinite(v));
  expect_within_half_a_scale(x, y, 8);
  EXPECT_NEAR(y[0] / big, 1.0f, 1e-6f);  // a block's largest value comes back as code 7 x max/7
  const float tiny = std::numeric_limits<float>::min();
  std::vector<float> t = {tiny * 64, -tiny * 32, tiny, 0.0f};
  expect_within_half_a_scale(t, round_trip(t, 4), 4);
  // A block of subnormals has a scale that underflows: sent as zeros (an
  // error of at most its largest value, which is below FLT_MIN).
  std::vector<float> sub = {1e-44f, -3e-45f, 0.0f, 1e-45f};
  for (float v : round_trip(sub, 4)) EXPECT_EQ(v, 0.0f);
}

TEST(Q4Codec, NonFiniteValuesAreRefusedAndChangeNothing) {
  const Q4Layout L = q4_layout(300, 64);
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()}) {
    std::vector<float> x = normal_values(300, 1.0, 3), residual = normal_values(300, 0.1, 4);
    x[257] = bad;  // in the last block: the earlier blocks are not written either
    const std::vector<float> residual_before = residual;
    std::vector<uint8_t> packed(static_cast<size_t>(L.bytes()), 0xAB);
    EXPECT_FALSE(q4_encode(packed.data(), x.data(), residual.data(), L));
    EXPECT_EQ(residual, residual_before);
    for (uint8_t b : packed) ASSERT_EQ(b, 0xAB);
  }
  // x + residual overflowing to infinity is refused too.
  std::vector<float> x(4, 3e38f), residual(4, 3e38f);
  std::vector<uint8_t> packed(static_cast<size_t>(q4_layout(4, 4).bytes()));
  EXPECT_FALSE(q4_encode(packed.data(), x.data(), residual.data(), q4_layout(4, 4)));
}

TEST(Q4Codec, DecodeAccumulates) {
  const std::vector<float> x = normal_values(200, 1.0, 9);
  const Q4Layout L = q4_layout(200, 64);
  std::vector<uint8_t> packed(static_cast<size_t>(L.bytes()));
  ASSERT_TRUE(q4_encode(packed.data(), x.data(), nullptr, L));
  std::vector<float> once(200), twice(200, 1.0f);
  q4_decode(once.data(), packed.data(), L);
  q4_decode(twice.data(), packed.data(), L, /*accumulate=*/true);
  // Exactly, although the AVX2 / AVX-512 clones fuse y + code · scale into
  // an FMA: the scale makes code · scale exact, so every rank decodes the
  // same floats whichever clone its CPU runs.
  for (size_t i = 0; i < once.size(); ++i) EXPECT_EQ(twice[i], 1.0f + once[i]);
  float scale;
  std::memcpy(&scale, packed.data(), sizeof scale);
  for (size_t i = 0; i < 64; ++i) {
    const double code = std::nearbyint(static_cast<double>(once[i]) / scale);
    EXPECT_EQ(static_cast<double>(once[i]), code * static_cast<double>(scale)) << i;
  }
}

// The sum of what error feedback sent over T steps differs from the true
// sum by the final residual only (at most half a scale), while plain
// rounding drifts by T times its per-step bias: here a block with one large
// gradient and many small ones, whose small components plain rounding drops
// every step.
TEST(Q4Codec, ErrorFeedbackKeepsTheSentSumOnTheTrueSum) {
  const int64_t n = 256, block = 64, steps = 200;
  const Q4Layout L = q4_layout(n, block);
  std::vector<double> true_sum(n, 0.0), ef_sum(n, 0.0), plain_sum(n, 0.0);
  std::vector<float> residual(n, 0.0f), sent(n);
  std::vector<uint8_t> packed(static_cast<size_t>(L.bytes()));
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<float> g = normal_values(n, 0.001, 100 + static_cast<uint64_t>(s));
    for (int64_t i = 0; i < n; ++i) g[i] += 0.01f;  // a steady bias under half a scale
    for (int64_t b = 0; b < n; b += block) g[b] = 1.0f;  // scale 1/7: 0.01 rounds to 0
    for (int64_t i = 0; i < n; ++i) true_sum[i] += g[i];
    ASSERT_TRUE(q4_encode(packed.data(), g.data(), residual.data(), L));
    q4_decode(sent.data(), packed.data(), L);
    for (int64_t i = 0; i < n; ++i) ef_sum[i] += sent[i];
    ASSERT_TRUE(q4_encode(packed.data(), g.data(), nullptr, L));
    q4_decode(sent.data(), packed.data(), L);
    for (int64_t i = 0; i < n; ++i) plain_sum[i] += sent[i];
  }
  double ef_drift = 0.0, plain_drift = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    // The identity behind error feedback: sent sum = true sum - residual.
    ASSERT_NEAR(ef_sum[i], true_sum[i] - residual[i], 1e-4) << i;
    ef_drift = std::max(ef_drift, std::fabs(ef_sum[i] - true_sum[i]));
    plain_drift = std::max(plain_drift, std::fabs(plain_sum[i] - true_sum[i]));
  }
  EXPECT_LE(ef_drift, 1.0 / 14.0 + 1e-3);  // half a scale of the steady state
  EXPECT_GT(plain_drift, 1.5);              // ~200 steps x 0.01 dropped
}
