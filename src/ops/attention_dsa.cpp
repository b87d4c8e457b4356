#include "ops/attention_dsa.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "ops/elementwise.h"

namespace sparta {
namespace {

using ops::BlockSelection;

// A contiguous run of cached key positions [k0, k1) for decode.
struct KeyRange {
  int64_t k0, k1;
};

SPARTA_KERNEL_CLONES float dot_row(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

SPARTA_KERNEL_CLONES void axpy_row(float* y, float a, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// Exact softmax attention of one query head against the keys in `ranges`
// of a (len, H, D) cache; out: D floats. s is scratch for every selected
// score. Sequential per head, so results do not depend on threading.
void decode_head(float* out, const float* q, const float* k_cache, const float* v_cache, int64_t ld, int64_t D,
                 const std::vector<KeyRange>& ranges, std::vector<float>& s) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  s.clear();
  float m = -std::numeric_limits<float>::infinity();
  for (const KeyRange& r : ranges)
    for (int64_t j = r.k0; j < r.k1; ++j) {
      s.push_back(scale * dot_row(q, k_cache + j * ld, D));
      m = std::max(m, s.back());
    }
  std::fill(out, out + D, 0.0f);
  float l = 0.0f;
  size_t i = 0;
  for (const KeyRange& r : ranges)
    for (int64_t j = r.k0; j < r.k1; ++j, ++i) {
      const float p = std::exp(s[i] - m);
      l += p;
      axpy_row(out, p, v_cache + j * ld, D);
    }
  // l >= 1 whenever a key exists (the max contributes exp(0)); ranges are never empty here.
  const float inv = 1.0f / l;
  for (int64_t e = 0; e < D; ++e) out[e] *= inv;
}

void check_decode_args(int64_t len, int64_t H, int64_t D, const char* op) {
  SPARTA_CHECK(H >= 1 && D >= 1, "[", op, "] decode needs H, D >= 1, got H=", H, " D=", D);
  SPARTA_CHECK(len >= 1, "[", op, "] decode needs at least one cached position, got len=", len);
}

// Ranks candidate key blocks: higher score first, ties and NaN by block id
// (NaN counts as -inf so a corrupt score never wins and the order stays a
// strict weak ordering).
struct Scored {
  double score;
  int32_t id;
};
bool better(const Scored& a, const Scored& b) {
  const double sa = std::isnan(a.score) ? -std::numeric_limits<double>::infinity() : a.score;
  const double sb = std::isnan(b.score) ? -std::numeric_limits<double>::infinity() : b.score;
  if (sa != sb) return sa > sb;
  return a.id < b.id;
}

// Keeps the `top` best candidates, appends the window blocks [w0, w1] and
// returns the union sorted ascending (candidates never overlap the window).
void pick(std::vector<int32_t>& list, std::vector<Scored>& cand, int64_t top, int64_t w0, int64_t w1) {
  list.clear();
  const auto keep = static_cast<std::ptrdiff_t>(std::min<int64_t>(top, static_cast<int64_t>(cand.size())));
  std::partial_sort(cand.begin(), cand.begin() + keep, cand.end(), better);
  for (std::ptrdiff_t i = 0; i < keep; ++i) list.push_back(cand[static_cast<size_t>(i)].id);
  for (int64_t kb = w0; kb <= w1; ++kb) list.push_back(static_cast<int32_t>(kb));
  std::sort(list.begin(), list.end());
}

// Mean over the tokens of each block of one head's rows (strided by ld):
// (nb, D) in double, summed in token order.
void block_means(std::vector<double>& mean, const float* x, int64_t T, int64_t ld, int64_t D, int64_t block) {
  const int64_t nb = (T + block - 1) / block;
  mean.assign(static_cast<size_t>(nb * D), 0.0);
  for (int64_t b = 0; b < nb; ++b) {
    double* m = mean.data() + b * D;
    const int64_t t1 = std::min(T, (b + 1) * block);
    for (int64_t t = b * block; t < t1; ++t)
      for (int64_t e = 0; e < D; ++e) m[e] += x[t * ld + e];
    const double inv = 1.0 / static_cast<double>(t1 - b * block);
    for (int64_t e = 0; e < D; ++e) m[e] *= inv;
  }
}

double dot_double(const double* a, const double* b, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

BlockSelection local_window_selection(const AttnDims& d, int64_t block, int64_t window_blocks) {
  if (d.causal) return ops::window_selection(d, block, window_blocks);
  SPARTA_CHECK(block >= 1, "[attention.window] block size must be >= 1, got ", block);
  SPARTA_CHECK(window_blocks >= 1, "[attention.window] window_blocks must be >= 1, got ", window_blocks);
  BlockSelection sel;
  sel.block = block;
  sel.nqb = (d.T + block - 1) / block;
  sel.offsets.push_back(0);
  for (int64_t bh = 0; bh < d.B * d.H; ++bh)
    for (int64_t qb = 0; qb < sel.nqb; ++qb) {
      const int64_t last = std::min(sel.nqb - 1, qb + window_blocks - 1);
      for (int64_t kb = std::max<int64_t>(0, qb - window_blocks + 1); kb <= last; ++kb)
        sel.keys.push_back(static_cast<int32_t>(kb));
      sel.offsets.push_back(static_cast<int64_t>(sel.keys.size()));
    }
  return sel;
}

BlockSelection dsa_select(const float* q, const float* k, const AttnDims& d, const DsaConfig& cfg) {
  check_attn_dims(d, "attention.dsa");
  check_dsa_config(cfg);
  const int64_t block = cfg.block, nb = (d.T + block - 1) / block;
  const int64_t W = dsa_window_blocks(cfg), top = dsa_top_blocks(cfg, d.T);
  const int64_t lists = d.B * d.H * nb;
  std::vector<std::vector<int32_t>> chosen(static_cast<size_t>(lists));
  // One (b, h) per iteration, each computed sequentially: the selection is
  // the same for any thread count.
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t bh = 0; bh < d.B * d.H; ++bh) {
    const int64_t b = bh / d.H, h = bh % d.H;
    const int64_t base = b * d.T * d.ld + h * d.D;
    std::vector<double> qm, km;
    if (top > 0) {
      block_means(qm, q + base, d.T, d.ld, d.D, block);
      block_means(km, k + base, d.T, d.ld, d.D, block);
    }
    std::vector<Scored> cand;
    for (int64_t qb = 0; qb < nb; ++qb) {
      const int64_t w0 = std::max<int64_t>(0, qb - W + 1);
      const int64_t w1 = d.causal ? qb : std::min(nb - 1, qb + W - 1);
      cand.clear();
      if (top > 0) {
        const int64_t kend = d.causal ? w0 : nb;
        for (int64_t kb = 0; kb < kend; ++kb) {
          if (kb >= w0 && kb <= w1) continue;
          cand.push_back({dot_double(qm.data() + qb * d.D, km.data() + kb * d.D, d.D), static_cast<int32_t>(kb)});
        }
      }
      pick(chosen[static_cast<size_t>(bh * nb + qb)], cand, top, w0, w1);
    }
  }
  BlockSelection sel;
  sel.block = block;
  sel.nqb = nb;
  sel.offsets.reserve(static_cast<size_t>(lists + 1));
  sel.offsets.push_back(0);
  for (const auto& l : chosen) {
    sel.keys.insert(sel.keys.end(), l.begin(), l.end());
    sel.offsets.push_back(static_cast<int64_t>(sel.keys.size()));
  }
  return sel;
}

// ---------------------------------------------------------------- window

WindowAttention::WindowAttention(const DsaConfig& cfg) : cfg_(cfg) { check_dsa_config(cfg_); }

void WindowAttention::forward(float* out, float* lse, const float* q, const float* k, const float* v,
                              const AttnDims& d) {
  check_attn_dims(d, "attention.window");
  ops::block_sparse_attention_forward(out, lse, q, k, v, d,
                                      local_window_selection(d, cfg_.block, dsa_window_blocks(cfg_)));
}

void WindowAttention::backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                               const float* lse, const float* q, const float* k, const float* v,
                               const AttnDims& d) {
  check_attn_dims(d, "attention.window");
  ops::block_sparse_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, d,
                                       local_window_selection(d, cfg_.block, dsa_window_blocks(cfg_)));
}

void WindowAttention::decode(float* out, const float* q, const float* k_cache, const float* v_cache, int64_t len,
                             int64_t H, int64_t D) {
  check_decode_args(len, H, D, "attention.window");
  const int64_t qb = (len - 1) / cfg_.block;
  const int64_t k0 = std::max<int64_t>(0, qb - dsa_window_blocks(cfg_) + 1) * cfg_.block;
  const std::vector<KeyRange> ranges{{k0, len}};
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < H; ++h) {
    std::vector<float> s;
    decode_head(out + h * D, q + h * D, k_cache + h * D, v_cache + h * D, H * D, D, ranges, s);
  }
}

