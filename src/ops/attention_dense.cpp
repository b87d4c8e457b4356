#include "ops/attention_dense.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/gemm.h"
#include "core/memory.h"
#include "ops/block_sparse_attention.h"

namespace sparta {
namespace {

// Tile sizes. A (kBq × kBk) score tile is 128 KiB; with its dP twin and the
// tile's K, V, dK, dV rows it stays inside a 2 MiB L2, while sgemm calls of
// these shapes (64 × 512 × 64 and transposes) still reach ~85% of the rate
// of one large sgemm.
constexpr int64_t kBq = 64;
constexpr int64_t kBk = 512;
// Backward splits every head's keys so that there are at least this many
// work items; a fixed number (not the thread count) keeps results
// independent of the thread count.
constexpr int64_t kMinBackwardItems = 16;
// Decode scores this many cached keys per step (stack tile).
constexpr int64_t kDecodeTile = 256;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Owning scratch through the memory tracker: one allocation per call, never
// in the inner loops. Score tiles are zero-filled so that the padding lanes
// the row kernels read are initialized.
class Scratch {
 public:
  Scratch(int64_t n, bool zero) : bytes_(sizeof(float) * static_cast<size_t>(n)) {
    p_ = static_cast<float*>(tracked_alloc(bytes_));
    if (zero) std::memset(p_, 0, bytes_);
  }
  ~Scratch() { tracked_free(p_, bytes_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* get() { return p_; }

 private:
  size_t bytes_;
  float* p_;
};

// c ? a : b on bit patterns. A plain ?: on floats becomes a branch that GCC
// (under the default -ftrapping-math) will not turn back into a vector blend,
// which would keep the exp loops below scalar.
[[gnu::always_inline]] inline float select_bits(bool c, float a, float b) {
  const uint32_t m = 0u - static_cast<uint32_t>(c);
  return std::bit_cast<float>((std::bit_cast<uint32_t>(a) & m) | (std::bit_cast<uint32_t>(b) & ~m));
}

// exp(x) in float without calls or branches, so the row loops below
// vectorize: Cephes expf (x = n·ln2 + r, |r| <= ln2/2, degree-6 polynomial;
// measured <= 1.4 ulp on [-87.3, 88]). Inputs below ln(FLT_MIN), including
// -inf from masking, give exactly 0 instead of a denormal; inputs above 88
// saturate at exp(88); NaN propagates.
[[gnu::always_inline]] inline float fast_exp(float x) {
  float xc = select_bits(x < -88.0f, -88.0f, x);
  xc = select_bits(xc > 88.0f, 88.0f, xc);
  // n = round(xc / ln2) by the 1.5·2^23 trick: adding it leaves n in the low
  // mantissa bits (no float->int conversion, no floor, no branch).
  const float big = 12582912.0f;
  const float nb = xc * 1.44269504088896341f + big;
  const float n = nb - big;
  const int32_t ni = std::bit_cast<int32_t>(nb) - std::bit_cast<int32_t>(big);
  const float r = xc - n * 0.693359375f - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const float two_n = std::bit_cast<float>((ni + 127) << 23);  // ni in [-127, 127]
  return select_bits(x < -87.33654f, 0.0f, y * two_n);
}

#ifdef SPARTA_NO_TARGET_CLONES  // CMake SPARTA_PORTABLE_KERNELS: baseline x86-64 only
#define SPARTA_ATTN_CLONES
#else
#define SPARTA_ATTN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif

// The two exp row kernels below run over whole groups of kLanes floats,
// masking the padding, instead of ending in a scalar remainder loop: with
// causal masking most diagonal-tile rows have a ragged length, and a scalar
// exp tail costs as much as hundreds of vector lanes. Callers guarantee
// that rows have room for lanes_up(n) floats holding initialized values.
constexpr int64_t kLanes = 16;
constexpr int64_t lanes_up(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }
static_assert(kBk % kLanes == 0 && kDecodeTile % kLanes == 0, "score tiles must hold whole lane groups");

// Online-softmax step for one query row against one key tile. s holds the
// scaled scores of n keys, of which the first `valid` are unmasked. On
// return s[j] = exp(s[j] - m_new) for j < valid and 0 for the rest of the
// lanes_up(n) entries, m/l are the running max and sum, and the result is
// exp(m_old - m_new): the factor by which the row's output accumulated so
// far must be rescaled.
SPARTA_ATTN_CLONES float softmax_tile_row(float* s, int64_t n, int64_t valid, float* m, float* l) {
  // Only the lane groups holding unmasked scores are visited; the rest is
  // cleared. 32-bit lane indices compare at the width of the float data.
  const int32_t nv = static_cast<int32_t>(std::clamp<int64_t>(valid, 0, n));
  const int32_t np = static_cast<int32_t>(lanes_up(nv));
  std::memset(s + np, 0, sizeof(float) * static_cast<size_t>(lanes_up(n) - np));
  if (nv == 0) return 1.0f;
  float mx = kNegInf;
#pragma omp simd reduction(max : mx)
  for (int32_t j = 0; j < np; ++j) {
    const float x = select_bits(j < nv, s[j], kNegInf);
    mx = x > mx ? x : mx;  // (std::max's reference form stays scalar)
  }
  const float m_new = std::max(*m, mx);
  const float alpha = std::exp(*m - m_new);  // 0 on the first tile (m_old = -inf)
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int32_t j = 0; j < np; ++j) {
    const float p = select_bits(j < nv, fast_exp(s[j] - m_new), 0.0f);
    s[j] = p;
    sum += p;
  }
  *m = m_new;
  *l = *l * alpha + sum;
  return alpha;
}

// Backward, one query row of one key tile: recompute P = exp(S - lse) in s
// and turn dP into dS = P ⊙ (dP - Di) in place; masked entries (j >= valid,
// up to lanes_up(n)) become 0 in both.
SPARTA_ATTN_CLONES void grad_scores_row(float* s, float* dp, int64_t n, int64_t valid, float lse, float di) {
  const int32_t nv = static_cast<int32_t>(std::clamp<int64_t>(valid, 0, n));
  const int32_t np = static_cast<int32_t>(lanes_up(nv));
  const size_t rest = sizeof(float) * static_cast<size_t>(lanes_up(n) - np);
  std::memset(s + np, 0, rest);
  std::memset(dp + np, 0, rest);
#pragma omp simd
  for (int32_t j = 0; j < np; ++j) {
    const bool keep = j < nv;
    const float p = select_bits(keep, fast_exp(s[j] - lse), 0.0f);
    s[j] = p;
    dp[j] = select_bits(keep, p * (dp[j] - di), 0.0f);
  }
}

SPARTA_ATTN_CLONES void scale_row(float* x, int64_t n, float a) {
  for (int64_t j = 0; j < n; ++j) x[j] *= a;
}

SPARTA_ATTN_CLONES void add_row(float* y, const float* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += x[j];
}

SPARTA_ATTN_CLONES float dot_row(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += a[j] * b[j];
  return s;
}

// Decode: scores s[j] = scale * q·K_j for n cached keys with row stride ldk.
SPARTA_ATTN_CLONES void decode_scores(float* s, const float* q, const float* K, int64_t n, int64_t ldk,
                                      int64_t D, float scale) {
  for (int64_t j = 0; j < n; ++j) {
    const float* kj = K + j * ldk;
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < D; ++c) acc += q[c] * kj[c];
    s[j] = acc * scale;
  }
}

// Decode: y = alpha * y + Σ_j p[j] V_j over n cached values with row stride ldv.
SPARTA_ATTN_CLONES void decode_accumulate(float* y, float alpha, const float* p, const float* V, int64_t n,
                                          int64_t ldv, int64_t D) {
  for (int64_t c = 0; c < D; ++c) y[c] *= alpha;
  for (int64_t j = 0; j < n; ++j) {
    const float pj = p[j];
    const float* vj = V + j * ldv;
    for (int64_t c = 0; c < D; ++c) y[c] += pj * vj[c];
  }
}

// Number of causally visible keys of query row t within the key tile
// starting at k0 that holds n keys.
inline int64_t visible(bool causal, int64_t t, int64_t k0, int64_t n) {
  return causal ? std::clamp<int64_t>(t + 1 - k0, 0, n) : n;
}

// Key-range split of one head for backward, from the shape alone. Ranges
// are kBq-aligned and carry equal shares of the work: for causal attention
// key j is seen by T - j queries, so range p ends where the triangle's
// area reaches (p+1)/n of the total.
std::vector<int64_t> backward_key_ranges(const AttnDims& d) {
  const int64_t key_blocks = (d.T + kBq - 1) / kBq;
  const int64_t bh = std::max<int64_t>(d.B * d.H, 1);
  const int64_t want = std::min(key_blocks, std::max<int64_t>(1, (kMinBackwardItems + bh - 1) / bh));
  std::vector<int64_t> bounds{0};
  for (int64_t p = 1; p < want; ++p) {
    const double f = static_cast<double>(p) / static_cast<double>(want);
    const double x = d.causal ? d.T * (1.0 - std::sqrt(1.0 - f)) : d.T * f;
    const int64_t xb = std::llround(x / kBq) * kBq;
    if (xb > bounds.back() && xb < d.T) bounds.push_back(xb);
  }
  bounds.push_back(d.T);
  return bounds;
}

// Forward of one (b, h, query block): online softmax over key tiles.
void forward_block(float* out, float* lse, const float* q, const float* k, const float* v, const AttnDims& d,
                   int64_t b, int64_t h, int64_t q0, float* S) {
  const int64_t T = d.T, H = d.H, D = d.D, ld = d.ld;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t nq = std::min(kBq, T - q0);
  const int64_t kend = d.causal ? q0 + nq : T;
  const float* Q = q + (b * T + q0) * ld + h * D;
  float* O = out + ((b * T + q0) * H + h) * D;
  const int64_t ldo = H * D;
  float m[kBq], l[kBq];
  std::fill(m, m + nq, kNegInf);
  std::fill(l, l + nq, 0.0f);
  for (int64_t k0 = 0; k0 < kend; k0 += kBk) {
    const int64_t nk = std::min(kBk, kend - k0);
    const float* K = k + (b * T + k0) * ld + h * D;
    const float* V = v + (b * T + k0) * ld + h * D;
    sgemm(false, true, nq, nk, D, scale, Q, ld, K, ld, 0.0f, S, kBk);
    for (int64_t i = 0; i < nq; ++i) {
      const float alpha = softmax_tile_row(S + i * kBk, nk, visible(d.causal, q0 + i, k0, nk), &m[i], &l[i]);
      if (k0 > 0 && alpha != 1.0f) scale_row(O + i * ldo, D, alpha);
    }
    sgemm(false, false, nq, D, nk, 1.0f, S, kBk, V, ld, k0 > 0 ? 1.0f : 0.0f, O, ldo);
  }
  for (int64_t i = 0; i < nq; ++i) {
    // Every row sees at least its own key (causal) or all keys, so l > 0.
    scale_row(O + i * ldo, D, 1.0f / l[i]);
    lse[(b * H + h) * T + q0 + i] = m[i] + std::log(l[i]);
  }
}

// Backward of one (b, h, key range [ka, kb)): dK and dV of those keys are
// complete when it returns; the dQ contribution of those keys goes to dQ
// (rows [q_first, T), row stride ldq). S and dP are kBq × kBk tiles.
void backward_range(float* dQ, int64_t ldq, int64_t q_first, float* dk, float* dv, const float* dout,
                    const float* lse, const float* Di, const float* q, const float* k, const float* v,
                    const AttnDims& d, int64_t b, int64_t h, int64_t ka, int64_t kb, float* S, float* dP) {
  const int64_t T = d.T, H = d.H, D = d.D, ld = d.ld;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const size_t row_bytes = sizeof(float) * static_cast<size_t>(D);
  const int64_t head = (b * T) * ld + h * D;  // offset of token (b, 0), head h
  for (int64_t t = ka; t < kb; ++t) {
    std::memset(dk + head + t * ld, 0, row_bytes);
    std::memset(dv + head + t * ld, 0, row_bytes);
  }
  for (int64_t t = q_first; t < T; ++t) std::memset(dQ + (t - q_first) * ldq, 0, row_bytes);
  const float* lse_bh = lse + (b * H + h) * T;
  const float* Di_bh = Di + (b * H + h) * T;
  for (int64_t c0 = ka; c0 < kb; c0 += kBk) {
    const int64_t nk = std::min(kBk, kb - c0);
    const float* K = k + head + c0 * ld;
    const float* V = v + head + c0 * ld;
    float* dK = dk + head + c0 * ld;
    float* dV = dv + head + c0 * ld;
    // Causal: the first query block that sees key c0 is the one holding it.
    for (int64_t q0 = d.causal ? c0 / kBq * kBq : 0; q0 < T; q0 += kBq) {
      const int64_t nq = std::min(kBq, T - q0);
      const int64_t nke = d.causal ? std::min(nk, q0 + nq - c0) : nk;  // keys past the block are all masked
      const float* Q = q + head + q0 * ld;
      const float* dO = dout + ((b * T + q0) * H + h) * D;
      sgemm(false, true, nq, nke, D, scale, Q, ld, K, ld, 0.0f, S, kBk);
      sgemm(false, true, nq, nke, D, 1.0f, dO, H * D, V, ld, 0.0f, dP, kBk);
      for (int64_t i = 0; i < nq; ++i)
        grad_scores_row(S + i * kBk, dP + i * kBk, nke, visible(d.causal, q0 + i, c0, nke), lse_bh[q0 + i],
                        Di_bh[q0 + i]);
      sgemm(true, false, nke, D, nq, 1.0f, S, kBk, dO, H * D, 1.0f, dV, ld);
      sgemm(true, false, nke, D, nq, scale, dP, kBk, Q, ld, 1.0f, dK, ld);
      sgemm(false, false, nq, D, nke, scale, dP, kBk, K, ld, 1.0f, dQ + (q0 - q_first) * ldq, ldq);
    }
  }
}

}  // namespace

void DenseAttention::forward(float* out, float* lse, const float* q, const float* k, const float* v,
                             const AttnDims& d, std::unique_ptr<AttnSaved>* saved) {
  check_attn_dims(d, "attention.dense");
  if (saved) saved->reset();
  if (d.B == 0 || d.T == 0) return;
  if (d.bf16_products) return ops::block_sparse_attention_forward(out, lse, q, k, v, d, ops::full_selection(d, kBq));
  const int64_t nqb = (d.T + kBq - 1) / kBq;
  const int64_t items = d.B * d.H * nqb;
  const int nthreads = omp_get_max_threads();
  Scratch scratch(static_cast<int64_t>(nthreads) * kBq * kBk, true);
#pragma omp parallel num_threads(nthreads)
  {
    float* S = scratch.get() + static_cast<int64_t>(omp_get_thread_num()) * kBq * kBk;
    // Consecutive items share a head, so its keys and values stay in cache.
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t bh = it / nqb;
      const int64_t qb = nqb - 1 - it % nqb;
      forward_block(out, lse, q, k, v, d, bh / d.H, bh % d.H, qb * kBq, S);
    }
  }
}

