#include "ops/rope.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "core/error.h"
#include "ops/elementwise.h"

namespace sparta::ops {
namespace {

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;

struct RopeTable {
  int64_t positions = 0;        // rows: positions [0, positions)
  int64_t half = 0;             // columns: R / 2
  std::vector<float> cos, sin;  // (positions, half)
};

// Tables are grown to the next power of two of the positions needed, so a
// decoding loop (T = 1, pos0 = 0, 1, 2, ...) rebuilds O(log n) times, not n.
// D here is the number of rotated dims R.
std::shared_ptr<const RopeTable> rope_table(int64_t positions, int64_t D, float base) {
  static std::mutex mutex;
  static std::map<std::pair<int64_t, uint32_t>, std::shared_ptr<const RopeTable>> cache;
  const auto key = std::make_pair(D, std::bit_cast<uint32_t>(base));
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end() && it->second->positions >= positions) return it->second;

  auto table = std::make_shared<RopeTable>();
  table->positions =
      static_cast<int64_t>(std::bit_ceil(static_cast<uint64_t>(std::max<int64_t>(positions, 64))));
  table->half = D / 2;
  const size_t size = static_cast<size_t>(table->positions * table->half);
  table->cos.resize(size);
  table->sin.resize(size);
  for (int64_t i = 0; i < table->half; ++i) {
    const double theta =
        std::pow(static_cast<double>(base), -2.0 * static_cast<double>(i) / static_cast<double>(D));
    for (int64_t p = 0; p < table->positions; ++p) {
      const double angle = static_cast<double>(p) * theta;
      table->cos[p * table->half + i] = static_cast<float>(std::cos(angle));
      table->sin[p * table->half + i] = static_cast<float>(std::sin(angle));
    }
  }
  cache[key] = table;
  return table;
}

// One head: (x1, x2) -> (x1 c - x2 s, x2 c + x1 s); sign = -1 rotates back.
SPARTA_KERNEL_CLONES void rotate_head(float* __restrict x1, float* __restrict x2, const float* __restrict c,
                                      const float* __restrict s, int64_t half, float sign) {
  for (int64_t i = 0; i < half; ++i) {
    const float a = x1[i], b = x2[i], sn = sign * s[i];
    x1[i] = a * c[i] - b * sn;
    x2[i] = b * c[i] + a * sn;
  }
}

void rope_apply(const char* op, float* x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t ld,
                int64_t pos0, float base, int64_t rotary, float sign) {
  SPARTA_CHECK(D > 0 && D % 2 == 0, "[", op, "] head dim D=", D, " must be even and positive");
  if (rotary == 0) rotary = D;
  SPARTA_CHECK(rotary >= 2 && rotary <= D && rotary % 2 == 0, "[", op, "] rotary dims ", rotary,
               " must be even and in [2, D=", D, "]");
  SPARTA_CHECK(B >= 0 && T >= 0 && H > 0 && pos0 >= 0, "[", op, "] invalid sizes B=", B, " T=", T, " H=", H,
               " pos0=", pos0);
  SPARTA_CHECK(ld >= H * D, "[", op, "] row stride ld=", ld, " is smaller than H*D=", H * D);
  SPARTA_CHECK(base > 0.0f && std::isfinite(base), "[", op, "] base must be positive, got ", base);
  if (B == 0 || T == 0) return;
  const std::shared_ptr<const RopeTable> table = rope_table(pos0 + T, rotary, base);
  const int64_t half = rotary / 2;
  const float* cos_t = table->cos.data();
  const float* sin_t = table->sin.data();
#pragma omp parallel for schedule(static) if (B * T * H * D >= kParallelMin)
  for (int64_t bt = 0; bt < B * T; ++bt) {
    const int64_t pos = pos0 + bt % T;
    float* row = x + bt * ld;
    for (int64_t h = 0; h < H; ++h)
      rotate_head(row + h * D, row + h * D + half, cos_t + pos * half, sin_t + pos * half, half, sign);
  }
}

}  // namespace

void rope_forward(float* x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t ld, int64_t pos0, float base,
                  int64_t rotary) {
  rope_apply("rope", x, B, T, H, D, ld, pos0, base, rotary, 1.0f);
}

void rope_backward(float* dx, int64_t B, int64_t T, int64_t H, int64_t D, int64_t ld, int64_t pos0,
                   float base, int64_t rotary) {
  rope_apply("rope backward", dx, B, T, H, D, ld, pos0, base, rotary, -1.0f);
}

}  // namespace sparta::ops
