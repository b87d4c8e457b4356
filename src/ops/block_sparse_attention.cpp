#include "ops/block_sparse_attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include "core/error.h"
#include "ops/attention_rows.h"
#include "ops/elementwise.h"
#include "ops/tile_gemm.h"
#include "ops/attention_bf16_operands.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // see elementwise.h: vectors never cross a call boundary

namespace sparta::ops {
namespace {

// Tiles, as in the dense kernel: kQ query rows against up to kK keys per
// product, so a score tile (and its dP twin) stays in L2 whatever the block
// size. Selected key blocks that are adjacent are merged before tiling.
// Products go through tile_gemm (hand-written, no per-call overhead), with
// Kᵀ (and Vᵀ for backward) transposed once per call so that the score
// products stream contiguous rows.
constexpr int64_t kQ = 64;
constexpr int64_t kK = 512;
static_assert(kK % simd::kLanes == 0, "score rows must hold whole lane groups");

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Contiguous key range [k0, k0 + n) of one sgemm call.
struct Piece {
  int64_t k0, n;
};

// Turns a sorted list of key blocks into kK-bounded pieces of contiguous
// keys, clipped to [0, kend) (kend = one past the last query position when
// causal, so blocks entirely in the future vanish).
void key_pieces(std::vector<Piece>& out, const int32_t* ids, int64_t count, int64_t block, int64_t T,
                int64_t kend) {
  out.clear();
  int64_t a = 0, e = -1;  // current merged interval [a, e)
  auto flush = [&] {
    for (int64_t k0 = a; k0 < e; k0 += kK) out.push_back({k0, std::min(kK, e - k0)});
  };
  for (int64_t i = 0; i < count; ++i) {
    const int64_t s = ids[i] * block;
    if (s >= kend) break;  // ids are ascending: the rest are later still
    const int64_t t = std::min({s + block, T, kend});
    if (s == e) {
      e = t;
    } else {
      if (e > a) flush();
      a = s;
      e = t;
    }
  }
  if (e > a) flush();
}

// Causally visible keys of query row t in the piece [k0, k0 + n).
inline int64_t visible(bool causal, int64_t t, int64_t k0, int64_t n) {
  return causal ? std::clamp<int64_t>(t + 1 - k0, 0, n) : n;
}

// Online-softmax step for one query row against one piece: s holds the
// scaled scores of n keys of which the first nv are allowed. On return
// s[j] = exp(s[j] - m_new) (0 for masked keys), m/l are the running max and
// sum, and the result is the factor exp(m_old - m_new) by which the output
// accumulated so far must be rescaled. A row with nothing allowed yet keeps
// m = -inf, l = 0.
SPARTA_KERNEL_CLONES float softmax_piece_row(float* s, int64_t n, int64_t nv, float* m, float* l) {
  std::memset(s + nv, 0, sizeof(float) * static_cast<size_t>(n - nv));
  if (nv == 0) return 1.0f;
  const simd::f32v vmx = simd::reduce_blocks(nv, simd::splat(kNegInf), simd::Max{},
                                             [&](int64_t i, int64_t c, auto tag) SPARTA_SIMD_LAMBDA {
                                               return simd::load_n<decltype(tag)::value>(s + i, c, kNegInf);
                                             });
  const float m_new = std::max(*m, simd::hmax(vmx));
  const float alpha = std::exp(*m - m_new);  // 0 while the row had nothing (m_old = -inf)
  const simd::f32v mv = simd::splat(m_new);
  const simd::f32v vsum = simd::reduce_blocks(
      nv, simd::splat(0.0f), simd::Sum{}, [&](int64_t i, int64_t c, auto tag) SPARTA_SIMD_LAMBDA {
        constexpr bool kPartial = decltype(tag)::value;
        // Padding lanes read -inf and give exp = 0, the identity of Sum.
        const simd::f32v p = simd::exp(simd::load_n<kPartial>(s + i, c, kNegInf) - mv);
        simd::store_n<kPartial>(s + i, p, c);
        return p;
      });
  *m = m_new;
  *l = *l * alpha + simd::hsum(vsum);
  return alpha;
}

SPARTA_KERNEL_CLONES void scale_row(float* x, int64_t n, float a) {
  for (int64_t j = 0; j < n; ++j) x[j] *= a;
}

// Per-thread scratch of the BF16 forward: the query tile as rows, the
// probabilities as rows, a value piece as pairs (odd positions only).
struct Bf16ForwardScratch {
  std::unique_ptr<uint16_t[]> Q, P, V;
  explicit Bf16ForwardScratch(const Bf16HeadLayout& L)
      : Q(bf16_buffer(kQ * L.Dp)), P(bf16_buffer(kQ * kK)), V(bf16_buffer((kK + 2) * L.D)) {}
};

// Forward of the query rows [q0, q0 + nq) (nq <= kQ) of one (b, h) against
// the key blocks ids[0 .. count). With bf16 set, the two products take the
// BF16 operands of bf16 (bf16_scratch then non-null); else Kt (Kᵀ per head,
// FP32) is used.
void forward_rows(float* out, float* lse, const float* q, const float* Kt, const float* v, const AttnDims& d,
                  int64_t b, int64_t h, int64_t q0, int64_t nq, const int32_t* ids, int64_t count, int64_t block,
                  float extra_logit, const float* extra_value, float* S, std::vector<Piece>& pieces,
                  const Bf16KeysValues* bf16, Bf16ForwardScratch* bf16_scratch) {
  const int64_t T = d.T, H = d.H, D = d.D, ld = d.ld, ldo = H * D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t head = b * T * ld + h * D;  // token (b, 0), head h
  const float* Q = q + head + q0 * ld;
  float* O = out + ((b * T + q0) * H + h) * D;
  key_pieces(pieces, ids, count, block, T, d.causal ? q0 + nq : T);
  float m[kQ], l[kQ];
  std::fill(m, m + nq, kNegInf);
  std::fill(l, l + nq, 0.0f);
  bool first = true;
  if (extra_logit > kNegInf) {  // the extra key starts every row's softmax: weight exp(0) at max = logit
    std::fill(m, m + nq, extra_logit);
    std::fill(l, l + nq, 1.0f);
    for (int64_t i = 0; i < nq; ++i) std::memcpy(O + i * ldo, extra_value, sizeof(float) * static_cast<size_t>(D));
    first = false;
  }
  const Bf16HeadLayout L(d);
  if (bf16) pack_bf16_rows(bf16_scratch->Q.get(), L.Dp, Q, ld, nq, D);
  for (const Piece& pc : pieces) {
    if (bf16)
      tile_gemm_bf16(nq, pc.n, D, scale, bf16_scratch->Q.get(), L.Dp,
                     bf16->k_pairs_d(b * H + h) + 2 * pc.k0, 2 * T, 0.0f, S, kK);
    else
      tile_gemm_nn(nq, pc.n, D, scale, Q, ld, Kt + (b * H + h) * D * T + pc.k0, T, 0.0f, S, kK);
    for (int64_t i = 0; i < nq; ++i) {
      const float alpha = softmax_piece_row(S + i * kK, pc.n, visible(d.causal, q0 + i, pc.k0, pc.n), &m[i], &l[i]);
      if (!first && alpha != 1.0f) scale_row(O + i * ldo, D, alpha);
    }
    if (bf16) {
      pack_bf16_rows(bf16_scratch->P.get(), kK, S, kK, nq, pc.n);
      const uint16_t* V = L.pairs_t_at(bf16->v_pairs_t(b * H + h), v + head, ld, pc.k0, pc.n,
                                       bf16_scratch->V.get());
      tile_gemm_bf16(nq, D, pc.n, 1.0f, bf16_scratch->P.get(), kK, V, 2 * D, first ? 0.0f : 1.0f, O, ldo);
    } else {
      tile_gemm_nn(nq, D, pc.n, 1.0f, S, kK, v + head + pc.k0 * ld, ld, first ? 0.0f : 1.0f, O, ldo);
    }
    first = false;
  }
  float* lse_row = lse + (b * H + h) * T + q0;
  for (int64_t i = 0; i < nq; ++i) {
    if (l[i] > 0.0f) {
      scale_row(O + i * ldo, D, 1.0f / l[i]);
      lse_row[i] = m[i] + std::log(l[i]);
    } else {  // no allowed key: the row is empty rather than 0/0
      std::memset(O + i * ldo, 0, sizeof(float) * static_cast<size_t>(D));
      lse_row[i] = kNegInf;
    }
  }
}

// Recomputes, for query rows [q0, q0 + nq) against keys [k0, k0 + nk), P in
// S and dS in dP (kQ × kK tiles). Rows whose lse is -inf had no allowed key
// and are masked entirely (their P would be exp(+inf)).
// With bf16 set, the two score products take the head's BF16 operands.
struct Bf16Head;
void grad_scores(float* S, float* dP, const float* dout, const float* lse, const float* Di, const float* q,
                 const float* Kt, const float* Vt, const AttnDims& d, int64_t b, int64_t h, int64_t q0, int64_t nq,
                 int64_t k0, int64_t nk, const Bf16Head* bf16);

// The BF16 operands of the head one backward pass owns (one per thread).
struct Bf16Head {
  Bf16HeadLayout L;
  std::unique_ptr<uint16_t[]> q_rows, dout_rows, k_d, v_d, q_t, dout_t, k_t;  // see attention_bf16_operands.h
  std::unique_ptr<uint16_t[]> A, Bq, Bk;  // per tile: a transposed or rounded score tile; odd-position pairs
  explicit Bf16Head(const AttnDims& d) : L(d) {
    for (auto* x : {&q_rows, &dout_rows, &k_d, &v_d, &q_t, &dout_t, &k_t}) *x = bf16_buffer(L.head_elems());
    A = bf16_buffer(kK * bf16_pairs_len(kQ) + kQ * kK);
    Bq = bf16_buffer((kQ + 2) * L.D);
    Bk = bf16_buffer((kK + 2) * L.D);
  }
  void pack(const float* q, const float* k, const float* v, const float* dout, int64_t ld, int64_t ldo) {
    L.rows(q_rows.get(), q, ld);
    L.rows(dout_rows.get(), dout, ldo);
    L.pairs_d(k_d.get(), k, ld);
    L.pairs_d(v_d.get(), v, ld);
    L.pairs_t(q_t.get(), q, ld);
    L.pairs_t(dout_t.get(), dout, ldo);
    L.pairs_t(k_t.get(), k, ld);
  }
};

void grad_scores(float* S, float* dP, const float* dout, const float* lse, const float* Di, const float* q,
                 const float* Kt, const float* Vt, const AttnDims& d, int64_t b, int64_t h, int64_t q0, int64_t nq,
                 int64_t k0, int64_t nk, const Bf16Head* bf16) {
  const int64_t T = d.T, H = d.H, D = d.D, ld = d.ld;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t head = b * T * ld + h * D, headt = (b * H + h) * D * T;
  if (bf16) {
    const int64_t Dp = bf16->L.Dp;
    tile_gemm_bf16(nq, nk, D, scale, bf16->q_rows.get() + q0 * Dp, Dp, bf16->k_d.get() + 2 * k0, 2 * T, 0.0f, S, kK);
    tile_gemm_bf16(nq, nk, D, 1.0f, bf16->dout_rows.get() + q0 * Dp, Dp, bf16->v_d.get() + 2 * k0, 2 * T, 0.0f, dP,
                   kK);
  } else {
    tile_gemm_nn(nq, nk, D, scale, q + head + q0 * ld, ld, Kt + headt + k0, T, 0.0f, S, kK);
    tile_gemm_nn(nq, nk, D, 1.0f, dout + ((b * T + q0) * H + h) * D, H * D, Vt + headt + k0, T, 0.0f, dP, kK);
  }
  const float* lse_row = lse + (b * H + h) * T + q0;
  const float* di_row = Di + (b * H + h) * T + q0;
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t nv = std::isfinite(lse_row[i]) ? visible(d.causal, q0 + i, k0, nk) : 0;
    softmax_grad_row(S + i * kK, dP + i * kK, nk, nv, lse_row[i], di_row[i]);
  }
}

// full_selection and window_selection: for every (b, h, qb) the blocks
// first(qb) .. last(qb).
template <class First, class Last>
BlockSelection ranged_selection(const AttnDims& d, int64_t block, First first, Last last) {
  BlockSelection sel;
  sel.block = block;
  sel.nqb = (d.T + block - 1) / block;
  sel.offsets.reserve(static_cast<size_t>(d.B * d.H * sel.nqb + 1));
  sel.offsets.push_back(0);
  for (int64_t bh = 0; bh < d.B * d.H; ++bh)
    for (int64_t qb = 0; qb < sel.nqb; ++qb) {
      for (int64_t kb = first(qb); kb <= last(qb); ++kb) sel.keys.push_back(static_cast<int32_t>(kb));
      sel.offsets.push_back(static_cast<int64_t>(sel.keys.size()));
    }
  return sel;
}

}  // namespace

