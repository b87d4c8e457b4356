#include "ops/attention_rows.h"

#include <cstring>

#include "ops/elementwise.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // see elementwise.h: vectors never cross a call boundary

namespace sparta::ops {

SPARTA_KERNEL_CLONES void softmax_grad_row(float* s, float* dp, int64_t n, int64_t nv, float lse, float di) {
  const size_t rest = sizeof(float) * static_cast<size_t>(n - nv);
  std::memset(s + nv, 0, rest);
  std::memset(dp + nv, 0, rest);
  const simd::f32v lv = simd::splat(lse), dv = simd::splat(di);
  simd::for_blocks(nv, [&](int64_t i, int64_t c, auto tag) SPARTA_SIMD_LAMBDA {
    constexpr bool kPartial = decltype(tag)::value;
    const simd::f32v p = simd::exp(simd::load_n<kPartial>(s + i, c, 0.0f) - lv);
    simd::store_n<kPartial>(s + i, p, c);
    simd::store_n<kPartial>(dp + i, p * (simd::load_n<kPartial>(dp + i, c, 0.0f) - dv), c);
  });
}

SPARTA_KERNEL_CLONES float dot_row(const float* a, const float* b, int64_t n) {
  const simd::f32v acc = simd::reduce_blocks(n, simd::splat(0.0f), simd::Sum{},
                                             [&](int64_t i, int64_t c, auto tag) SPARTA_SIMD_LAMBDA {
                                               constexpr bool kPartial = decltype(tag)::value;
                                               return simd::load_n<kPartial>(a + i, c, 0.0f) *
                                                      simd::load_n<kPartial>(b + i, c, 0.0f);
                                             });
  return simd::hsum(acc);
}

std::vector<float> softmax_backward_di(const float* dout, const float* out, const AttnDims& d) {
  const int64_t T = d.T, H = d.H, D = d.D;
  std::vector<float> di(static_cast<size_t>(d.B * H * T));
#pragma omp parallel for schedule(static)
  for (int64_t bt = 0; bt < d.B * T; ++bt)
    for (int64_t h = 0; h < H; ++h)
      di[static_cast<size_t>(((bt / T) * H + h) * T + bt % T)] =
          dot_row(dout + (bt * H + h) * D, out + (bt * H + h) * D, D);
  return di;
}

}  // namespace sparta::ops