// ---------------------------------------------------------------- dsa

DsaAttention::DsaAttention(const DsaConfig& cfg) : cfg_(cfg) { check_dsa_config(cfg_); }

void DsaAttention::forward(float* out, float* lse, const float* q, const float* k, const float* v,
                           const AttnDims& d) {
  ops::block_sparse_attention_forward(out, lse, q, k, v, d, dsa_select(q, k, d, cfg_));
}

void DsaAttention::backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                            const float* lse, const float* q, const float* k, const float* v, const AttnDims& d) {
  // Recomputing the selection from the same q and k reproduces forward's
  // exactly (dsa_select is deterministic) and keeps the instance stateless.
  ops::block_sparse_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, d, dsa_select(q, k, d, cfg_));
}

void DsaAttention::decode(float* out, const float* q, const float* k_cache, const float* v_cache, int64_t len,
                          int64_t H, int64_t D) {
  check_decode_args(len, H, D, "attention.dsa");
  const int64_t block = cfg_.block, qb = (len - 1) / block;
  const int64_t w0 = std::max<int64_t>(0, qb - dsa_window_blocks(cfg_) + 1);
  const int64_t top = dsa_top_blocks(cfg_, len);
  const int64_t ld = H * D;
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < H; ++h) {
    const float* qh = q + h * D;
    // Candidates: the full blocks before the window, scored q · mean key.
    std::vector<Scored> cand;
    if (top > 0) {
      std::vector<double> km, qd(qh, qh + D);
      block_means(km, k_cache + h * D, w0 * block, ld, D, block);
      for (int64_t kb = 0; kb < w0; ++kb)
        cand.push_back({dot_double(qd.data(), km.data() + kb * D, D), static_cast<int32_t>(kb)});
    }
    std::vector<int32_t> ids;
    pick(ids, cand, top, w0, qb);
    std::vector<KeyRange> ranges;
    for (int32_t kb : ids) {  // merge adjacent blocks; the last one ends at len
      const int64_t a = kb * block, e = std::min(len, a + block);
      if (!ranges.empty() && ranges.back().k1 == a)
        ranges.back().k1 = e;
      else
        ranges.push_back({a, e});
    }
    std::vector<float> s;
    decode_head(out + h * D, qh, k_cache + h * D, v_cache + h * D, ld, D, ranges, s);
  }
}

std::unique_ptr<Attention> make_window_attention(const DsaConfig& cfg) {
  return std::make_unique<WindowAttention>(cfg);
}

std::unique_ptr<Attention> make_dsa_attention(const DsaConfig& cfg) { return std::make_unique<DsaAttention>(cfg); }

}  // namespace sparta