void check_block_selection(const AttnDims& d, const BlockSelection& sel, const char* op) {
  SPARTA_CHECK(sel.block >= 1, "[", op, "] block size must be >= 1, got ", sel.block);
  SPARTA_CHECK(sel.qblock >= 0, "[", op, "] query block size must be >= 1 (or 0 = block), got ", sel.qblock);
  const int64_t qblock = query_block(sel);
  const int64_t nqb = (d.T + qblock - 1) / qblock, nkb = (d.T + sel.block - 1) / sel.block;
  SPARTA_CHECK(sel.nqb == nqb, "[", op, "] selection has nqb=", sel.nqb, " but T=", d.T, " with query block ", qblock,
               " needs ", nqb);
  const int64_t lists = d.B * d.H * nqb;
  SPARTA_CHECK(static_cast<int64_t>(sel.offsets.size()) == lists + 1, "[", op, "] offsets has ",
               sel.offsets.size(), " entries but B*H*nqb+1 = ", lists + 1);
  SPARTA_CHECK(sel.offsets[0] == 0, "[", op, "] offsets[0] must be 0, got ", sel.offsets[0]);
  SPARTA_CHECK(sel.offsets[lists] == static_cast<int64_t>(sel.keys.size()), "[", op, "] offsets ends at ",
               sel.offsets[lists], " but keys has ", sel.keys.size(), " entries");
  // Offsets first, so that a broken partition is reported as such rather
  // than as whatever keys it happens to slice.
  for (int64_t i = 0; i < lists; ++i)
    SPARTA_CHECK(sel.offsets[i] <= sel.offsets[i + 1], "[", op, "] offsets decrease at list ", i, ": ",
                 sel.offsets[i], " > ", sel.offsets[i + 1]);
  for (int64_t i = 0; i < lists; ++i) {
    const int64_t a = sel.offsets[i];
    for (int64_t j = a; j < sel.offsets[i + 1]; ++j) {
      const int64_t id = sel.keys[j];
      SPARTA_CHECK(id >= 0 && id < nkb, "[", op, "] list ", i, " (b=", i / (d.H * nqb), " h=", i / nqb % d.H,
                   " qb=", i % nqb, "): key block ", id, " out of range [0, ", nkb, ")");
      SPARTA_CHECK(j == a || sel.keys[j - 1] < id, "[", op, "] list ", i, " (b=", i / (d.H * nqb),
                   " h=", i / nqb % d.H, " qb=", i % nqb, "): key blocks must be sorted and unique, got ",
                   sel.keys[j - 1], " then ", id);
    }
  }
}

