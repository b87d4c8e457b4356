// DSA's summaries of one head and the arithmetic on rows they are built
// with: block and group means (keys and values), the per-dimension key
// boxes the bound ranking needs, and the group score products of a chunk of
// query rows (one sgemm each). Forward, backward and the decode memo all
// build their means through mean_rows and group_mean, so they agree bit for
// bit. The row kernels here are cloned per ISA (SPARTA_KERNEL_CLONES).
#include <algorithm>
#include <cmath>

#include "core/gemm.h"
#include "ops/attention_dsa_internal.h"
#include "ops/elementwise.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // see elementwise.h: vectors never cross a call boundary

namespace sparta::dsa_internal {

namespace simd = ops::simd;

SPARTA_KERNEL_CLONES void axpy_row(float* y, float a, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

SPARTA_KERNEL_CLONES void weighted_rows_sum(float* y, bool accumulate, float a, const float* w,
                                            const int32_t* ids, int64_t n, const float* X, int64_t ldx,
                                            int64_t D) {
  constexpr int64_t kW = 4 * simd::kLanes;  // four vectors of running sums
  int64_t c0 = 0;
  for (; c0 + kW <= D; c0 += kW) {
    simd::f32v s0 = simd::splat(0.0f), s1 = s0, s2 = s0, s3 = s0;
    if (accumulate) {
      s0 = simd::load(y + c0);
      s1 = simd::load(y + c0 + simd::kLanes);
      s2 = simd::load(y + c0 + 2 * simd::kLanes);
      s3 = simd::load(y + c0 + 3 * simd::kLanes);
    }
    for (int64_t e = 0; e < n; ++e) {
      const float* x = X + ids[e] * ldx + c0;
      const simd::f32v we = simd::splat(a * w[e]);
      s0 += we * simd::load(x);
      s1 += we * simd::load(x + simd::kLanes);
      s2 += we * simd::load(x + 2 * simd::kLanes);
      s3 += we * simd::load(x + 3 * simd::kLanes);
    }
    simd::store(y + c0, s0);
    simd::store(y + c0 + simd::kLanes, s1);
    simd::store(y + c0 + 2 * simd::kLanes, s2);
    simd::store(y + c0 + 3 * simd::kLanes, s3);
  }
  if (c0 == D) return;
  if (!accumulate) std::fill(y + c0, y + D, 0.0f);
  for (int64_t e = 0; e < n; ++e) axpy_row(y + c0, a * w[e], X + ids[e] * ldx + c0, D - c0);
}

SPARTA_KERNEL_CLONES void mean_rows(float* out, const float* x, int64_t t0, int64_t t1, int64_t ld,
                                    int64_t D) {
  std::fill(out, out + D, 0.0f);
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t e = 0; e < D; ++e) out[e] += x[t * ld + e];
  const float inv = 1.0f / static_cast<float>(t1 - t0);
  for (int64_t e = 0; e < D; ++e) out[e] *= inv;
}

void group_mean(float* out, const float* block_means, int64_t stride, const DsaShape& s, int64_t g,
                int64_t D) {
  std::fill(out, out + D, 0.0f);
  for (int64_t kb = g * s.G; kb < (g + 1) * s.G; ++kb)
    axpy_row(out, static_cast<float>(s.block_len(kb)), block_means + kb * stride, D);
  const float inv = 1.0f / static_cast<float>(s.group_len(g));
  for (int64_t e = 0; e < D; ++e) out[e] *= inv;
}

SPARTA_KERNEL_CLONES void minmax_rows(float* mx, float* mn, const float* x, int64_t t0, int64_t t1,
                                      int64_t ld, int64_t D) {
  std::copy(x + t0 * ld, x + t0 * ld + D, mx);
  std::copy(x + t0 * ld, x + t0 * ld + D, mn);
  for (int64_t t = t0 + 1; t < t1; ++t)
    for (int64_t e = 0; e < D; ++e) {
      const float v = x[t * ld + e];
      mx[e] = v > mx[e] ? v : mx[e];
      mn[e] = v < mn[e] ? v : mn[e];
    }
}

void group_minmax(float* mx, float* mn, const float* bmax, const float* bmin, int64_t stride,
                  const DsaShape& s, int64_t g, int64_t D) {
  std::copy(bmax + g * s.G * stride, bmax + g * s.G * stride + D, mx);
  std::copy(bmin + g * s.G * stride, bmin + g * s.G * stride + D, mn);
  for (int64_t kb = g * s.G + 1; kb < (g + 1) * s.G; ++kb)
    for (int64_t e = 0; e < D; ++e) {
      mx[e] = std::max(mx[e], bmax[kb * stride + e]);
      mn[e] = std::min(mn[e], bmin[kb * stride + e]);
    }
}

void HeadSummaries::compute(const DsaShape& s, const float* k, const float* v, int64_t ld, int64_t D,
                            bool boxes) {
  means(Kb, Kg, s, k, ld, D);
  if (v) means(Vb, Vg, s, v, ld, D);
  if (!s.bound || !boxes) return;
  Kbmax.resize(static_cast<size_t>(s.nkb * D));
  Kbmin.resize(Kbmax.size());
  for (int64_t kb = 0; kb < s.nkb; ++kb)
    minmax_rows(Kbmax.data() + kb * D, Kbmin.data() + kb * D, k, kb * s.block, kb * s.block + s.block_len(kb),
                ld, D);
  Kgmax.resize(static_cast<size_t>(s.ng * D));
  Kgmin.resize(Kgmax.size());
  for (int64_t g = 0; g < s.ng; ++g)
    group_minmax(Kgmax.data() + g * D, Kgmin.data() + g * D, Kbmax.data(), Kbmin.data(), D, s, g, D);
  KgCR.resize(static_cast<size_t>(s.ng * 2 * D));
  for (int64_t g = 0; g < s.ng; ++g)
    for (int64_t e = 0; e < D; ++e) {
      const float mx = Kgmax[g * D + e], mn = Kgmin[g * D + e];
      KgCR[g * 2 * D + e] = 0.5f * (mx + mn);
      KgCR[g * 2 * D + D + e] = 0.5f * (mx - mn);
    }
}

RankBoxes HeadSummaries::boxes(const DsaShape& s, int64_t D) const {
  if (!s.bound) return {};
  return {Kbmax.data(), Kbmin.data(), Kgmax.data(), Kgmin.data(), D, D};
}

void HeadSummaries::means(std::vector<float>& mb, std::vector<float>& mg, const DsaShape& s, const float* x,
                          int64_t ld, int64_t D) {
  mb.resize(static_cast<size_t>(s.nkb * D));
  for (int64_t kb = 0; kb < s.nkb; ++kb)
    mean_rows(mb.data() + kb * D, x, kb * s.block, kb * s.block + s.block_len(kb), ld, D);
  mg.resize(static_cast<size_t>(s.ng * D));
  for (int64_t g = 0; g < s.ng; ++g) group_mean(mg.data() + g * D, mb.data(), D, s, g, D);
}

void score_groups(float* CG, const float* q, int64_t ld, const HeadSummaries& hs, const DsaShape& s,
                  int64_t r0, int64_t nr, int64_t D) {
  const int64_t n = s.groups_read(r0, nr);  // columns [n, ng) are left unset
  if (n == 0) return;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  sgemm(false, true, nr, n, D, scale, q + r0 * ld, ld, hs.Kg.data(), D, 0.0f, CG, s.ng);
  for (int64_t g = 0; g < n; ++g) {
    const float lg = std::log(static_cast<float>(s.group_len(g)));
    for (int64_t i = 0; i < nr; ++i) CG[i * s.ng + g] += lg;
  }
}

void rank_groups_by_bound(float* RG, std::vector<float>& Qa, const float* q, int64_t ld,
                          const HeadSummaries& hs, const DsaShape& s, int64_t r0, int64_t nr, int64_t D) {
  const int64_t n = s.groups_read(r0, nr);  // as score_groups
  if (n == 0) return;
  Qa.resize(static_cast<size_t>(nr * 2 * D));
  for (int64_t i = 0; i < nr; ++i)
    for (int64_t e = 0; e < D; ++e) {
      const float x = q[(r0 + i) * ld + e];
      Qa[i * 2 * D + e] = x;
      Qa[i * 2 * D + D + e] = std::fabs(x);
    }
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  sgemm(false, true, nr, n, 2 * D, scale, Qa.data(), 2 * D, hs.KgCR.data(), 2 * D, 0.0f, RG, s.ng);
}

}  // namespace sparta::dsa_internal