void DenseAttention::backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                              const float* lse, const float* q, const float* k, const float* v,
                              const AttnDims& d, const AttnSaved*) {
  check_attn_dims(d, "attention.dense");
  if (d.B == 0 || d.T == 0) return;
  if (d.bf16_products)
    return ops::block_sparse_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, d, ops::full_selection(d, kBq));
  const int64_t B = d.B, T = d.T, H = d.H, D = d.D, BH = B * H;
  const int nthreads = omp_get_max_threads();

  const std::vector<int64_t> bounds = backward_key_ranges(d);
  const int64_t nranges = static_cast<int64_t>(bounds.size()) - 1;
  // Range 0 writes dQ in place; range p > 0 writes a partial dQ of the query
  // rows that can see it ([bounds[p], T) when causal), summed in order below.
  std::vector<int64_t> part_first(static_cast<size_t>(nranges), 0), part_off(static_cast<size_t>(nranges), 0);
  int64_t part_rows = 0;
  for (int64_t p = 1; p < nranges; ++p) {
    part_first[p] = d.causal ? bounds[p] : 0;
    part_off[p] = part_rows;
    part_rows += T - part_first[p];
  }
  Scratch partial(BH * part_rows * D, false);
  Scratch Di(BH * T, false);
  Scratch tiles(static_cast<int64_t>(nthreads) * 2 * kBq * kBk, true);