void check_extra_keys(const ExtraKeys& extra, const char* op) {
  SPARTA_CHECK((extra.logit == nullptr) == (extra.value == nullptr), "[", op,
               "] extra keys need both logits and values (or neither)");
}

void block_sparse_attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                                    const AttnDims& d, const BlockSelection& sel, const ExtraKeys& extra) {
  constexpr const char* kOp = "attention.block_sparse";
  check_attn_dims(d, kOp);
  check_block_selection(d, sel, kOp);
  check_extra_keys(extra, kOp);
  if (d.B == 0 || d.T == 0) return;
  const int64_t block = sel.block, qblock = query_block(sel), nqb = sel.nqb;
  const int64_t tiles = (qblock + kQ - 1) / kQ;  // kQ-row tiles per query block
  const int64_t items = d.B * d.H * nqb * tiles;
  const Bf16HeadLayout L(d);
  std::optional<Bf16KeysValues> bf16;
  std::vector<float> Kt;
  if (d.bf16_products)
    bf16.emplace(k, v, d);
  else
    Kt = transposed_heads(k, d);
#pragma omp parallel
  {
    std::vector<float> S(static_cast<size_t>(kQ * kK), 0.0f);
    std::vector<Piece> pieces;
    std::optional<Bf16ForwardScratch> scratch;
    if (bf16) scratch.emplace(L);
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t list = it / tiles, qb = list % nqb, bh = list / nqb;
      const int64_t q0 = qb * qblock + it % tiles * kQ;
      const int64_t qe = std::min(qb * qblock + qblock, d.T);
      if (q0 >= qe) continue;  // tile past the end of a short last block
      const int64_t a = sel.offsets[list];
      const float xl = extra.logit ? extra.logit[list] : kNegInf;
      forward_rows(out, lse, q, Kt.data(), v, d, bh / d.H, bh % d.H, q0, std::min(kQ, qe - q0), sel.keys.data() + a,
                   sel.offsets[list + 1] - a, block, xl, extra.value ? extra.value + list * d.D : nullptr, S.data(),
                   pieces, bf16 ? &*bf16 : nullptr, scratch ? &*scratch : nullptr);
    }
  }
}

