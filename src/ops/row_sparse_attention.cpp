#include "ops/row_sparse_attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <vector>

#include "core/error.h"
#include "ops/attention_bf16_operands.h"
#include "ops/attention_rows.h"
#include "ops/elementwise.h"
#include "ops/tile_gemm.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // see elementwise.h: vectors never cross a call boundary

namespace sparta::ops {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Query rows per work item: their (row, block) pairs are regrouped by block.
// Large, so that a block is shared by many rows of a chunk even when rows
// choose independently (4096 rows × 3 blocks over 256 candidates at 16K
// tokens: ~48 rows per block), and growing with T, as the candidates do
// (T/4 rows: 16384 rows × 4 blocks over 1024 candidates at 64K); the
// per-row state is chunk·D floats per thread. A function of T only, so
// results do not depend on the thread count.
int64_t chunk_rows(int64_t T) { return std::clamp<int64_t>(T / 4, 4096, 16384); }
// Rows gathered per product.
constexpr int64_t kSub = 64;

// One query row's use of one key block.
struct Pair {
  int32_t kb;
  int32_t row;  // within the (b, h) slice
};

// Causally visible keys of row t in [k0, k0 + n).
inline int64_t visible(bool causal, int64_t t, int64_t k0, int64_t n) {
  return causal ? std::clamp<int64_t>(t + 1 - k0, 0, n) : n;
}

// The (row, block) pairs of rows [r0, r1) of list base `list0` (= bh*T),
// grouped by block (nkb blocks), rows ascending inside a group: a counting
// sort, linear in the pairs (`count` is scratch of nkb + 1).
void chunk_pairs(std::vector<Pair>& pairs, std::vector<int64_t>& count, const BlockSelection& sel, int64_t list0,
                 int64_t r0, int64_t r1, int64_t nkb) {
  count.assign(static_cast<size_t>(nkb + 1), 0);
  const int64_t x0 = sel.offsets[list0 + r0], x1 = sel.offsets[list0 + r1];
  for (int64_t x = x0; x < x1; ++x) ++count[static_cast<size_t>(sel.keys[x] + 1)];
  for (int64_t kb = 0; kb < nkb; ++kb) count[kb + 1] += count[kb];
  pairs.resize(static_cast<size_t>(x1 - x0));
  for (int64_t t = r0; t < r1; ++t)
    for (int64_t x = sel.offsets[list0 + t]; x < sel.offsets[list0 + t + 1]; ++x)
      pairs[static_cast<size_t>(count[sel.keys[x]]++)] = {sel.keys[x], static_cast<int32_t>(t)};
}

// End of the group of pairs starting at g0 (same key block).
size_t group_end(const std::vector<Pair>& pairs, size_t g0) {
  size_t g1 = g0;
  while (g1 < pairs.size() && pairs[g1].kb == pairs[g0].kb) ++g1;
  return g1;
}

// Copies rows rows[0..n) of a strided (T, ld) slice into a contiguous (n, D) tile.
void gather_rows(float* out, const float* x, int64_t ld, const Pair* rows, int64_t n, int64_t D) {
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out + i * D, x + rows[i].row * ld, sizeof(float) * static_cast<size_t>(D));
}

void check_args(const AttnDims& d, const BlockSelection& sel, const ExtraKeys& extra, const char* op) {
  check_attn_dims(d, op);
  SPARTA_CHECK(sel.qblock == 1, "[", op, "] needs one-row query blocks (qblock 1), got qblock ", sel.qblock);
  check_block_selection(d, sel, op);
  SPARTA_CHECK((extra.logit == nullptr) == (extra.value == nullptr), "[", op,
               "] extra keys need both logits and values (or neither)");
}

// Per-thread scratch: a gathered tile of rows and its products.
struct Scratch {
  std::vector<float> Q, G, S, dP, O2;
  explicit Scratch(int64_t block, int64_t D)
      : Q(kSub * D), G(kSub * D), S(kSub * block), dP(kSub * block), O2(kSub * D) {}
};

