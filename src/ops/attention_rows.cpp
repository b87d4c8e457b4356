#include "ops/attention_rows.h"

#include <cstring>
#include <limits>

#include "ops/elementwise.h"
#include "ops/tile_gemm.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // see elementwise.h: vectors never cross a call boundary

namespace sparta::ops {

SPARTA_KERNEL_CLONES void softmax_grad_row(float* s, float* dp, int64_t n, int64_t nv, float lse, float di) {
  // (memset's pointer must not be null even for zero bytes: an empty row may have none)
  if (n > nv) {
    const size_t rest = sizeof(float) * static_cast<size_t>(n - nv);
    std::memset(s + nv, 0, rest);
    std::memset(dp + nv, 0, rest);
  }
  const simd::f32v lv = simd::splat(lse), dv = simd::splat(di);
  simd::for_blocks(nv, [&](int64_t i, int64_t c, auto tag) SPARTA_SIMD_LAMBDA {
    constexpr bool kPartial = decltype(tag)::value;
    const simd::f32v p = simd::exp(simd::load_n<kPartial>(s + i, c, 0.0f) - lv);
    simd::store_n<kPartial>(s + i, p, c);
    simd::store_n<kPartial>(dp + i, p * (simd::load_n<kPartial>(dp + i, c, 0.0f) - dv), c);
  });
}

SPARTA_KERNEL_CLONES float softmax_exp_row(float* s, int64_t n, int64_t nv, float* sum) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  if (n > nv) std::memset(s + nv, 0, sizeof(float) * static_cast<size_t>(n - nv));
  *sum = 0.0f;
  const simd::f32v vmx = simd::reduce_blocks(nv, simd::splat(kNegInf), simd::Max{},
                                             [&](int64_t i, int64_t c, auto tag) SPARTA_SIMD_LAMBDA {
                                               return simd::load_n<decltype(tag)::value>(s + i, c, kNegInf);
                                             });
  const float mx = nv > 0 ? simd::hmax(vmx) : kNegInf;
  if (mx == kNegInf) {  // exp(-inf - -inf) would be NaN
    if (nv > 0) std::memset(s, 0, sizeof(float) * static_cast<size_t>(nv));
    return kNegInf;
  }
  const simd::f32v mv = simd::splat(mx);
  const simd::f32v vsum = simd::reduce_blocks(
      nv, simd::splat(0.0f), simd::Sum{}, [&](int64_t i, int64_t c, auto tag) SPARTA_SIMD_LAMBDA {
        constexpr bool kPartial = decltype(tag)::value;
        // Padding lanes read -inf and give exp = 0, the identity of Sum.
        const simd::f32v p = simd::exp(simd::load_n<kPartial>(s + i, c, kNegInf) - mv);
        simd::store_n<kPartial>(s + i, p, c);
        return p;
      });
  *sum = simd::hsum(vsum);
  return mx;
}

SPARTA_KERNEL_CLONES void exp_shifted(float* x, int64_t n, float shift) {
  const simd::f32v sv = simd::splat(shift);
  simd::for_blocks(n, [&](int64_t i, int64_t c, auto tag) SPARTA_SIMD_LAMBDA {
    constexpr bool kPartial = decltype(tag)::value;
    simd::store_n<kPartial>(x + i, simd::exp(simd::load_n<kPartial>(x + i, c, 0.0f) - sv), c);
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

std::vector<float> transposed_heads(const float* x, const AttnDims& d) {
  std::vector<float> xt(static_cast<size_t>(d.B * d.H * d.D * d.T));
#pragma omp parallel for schedule(static)
  for (int64_t bh = 0; bh < d.B * d.H; ++bh)
    transpose_into(xt.data() + bh * d.D * d.T, d.T, x + (bh / d.H) * d.T * d.ld + (bh % d.H) * d.D, d.ld, d.T, d.D);
  return xt;
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