void block_sparse_attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                                     const float* lse, const float* q, const float* k, const float* v,
                                     const AttnDims& d, const BlockSelection& sel, const ExtraKeys& extra,
                                     float* d_extra_logit, float* d_extra_value) {
  constexpr const char* kOp = "attention.block_sparse";
  check_attn_dims(d, kOp);
  check_block_selection(d, sel, kOp);
  check_extra_keys(extra, kOp);
  SPARTA_CHECK(!extra.logit || (d_extra_logit && d_extra_value), "[", kOp,
               "] backward with extra keys needs buffers for their gradients");
  if (d.B == 0 || d.T == 0) return;
  const int64_t B = d.B, T = d.T, H = d.H, D = d.D, ld = d.ld, BH = B * H;
  const int64_t block = sel.block, qblock = query_block(sel), nqb = sel.nqb, nkb = (T + block - 1) / block;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const size_t row_bytes = sizeof(float) * static_cast<size_t>(D);

  // The selection inverted: for each (b, h, key block) the query blocks that
  // chose it, ascending. dK/dV of a key block then has a single owner (no
  // races, no atomics) and sums its query blocks in a fixed order, so the
  // result does not depend on the thread count.
  std::vector<int64_t> inv_off(static_cast<size_t>(BH * nkb + 1), 0);
  for (int64_t bh = 0; bh < BH; ++bh)
    for (int64_t j = sel.offsets[bh * nqb]; j < sel.offsets[(bh + 1) * nqb]; ++j)
      ++inv_off[static_cast<size_t>(bh * nkb + sel.keys[j] + 1)];
  for (size_t i = 1; i < inv_off.size(); ++i) inv_off[i] += inv_off[i - 1];
  std::vector<int32_t> inv(sel.keys.size());
  {
    std::vector<int64_t> fill(inv_off.begin(), inv_off.end() - 1);
    for (int64_t list = 0; list < BH * nqb; ++list)
      for (int64_t j = sel.offsets[list]; j < sel.offsets[list + 1]; ++j)
        inv[static_cast<size_t>(fill[(list / nqb) * nkb + sel.keys[j]]++)] = static_cast<int32_t>(list % nqb);
  }

  const std::vector<float> Di = softmax_backward_di(dout, out, d);
  std::vector<float> Kt, Vt;
  if (!d.bf16_products) {
    Kt = transposed_heads(k, d);
    Vt = transposed_heads(v, d);
  }
  const int64_t ktiles = (block + kK - 1) / kK;
#pragma omp parallel
  {
    // Extra keys: with p = exp(logit - lse) per row, d logit = Σ_rows
    // p (dO·value - Di) and d value = Σ_rows p dO, summed over the rows of
    // the query block in order (one owner per block, no races).
    if (extra.logit) {
#pragma omp for schedule(static)
      for (int64_t list = 0; list < BH * nqb; ++list) {
        const int64_t qb = list % nqb, bh = list / nqb, b = bh / H, h = bh % H;
        float* gv = d_extra_value + list * D;
        std::memset(gv, 0, row_bytes);
        float gl = 0.0f;
        const float xl = extra.logit[list];
        if (xl > kNegInf) {
          const float* xv = extra.value + list * D;
          for (int64_t t = qb * qblock; t < std::min(qb * qblock + qblock, T); ++t) {
            const float l = lse[bh * T + t];
            if (!std::isfinite(l)) continue;
            const float p = std::exp(xl - l);
            const float* go = dout + ((b * T + t) * H + h) * D;
            gl += p * (dot_row(go, xv, D) - Di[static_cast<size_t>(bh * T + t)]);
            for (int64_t e = 0; e < D; ++e) gv[e] += p * go[e];
          }
        }
        d_extra_logit[list] = gl;
      }
    }

    std::vector<float> S(static_cast<size_t>(kQ * kK), 0.0f), dP(static_cast<size_t>(kQ * kK), 0.0f);
    std::optional<Bf16Head> bf16;
    if (d.bf16_products) bf16.emplace(d);

    // One pass per (b, h): its key tiles in ascending order, each against
    // the query tiles of the blocks that selected it. dQ, dK and dV of the
    // head all belong to this pass, so S and dP are computed once per tile
    // pair for all three (5 products; owners split by query and by key would
    // need them twice, 7), and each dQ row sums its key tiles in ascending
    // order on one thread: results do not depend on the thread count.
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < BH; ++bh) {
      const int64_t b = bh / H, h = bh % H, head = b * T * ld + h * D;
      const float* dO_head = dout + (b * T * H + h) * D;
      if (bf16) bf16->pack(q + head, k + head, v + head, dO_head, ld, H * D);
      for (int64_t t = 0; t < T; ++t) {
        std::memset(dq + head + t * ld, 0, row_bytes);
        std::memset(dk + head + t * ld, 0, row_bytes);
        std::memset(dv + head + t * ld, 0, row_bytes);
      }
      for (int64_t kt = 0; kt < nkb * ktiles; ++kt) {
        const int64_t kb = kt / ktiles, list = bh * nkb + kb;
        const int64_t k0 = kb * block + kt % ktiles * kK;
        const int64_t ke = std::min(kb * block + block, T);
        if (k0 >= ke) continue;
        const int64_t nk = std::min(kK, ke - k0);
        float* dK = dk + head + k0 * ld;
        float* dV = dv + head + k0 * ld;
        const uint16_t* k_pairs =
            bf16 ? bf16->L.pairs_t_at(bf16->k_t.get(), k + head, ld, k0, nk, bf16->Bk.get()) : nullptr;
        for (int64_t x = inv_off[list]; x < inv_off[list + 1]; ++x) {
          const int64_t qb = inv[static_cast<size_t>(x)];
          const int64_t qe = std::min(qb * qblock + qblock, T);
          for (int64_t q0 = qb * qblock; q0 < qe; q0 += kQ) {
            const int64_t nq = std::min(kQ, qe - q0);
            // Causal: keys past the tile's last query are masked for every row.
            const int64_t nke = d.causal ? std::min(nk, q0 + nq - k0) : nk;
            if (nke <= 0) continue;
            grad_scores(S.data(), dP.data(), dout, lse, Di.data(), q, Kt.data(), Vt.data(), d, b, h, q0, nq, k0, nke,
                        bf16 ? &*bf16 : nullptr);
            if (bf16) {
              // dV += Pᵀ·dO and dK += scale·dSᵀ·Q sum over the tile's queries,
              // dQ += scale·dS·K over its keys: the score tiles are the left
              // operands (transposed, rounded), the head's pairs the right ones.
              const int64_t nqp = bf16_pairs_len(nq), nkep = bf16_pairs_len(nke);
              uint16_t* A = bf16->A.get();
              const uint16_t* dO_pairs = bf16->L.pairs_t_at(bf16->dout_t.get(), dO_head, H * D, q0, nq, bf16->Bq.get());
              pack_bf16_rows_t(A, nqp, S.data(), kK, nke, nq);
              tile_gemm_bf16(nke, D, nq, 1.0f, A, nqp, dO_pairs, 2 * D, 1.0f, dV, ld);
              const uint16_t* q_pairs = bf16->L.pairs_t_at(bf16->q_t.get(), q + head, ld, q0, nq, bf16->Bq.get());
              pack_bf16_rows_t(A, nqp, dP.data(), kK, nke, nq);
              tile_gemm_bf16(nke, D, nq, scale, A, nqp, q_pairs, 2 * D, 1.0f, dK, ld);
              pack_bf16_rows(A, nkep, dP.data(), kK, nq, nke);
              tile_gemm_bf16(nq, D, nke, scale, A, nkep, k_pairs, 2 * D, 1.0f, dq + head + q0 * ld, ld);
            } else {
              tile_gemm_tn(nke, D, nq, 1.0f, S.data(), kK, dout + ((b * T + q0) * H + h) * D, H * D, 1.0f, dV, ld);
              tile_gemm_tn(nke, D, nq, scale, dP.data(), kK, q + head + q0 * ld, ld, 1.0f, dK, ld);
              tile_gemm_nn(nq, D, nke, scale, dP.data(), kK, k + head + k0 * ld, ld, 1.0f, dq + head + q0 * ld, ld);
            }
          }
        }
      }
    }
  }
}

BlockSelection full_selection(const AttnDims& d, int64_t block) {
  SPARTA_CHECK(block >= 1, "[attention.block_sparse] full_selection block size must be >= 1, got ", block);
  const int64_t nqb = (d.T + block - 1) / block;
  return ranged_selection(
      d, block, [](int64_t) { return int64_t{0}; },
      [&](int64_t qb) { return d.causal ? qb : nqb - 1; });
}

BlockSelection window_selection(const AttnDims& d, int64_t block, int64_t window_blocks) {
  SPARTA_CHECK(block >= 1, "[attention.block_sparse] window_selection block size must be >= 1, got ", block);
  SPARTA_CHECK(window_blocks >= 1, "[attention.block_sparse] window_selection needs window_blocks >= 1, got ",
               window_blocks);
  return ranged_selection(
      d, block, [&](int64_t qb) { return std::max<int64_t>(0, qb - window_blocks + 1); },
      [](int64_t qb) { return qb; });
}

}  // namespace sparta::ops