// Per-thread BF16 operands of one tile (AttnDims::bf16_products): the
// gathered rows and score tiles as left operands (A: up to block × kSub or
// kSub × block), gathered rows as pairs (Bq, Bg), and a key block as pairs
// when it starts at an odd position (Bk).
struct Bf16Scratch {
  Bf16HeadLayout L;
  int64_t bp;  // block rounded up to even
  std::unique_ptr<uint16_t[]> Q, G, A, Bq, Bg, Bk;
  Bf16Scratch(const AttnDims& d, int64_t block)
      : L(d), bp(bf16_pairs_len(block)), Q(bf16_buffer(kSub * L.Dp)), G(bf16_buffer(kSub * L.Dp)),
        A(bf16_buffer(std::max(kSub * bp, block * bf16_pairs_len(kSub)))), Bq(bf16_buffer((kSub + 2) * L.D)),
        Bg(bf16_buffer((kSub + 2) * L.D)), Bk(bf16_buffer((block + 2) * L.D)) {}
};

}  // namespace

void row_sparse_attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                                  const AttnDims& d, const BlockSelection& sel, const ExtraKeys& extra) {
  constexpr const char* kOp = "attention.row_sparse";
  check_args(d, sel, extra, kOp);
  if (d.B == 0 || d.T == 0) return;
  const int64_t T = d.T, H = d.H, D = d.D, ld = d.ld, block = sel.block;
  const int64_t chunk = chunk_rows(T), chunks = (T + chunk - 1) / chunk, items = d.B * H * chunks;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::optional<Bf16KeysValues> kv;
  std::vector<float> Kt;
  if (d.bf16_products)
    kv.emplace(k, v, d);
  else
    Kt = transposed_heads(k, d);  // (B, H, D, T)
#pragma omp parallel
  {
    Scratch sc(block, D);
    std::optional<Bf16Scratch> bf;
    if (kv) bf.emplace(d, block);
    std::vector<Pair> pairs;
    std::vector<int64_t> count;
    const int64_t rows = std::min(chunk, T);
    std::vector<float> m(rows), l(rows), O(rows * D);
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t bh = it / chunks, b = bh / H, h = bh % H;
      const int64_t r0 = it % chunks * chunk, r1 = std::min(T, r0 + chunk);
      const int64_t head = b * T * ld + h * D, list0 = bh * T;
      // Each row starts with its extra key, if any: weight exp(0) at max = logit.
      for (int64_t t = r0; t < r1; ++t) {
        const int64_t i = t - r0;
        const float xl = extra.logit ? extra.logit[list0 + t] : kNegInf;
        m[i] = xl;
        l[i] = xl > kNegInf ? 1.0f : 0.0f;
        if (xl > kNegInf)
          std::memcpy(&O[i * D], extra.value + (list0 + t) * D, sizeof(float) * static_cast<size_t>(D));
        else
          std::fill(&O[i * D], &O[i * D] + D, 0.0f);
      }
      chunk_pairs(pairs, count, sel, list0, r0, r1, (T + block - 1) / block);
      for (size_t g0 = 0; g0 < pairs.size();) {
        const int32_t kb = pairs[g0].kb;
        const size_t g1 = group_end(pairs, g0);
        const int64_t k0 = kb * block, nk = std::min(block, T - k0);
        for (size_t s0 = g0; s0 < g1; s0 += kSub) {
          const int64_t n = std::min<int64_t>(kSub, static_cast<int64_t>(g1 - s0));
          gather_rows(sc.Q.data(), q + head, ld, &pairs[s0], n, D);
          if (kv) {
            pack_bf16_rows(bf->Q.get(), bf->L.Dp, sc.Q.data(), D, n, D);
            tile_gemm_bf16(n, nk, D, scale, bf->Q.get(), bf->L.Dp, kv->k_pairs_d(bh) + 2 * k0, 2 * T, 0.0f,
                           sc.S.data(), block);
          } else {
            tile_gemm_nn(n, nk, D, scale, sc.Q.data(), D, Kt.data() + bh * D * T + k0, T, 0.0f, sc.S.data(), block);
          }
          for (int64_t i = 0; i < n; ++i) {
            const int64_t t = pairs[s0 + i].row, r = t - r0;
            float sum;
            float* s = sc.S.data() + i * block;
            const float mx = softmax_exp_row(s, nk, visible(d.causal, t, k0, nk), &sum);
            if (mx == kNegInf) continue;  // s is all 0: adds nothing below
            // Merge into the row's running softmax; the block's weights are
            // rescaled to the new max before P·V adds them.
            const float m_new = std::max(m[r], mx);
            const float a = std::exp(m[r] - m_new), f = std::exp(mx - m_new);
            if (a != 1.0f)
              for (int64_t e = 0; e < D; ++e) O[r * D + e] *= a;
            l[r] = l[r] * a + sum * f;
            m[r] = m_new;
            if (f != 1.0f)
              for (int64_t j = 0; j < nk; ++j) s[j] *= f;
          }
          if (kv) {
            pack_bf16_rows(bf->A.get(), bf->bp, sc.S.data(), block, n, nk);
            const uint16_t* V = bf->L.pairs_t_at(kv->v_pairs_t(bh), v + head, ld, k0, nk, bf->Bk.get());
            tile_gemm_bf16(n, D, nk, 1.0f, bf->A.get(), bf->bp, V, 2 * D, 0.0f, sc.O2.data(), D);
          } else {
            tile_gemm_nn(n, D, nk, 1.0f, sc.S.data(), block, v + head + k0 * ld, ld, 0.0f, sc.O2.data(), D);
          }
          for (int64_t i = 0; i < n; ++i) {
            const int64_t r = pairs[s0 + i].row - r0;
            for (int64_t e = 0; e < D; ++e) O[r * D + e] += sc.O2[i * D + e];
          }
        }
        g0 = g1;
      }
      for (int64_t t = r0; t < r1; ++t) {
        const int64_t i = t - r0;
        float* o = out + ((b * T + t) * H + h) * D;
        if (l[i] > 0.0f) {
          const float inv = 1.0f / l[i];
          for (int64_t e = 0; e < D; ++e) o[e] = O[i * D + e] * inv;
          lse[list0 + t] = m[i] + std::log(l[i]);
        } else {  // no allowed key: the row is empty rather than 0/0
          std::fill(o, o + D, 0.0f);
          lse[list0 + t] = kNegInf;
        }
      }
    }
  }
}