#pragma omp parallel num_threads(nthreads)
  {
    // Di = rowsum(dO ⊙ O): the softmax-backward correction of each row.
#pragma omp for schedule(static)
    for (int64_t bt = 0; bt < B * T; ++bt)
      for (int64_t h = 0; h < H; ++h)
        Di.get()[((bt / T) * H + h) * T + bt % T] =
            dot_row(dout + (bt * H + h) * D, out + (bt * H + h) * D, D);

    float* S = tiles.get() + static_cast<int64_t>(omp_get_thread_num()) * 2 * kBq * kBk;
    float* dP = S + kBq * kBk;
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < BH * nranges; ++it) {
      const int64_t bh = it / nranges, p = it % nranges, b = bh / H, h = bh % H;
      if (p == 0) {
        backward_range(dq + (b * T) * d.ld + h * D, d.ld, 0, dk, dv, dout, lse, Di.get(), q, k, v, d, b, h,
                       bounds[0], bounds[1], S, dP);
      } else {
        float* part = partial.get() + (bh * part_rows + part_off[p]) * D;
        backward_range(part, D, part_first[p], dk, dv, dout, lse, Di.get(), q, k, v, d, b, h, bounds[p],
                       bounds[p + 1], S, dP);
      }
    }

    if (nranges > 1) {
#pragma omp for schedule(static)
      for (int64_t bt = 0; bt < BH * T; ++bt) {
        const int64_t bh = bt / T, t = bt % T, b = bh / H, h = bh % H;
        float* row = dq + (b * T + t) * d.ld + h * D;
        for (int64_t p = 1; p < nranges && part_first[p] <= t; ++p)
          add_row(row, partial.get() + (bh * part_rows + part_off[p] + t - part_first[p]) * D, D);
      }
    }
  }
}

