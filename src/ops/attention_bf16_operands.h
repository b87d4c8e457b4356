#pragma once
// BF16 operands of the sparse attention kernels (AttnDims::bf16_products),
// shared by the block-sparse and row-sparse kernels: each head's q, k, v or
// dout packed once per call into the layouts of ops/tile_gemm_bf16.h,
//   rows     (T × Dp): the left operand of the score products (q, dout);
//   pairs_d  (Dp/2 pair rows of 2T): Kᵀ or Vᵀ, the right operand of q·kᵀ
//            and dout·vᵀ, read at any key offset;
//   pairs_t  (Tp/2 pair rows of 2D): v, k, q or dout as the right operand of
//            the products that sum over keys or queries (p·v, dS·k, Pᵀ·dO,
//            dSᵀ·q), read at even positions; a tile at an odd position (odd
//            block sizes) is packed on its own.
// Dp, Tp: D and T rounded up to even (bf16_pairs_len), padding zero.
#include <cstdint>
#include <memory>

#include "ops/attention.h"
#include "ops/tile_gemm_bf16.h"

namespace sparta::ops {

struct Bf16HeadLayout {
  int64_t T, D, Dp, Tp;
  explicit Bf16HeadLayout(const AttnDims& d)
      : T(d.T), D(d.D), Dp(bf16_pairs_len(d.D)), Tp(bf16_pairs_len(d.T)) {}
  // Elements of one packed head in any of the three layouts.
  int64_t head_elems() const { return T * Dp > Tp * D ? T * Dp : Tp * D; }
  // x: the head's token 0, rows ld apart.
  void rows(uint16_t* dst, const float* x, int64_t ld) const { pack_bf16_rows(dst, Dp, x, ld, T, D); }
  void pairs_d(uint16_t* dst, const float* x, int64_t ld) const { pack_bf16_pairs_t(dst, 2 * T, x, ld, D, T); }
  void pairs_t(uint16_t* dst, const float* x, int64_t ld) const { pack_bf16_pairs(dst, 2 * D, x, ld, T, D); }
  // Rows [t0, t0 + n) of the head x as pairs along T (ld 2D): a view into
  // its packing `packed` when t0 is even, else packed into `scratch` (room
  // for bf16_pairs_len(n) · D values).
  const uint16_t* pairs_t_at(const uint16_t* packed, const float* x, int64_t ld, int64_t t0, int64_t n,
                             uint16_t* scratch) const {
    if (t0 % 2 == 0) return packed + t0 * D;
    pack_bf16_pairs(scratch, 2 * D, x + t0 * ld, ld, n, D);
    return scratch;
  }
};

// Uninitialised BF16 storage (every element is written by a packer first).
inline std::unique_ptr<uint16_t[]> bf16_buffer(int64_t n) {
  return std::make_unique_for_overwrite<uint16_t[]>(static_cast<size_t>(n > 0 ? n : 1));
}

// One call's K as pairs along D and V as pairs along T, every head
// (B·H·head_elems() values each), packed in parallel over heads.
struct Bf16KeysValues {
  int64_t head = 0;  // elements per head
  std::unique_ptr<uint16_t[]> kd, vt;
  Bf16KeysValues(const float* k, const float* v, const AttnDims& d);
  const uint16_t* k_pairs_d(int64_t bh) const { return kd.get() + bh * head; }
  const uint16_t* v_pairs_t(int64_t bh) const { return vt.get() + bh * head; }
};

}  // namespace sparta::ops