void row_sparse_attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                                   const float* lse, const float* q, const float* k, const float* v,
                                   const AttnDims& d, const BlockSelection& sel, const ExtraKeys& extra,
                                   float* d_extra_logit, float* d_extra_value, bool accumulate) {
  constexpr const char* kOp = "attention.row_sparse";
  check_args(d, sel, extra, kOp);
  SPARTA_CHECK(!extra.logit || (d_extra_logit && d_extra_value), "[", kOp,
               "] backward with extra keys needs buffers for their gradients");
  if (d.B == 0 || d.T == 0) return;
  const int64_t B = d.B, T = d.T, H = d.H, D = d.D, ld = d.ld, BH = B * H, block = sel.block;
  const int64_t nkb = (T + block - 1) / block;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const size_t row_bytes = sizeof(float) * static_cast<size_t>(D);

  // The selection inverted per (b, h, key block): the rows that chose it,
  // ascending, so dK/dV of a block have one owner and a fixed summation order.
  std::vector<int64_t> inv_off(static_cast<size_t>(BH * nkb + 1), 0);
  for (int64_t bh = 0; bh < BH; ++bh)
    for (int64_t x = sel.offsets[bh * T]; x < sel.offsets[(bh + 1) * T]; ++x)
      ++inv_off[static_cast<size_t>(bh * nkb + sel.keys[x] + 1)];
  for (size_t i = 1; i < inv_off.size(); ++i) inv_off[i] += inv_off[i - 1];
  std::vector<Pair> inv(sel.keys.size());
  {
    std::vector<int64_t> fill(inv_off.begin(), inv_off.end() - 1);
    for (int64_t list = 0; list < BH * T; ++list)
      for (int64_t x = sel.offsets[list]; x < sel.offsets[list + 1]; ++x) {
        const int32_t kb = sel.keys[x];
        inv[static_cast<size_t>(fill[(list / T) * nkb + kb]++)] = {kb, static_cast<int32_t>(list % T)};
      }
  }

  const std::vector<float> Di = softmax_backward_di(dout, out, d);
  std::vector<float> Kt, Vt;  // (B, H, D, T), FP32 products only
  if (!d.bf16_products) {
    Kt = transposed_heads(k, d);
    Vt = transposed_heads(v, d);
  }
#pragma omp parallel
  {
    // Extra keys, per row: p = exp(logit - lse), d logit = p (dO·value - Di),
    // d value = p dO.
    if (extra.logit) {
#pragma omp for schedule(static)
      for (int64_t row = 0; row < BH * T; ++row) {
        const int64_t bh = row / T, t = row % T;
        float* gv = d_extra_value + row * D;
        std::memset(gv, 0, row_bytes);
        float gl = 0.0f;
        const float xl = extra.logit[row], lt = lse[row];
        if (xl > kNegInf && std::isfinite(lt)) {
          const float p = std::exp(xl - lt);
          const float* go = dout + (((bh / H) * T + t) * H + bh % H) * D;
          gl = p * (dot_row(go, extra.value + row * D, D) - Di[static_cast<size_t>(row)]);
          for (int64_t e = 0; e < D; ++e) gv[e] = p * go[e];
        }
        d_extra_logit[row] = gl;
      }
    }

    Scratch sc(block, D);
    // BF16 products: the owned head's K and V as pairs along D, K as pairs along T.
    std::optional<Bf16Scratch> bf;
    std::unique_ptr<uint16_t[]> k_d, v_d, k_t;
    if (d.bf16_products) {
      bf.emplace(d, block);
      k_d = bf16_buffer(bf->L.head_elems());
      v_d = bf16_buffer(bf->L.head_elems());
      k_t = bf16_buffer(bf->L.head_elems());
    }
    // Recomputes P (into sc.S) and dS (into sc.dP) of the gathered rows
    // pr[0..n) against the keys [k0, k0 + nk); gathers their queries into
    // sc.Q and output gradients into sc.G.
    auto grad_tile = [&](const Pair* pr, int64_t n, int64_t bh, int64_t k0, int64_t nk) {
      const int64_t b = bh / H, h = bh % H, head = b * T * ld + h * D;
      gather_rows(sc.Q.data(), q + head, ld, pr, n, D);
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(sc.G.data() + i * D, dout + ((b * T + pr[i].row) * H + h) * D, row_bytes);
      if (bf) {
        const int64_t Dp = bf->L.Dp;
        pack_bf16_rows(bf->Q.get(), Dp, sc.Q.data(), D, n, D);
        pack_bf16_rows(bf->G.get(), Dp, sc.G.data(), D, n, D);
        tile_gemm_bf16(n, nk, D, scale, bf->Q.get(), Dp, k_d.get() + 2 * k0, 2 * T, 0.0f, sc.S.data(), block);
        tile_gemm_bf16(n, nk, D, 1.0f, bf->G.get(), Dp, v_d.get() + 2 * k0, 2 * T, 0.0f, sc.dP.data(), block);
      } else {
        tile_gemm_nn(n, nk, D, scale, sc.Q.data(), D, Kt.data() + bh * D * T + k0, T, 0.0f, sc.S.data(), block);
        tile_gemm_nn(n, nk, D, 1.0f, sc.G.data(), D, Vt.data() + bh * D * T + k0, T, 0.0f, sc.dP.data(), block);
      }
      for (int64_t i = 0; i < n; ++i) {
        const int64_t t = pr[i].row;
        const float lt = lse[bh * T + t];
        const int64_t nv = std::isfinite(lt) ? visible(d.causal, t, k0, nk) : 0;
        softmax_grad_row(sc.S.data() + i * block, sc.dP.data() + i * block, nk, nv, lt, Di[static_cast<size_t>(bh * T + t)]);
      }
    };

    // One pass per (b, h): its key blocks in ascending order, each against
    // the rows that chose it, 64 at a time. The block's dK and dV and the
    // rows' dQ all belong to this (b, h), so S and dP are computed once per
    // tile (5 products; splitting dQ and dK/dV over threads would need them
    // twice) and every dQ row sums its blocks in ascending order on one
    // thread: results do not depend on the thread count.
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < BH; ++bh) {
      const int64_t b = bh / H, h = bh % H, head = b * T * ld + h * D;
      if (bf) {
        bf->L.pairs_d(k_d.get(), k + head, ld);
        bf->L.pairs_d(v_d.get(), v + head, ld);
        bf->L.pairs_t(k_t.get(), k + head, ld);
      }
      if (!accumulate)
        for (int64_t t = 0; t < T; ++t) {
          std::memset(dq + head + t * ld, 0, row_bytes);
          std::memset(dk + head + t * ld, 0, row_bytes);
          std::memset(dv + head + t * ld, 0, row_bytes);
        }
      for (int64_t kb = 0; kb < nkb; ++kb) {
        const int64_t list = bh * nkb + kb, k0 = kb * block, nk = std::min(block, T - k0);
        float* dK = dk + head + k0 * ld;
        float* dV = dv + head + k0 * ld;
        const int64_t x0 = inv_off[list], x1 = inv_off[list + 1];
        const uint16_t* k_pairs =
            bf && x1 > x0 ? bf->L.pairs_t_at(k_t.get(), k + head, ld, k0, nk, bf->Bk.get()) : nullptr;
        for (int64_t s0 = x0; s0 < x1; s0 += kSub) {
          const int64_t n = std::min(kSub, x1 - s0);
          const Pair* pr = &inv[static_cast<size_t>(s0)];
          grad_tile(pr, n, bh, k0, nk);
          if (bf) {
            // The score tiles as left operands (transposed for the sums over
            // the gathered rows), the gathered rows and the block as pairs.
            const int64_t np = bf16_pairs_len(n), nkp = bf16_pairs_len(nk);
            uint16_t* A = bf->A.get();
            pack_bf16_pairs(bf->Bg.get(), 2 * D, sc.G.data(), D, n, D);
            pack_bf16_pairs(bf->Bq.get(), 2 * D, sc.Q.data(), D, n, D);
            pack_bf16_rows_t(A, np, sc.S.data(), block, nk, n);
            tile_gemm_bf16(nk, D, n, 1.0f, A, np, bf->Bg.get(), 2 * D, 1.0f, dV, ld);
            pack_bf16_rows_t(A, np, sc.dP.data(), block, nk, n);
            tile_gemm_bf16(nk, D, n, scale, A, np, bf->Bq.get(), 2 * D, 1.0f, dK, ld);
            pack_bf16_rows(A, nkp, sc.dP.data(), block, n, nk);
            tile_gemm_bf16(n, D, nk, scale, A, nkp, k_pairs, 2 * D, 0.0f, sc.O2.data(), D);
          } else {
            tile_gemm_tn(nk, D, n, 1.0f, sc.S.data(), block, sc.G.data(), D, 1.0f, dV, ld);
            tile_gemm_tn(nk, D, n, scale, sc.dP.data(), block, sc.Q.data(), D, 1.0f, dK, ld);
            tile_gemm_nn(n, D, nk, scale, sc.dP.data(), block, k + head + k0 * ld, ld, 0.0f, sc.O2.data(), D);
          }
          for (int64_t i = 0; i < n; ++i) {
            float* g = dq + head + pr[i].row * ld;
            for (int64_t e = 0; e < D; ++e) g[e] += sc.O2[i * D + e];
          }
        }
      }
    }
  }
}

}  // namespace sparta::ops