void DenseAttention::decode_paged(float* out, const float* q, const KVPages& kv, int64_t H, int64_t D,
                                  DecodeMemo*) {
  check_decode_args(kv, H, D, "attention.dense");
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t ld = H * D, len = kv.len;
  // Threads only pay off once the cache is long; each head's arithmetic is
  // the same either way.
#pragma omp parallel for schedule(static) if (len * H * D >= (int64_t{1} << 18))
  for (int64_t h = 0; h < H; ++h) {
    float s[kDecodeTile] = {};  // padding lanes read by softmax_tile_row
    float m = kNegInf, l = 0.0f;
    float* o = out + h * D;
    std::memset(o, 0, sizeof(float) * static_cast<size_t>(D));
    // Tiles sit at the same positions however the cache is paged; a tile
    // that spans two pages is scored and accumulated in two runs, in the same
    // order, so the bits do not depend on the paging.
    for (int64_t j0 = 0; j0 < len; j0 += kDecodeTile) {
      const int64_t n = std::min(kDecodeTile, len - j0);
      kv.for_each_run(j0, j0 + n, ld, [&](const float* K, const float*, int64_t j, int64_t r) {
        decode_scores(s + (j - j0), q + h * D, K + h * D, r, ld, D, scale);
      });
      const float alpha = softmax_tile_row(s, n, n, &m, &l);
      kv.for_each_run(j0, j0 + n, ld, [&](const float*, const float* V, int64_t j, int64_t r) {
        decode_accumulate(o, j == j0 ? alpha : 1.0f, s + (j - j0), V + h * D, r, ld, D);
      });
    }
    scale_row(o, D, 1.0f / l);
  }
}

}  // namespace sparta
