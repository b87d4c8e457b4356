// FP32 <-> BF16 / FP16 conversions (core/convert.h) against references that
// share no code with them: BF16 rounding by comparing the two neighbouring
// BF16 values in double, FP16 by GCC's _Float16 (libgcc's soft-float
// conversion at the baseline ISA the tests are built for).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/convert.h"
#include "core/rng.h"

using namespace sparta;

namespace {

bool is_nan32(uint32_t u) { return (u & 0x7fffffffu) > 0x7f800000u; }

// Value of BF16 bits, independent of bf16_bits_to_f32: sign, exponent and
// significand decoded and scaled in double.
double bf16_value(uint16_t h) {
  const int exp = (h >> 7) & 0xff, mant = h & 0x7f;
  const double mag = exp == 0     ? std::ldexp(mant, -133)
                     : exp == 255 ? INFINITY  // callers skip NaNs
                                  : std::ldexp(128 + mant, exp - 134);
  return (h & 0x8000) ? -mag : mag;
}

// Nearest BF16 to a non-NaN float: the truncated bits and the next value up
// in magnitude, whichever is closer in exact (double) arithmetic; a tie goes
// to the even significand. Overflow: the next value above 0x7f7f is 0x7f80
// (inf), compared as if it were 2^128, which is what IEEE rounding does.
uint16_t reference_bf16(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint16_t lo = static_cast<uint16_t>(u >> 16);
  if ((u & 0xffffu) == 0) return lo;
  const uint16_t hi = static_cast<uint16_t>(lo + 1);
  const double v = std::fabs(static_cast<double>(x));
  const double vlo = std::fabs(bf16_value(lo));
  const double vhi = (hi & 0x7fff) == 0x7f80 ? std::ldexp(1.0, 128) : std::fabs(bf16_value(hi));
  if (v - vlo < vhi - v) return lo;
  if (v - vlo > vhi - v) return hi;
  return (lo & 1) ? hi : lo;
}

uint16_t reference_f16(float x) { return std::bit_cast<uint16_t>(static_cast<_Float16>(x)); }
float reference_f16_to_f32(uint16_t h) { return static_cast<float>(std::bit_cast<_Float16>(h)); }

std::vector<float> edge_floats() {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, inf, -inf, std::numeric_limits<float>::max(),
                          -std::numeric_limits<float>::max(), std::numeric_limits<float>::min(),
                          std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::denorm_min(),
                          0x1.fffffep-127f,  // largest FP32 subnormal
                          65504.0f, 65519.99f, 65520.0f, -65520.0f, 1e5f, 0x1p-14f, 0x1.ff8p-15f, 0x1.ffcp-15f, 0x1p-24f,
                          0x1p-25f, 0x1.000002p-25f, 0x1.8p-25f, 0x1.8p-24f, 0x1.4p-24f, 0x1p-26f, 3.14159265f};
  // Ties: exactly halfway between neighbours, with even and odd low bits.
  for (uint32_t bits : {0x3f808000u, 0x3f818000u, 0x3f800800u /* FP16 tie, even */, 0x3f801800u /* odd */,
                        0x7f7f8000u /* BF16 tie at the top: rounds to inf */, 0x7f7fffffu, 0x00008000u,
                        0x00018000u})
    v.push_back(std::bit_cast<float>(bits));
  return v;
}

std::vector<float> random_bit_patterns(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = std::bit_cast<float>(static_cast<uint32_t>(rng.next_u64()));
  return v;
}

}  // namespace

TEST(CoreConvert, Bf16RoundsToNearestEven) {
  std::vector<float> xs = edge_floats();
  for (float x : random_bit_patterns(200000, 7)) xs.push_back(x);
  size_t checked = 0;
  for (float x : xs) {
    const uint32_t u = std::bit_cast<uint32_t>(x);
    if (is_nan32(u)) continue;
    ASSERT_EQ(f32_to_bf16_bits(x), reference_bf16(x)) << std::hex << "bits 0x" << u;
    ++checked;
  }
  EXPECT_GT(checked, 190000u);
  EXPECT_EQ(f32_to_bf16_bits(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16_bits(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie, even stays
  EXPECT_EQ(f32_to_bf16_bits(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(f32_to_bf16_bits(std::numeric_limits<float>::max()), 0x7f80);  // overflow to inf
  EXPECT_EQ(f32_to_bf16_bits(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(f32_to_bf16_bits(std::bit_cast<float>(0x00018000u)), 0x0002);  // subnormal tie, odd rounds up
}

TEST(CoreConvert, Bf16NanStaysNanAndWideningIsExact) {
  for (uint32_t bits : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fbfffffu, 0xff800001u, 0x7fffffffu}) {
    const uint16_t h = f32_to_bf16_bits(std::bit_cast<float>(bits));
    EXPECT_EQ(h, static_cast<uint16_t>((bits >> 16) | 0x40)) << std::hex << bits;  // quiet, top payload kept
    EXPECT_TRUE(std::isnan(bf16_bits_to_f32(h)));
  }
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = bf16_bits_to_f32(static_cast<uint16_t>(h));
    if ((h & 0x7fff) > 0x7f80) {
      ASSERT_TRUE(std::isnan(f));
    } else {
      ASSERT_EQ(static_cast<double>(f), bf16_value(static_cast<uint16_t>(h))) << h;
      ASSERT_EQ(f32_to_bf16_bits(f), h) << h;  // round trip
    }
  }
}

TEST(CoreConvert, F16MatchesIeeeHalf) {
  std::vector<float> xs = edge_floats();
  for (float x : random_bit_patterns(200000, 8)) xs.push_back(x);
  // Dense coverage of the FP16 range, where the random patterns are sparse.
  Rng rng(9);
  for (int i = 0; i < 200000; ++i) xs.push_back(static_cast<float>(std::ldexp(rng.uniform() * 2 - 1, static_cast<int>(rng.below(44)) - 27)));
  for (float x : xs) {
    const uint32_t u = std::bit_cast<uint32_t>(x);
    if (is_nan32(u)) continue;
    ASSERT_EQ(f32_to_f16_bits(x), reference_f16(x)) << std::hex << "bits 0x" << u << " = " << x;
  }
  EXPECT_EQ(f32_to_f16_bits(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16_bits(65520.0f), 0x7c00);  // halfway to the next binade: ties to even = inf
  EXPECT_EQ(f32_to_f16_bits(-1e6f), 0xfc00);
  EXPECT_EQ(f32_to_f16_bits(0x1p-24f), 0x0001);  // smallest subnormal
  EXPECT_EQ(f32_to_f16_bits(0x1p-25f), 0x0000);  // tie with 0: even
  EXPECT_EQ(f32_to_f16_bits(0x1.8p-24f), 0x0002);  // 1.5 ulp: tie, to even
  EXPECT_EQ(f32_to_f16_bits(0x1.ff8p-15f), 0x03ff);  // largest subnormal
  EXPECT_EQ(f32_to_f16_bits(0x1.ffcp-15f), 0x0400);  // tie above it: rounds up into the smallest normal
}

TEST(CoreConvert, F16NanStaysNanAndWideningIsExact) {
  for (uint32_t bits : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fbfe000u, 0xff800001u, 0x7fffffffu}) {
    const uint16_t h = f32_to_f16_bits(std::bit_cast<float>(bits));
    EXPECT_EQ(h, static_cast<uint16_t>(((bits >> 16) & 0x8000) | 0x7e00 | ((bits >> 13) & 0x3ff)))
        << std::hex << bits;
    EXPECT_TRUE(std::isnan(f16_bits_to_f32(h)));
  }
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_bits_to_f32(static_cast<uint16_t>(h));
    if ((h & 0x7fff) > 0x7c00) {
      // NaN: payload kept, quiet bit set.
      ASSERT_EQ(std::bit_cast<uint32_t>(f), ((h & 0x8000u) << 16) | 0x7fc00000u | ((h & 0x3ffu) << 13)) << h;
    } else {
      ASSERT_EQ(std::bit_cast<uint32_t>(f), std::bit_cast<uint32_t>(reference_f16_to_f32(static_cast<uint16_t>(h))))
          << h;
      ASSERT_EQ(f32_to_f16_bits(f), h) << h;  // round trip
    }
  }
}

// The bulk functions take the F16C / AVX-512 path where the CPU has one; the
// *_scalar functions are the portable path. Same bits, NaN payloads and
// lengths that leave a tail included.
TEST(CoreConvert, DispatchedAndScalarPathsGiveIdenticalBits) {
  std::vector<float> xs = edge_floats();
  for (float x : random_bit_patterns(100003, 10)) xs.push_back(x);
  for (size_t n : {xs.size(), size_t{1}, size_t{7}, size_t{9}, size_t{0}}) {
    SCOPED_TRACE(n);
    std::vector<uint16_t> fast(n + 1, 0xabcd), slow(n + 1, 0xabcd);
    f32_to_bf16(fast.data(), xs.data(), static_cast<int64_t>(n));
    f32_to_bf16_scalar(slow.data(), xs.data(), static_cast<int64_t>(n));
    ASSERT_EQ(fast, slow);  // the sentinel past the end is untouched in both
    f32_to_f16(fast.data(), xs.data(), static_cast<int64_t>(n));
    f32_to_f16_scalar(slow.data(), xs.data(), static_cast<int64_t>(n));
    ASSERT_EQ(fast, slow);
  }
  std::vector<uint16_t> all(0x10000 + 5);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i * 0x9e37u);
  for (size_t n : {all.size(), size_t{3}}) {
    std::vector<float> fast(n), slow(n);
    auto bits = [](const std::vector<float>& v) {
      std::vector<uint32_t> b;
      for (float f : v) b.push_back(std::bit_cast<uint32_t>(f));
      return b;
    };
    bf16_to_f32(fast.data(), all.data(), static_cast<int64_t>(n));
    bf16_to_f32_scalar(slow.data(), all.data(), static_cast<int64_t>(n));
    ASSERT_EQ(bits(fast), bits(slow));
    f16_to_f32(fast.data(), all.data(), static_cast<int64_t>(n));
    f16_to_f32_scalar(slow.data(), all.data(), static_cast<int64_t>(n));
    ASSERT_EQ(bits(fast), bits(slow));
  }
#ifndef SPARTA_NO_TARGET_CLONES
  // This test machine class has F16C; a silent fall to the scalar path would
  // make the comparison above vacuous.
  if (__builtin_cpu_supports("f16c")) {
    EXPECT_TRUE(f16_conversion_uses_f16c());
  }
#endif
}
