#pragma once
// Tile products with BF16 operands and FP32 accumulation: the bf16 twin of
// tile_gemm.h for the block-sparse attention kernels under mixed precision.
//
// Operands are packed first (FP32 -> BF16, round to nearest even, as
// core/convert.h), into the layouts AVX512-BF16's VDPBF16PS consumes: it
// multiplies pairs of BF16 values and adds both products to one FP32 lane,
// so the k dimension is walked two at a time. With kp = k rounded up to even
// (the padding is zero, so it adds nothing):
//   A, "rows":  element (i, p) at A[i * lda + p], rows of kp values;
//   B, "pairs": element (p, j) at B[(p / 2) * ldb + 2 * j + p % 2], i.e. for
//               each pair of k the two values of column j side by side.
// Packing costs O(m·k) / O(k·n) against the product's O(m·n·k), and a packed
// operand is reused by every tile it meets (a key block's pairs by every
// query tile that selected it).
//
// The kernel runs VDPBF16PS where the CPU has AVX512-BF16 (picked at run
// time, never from compile flags) and otherwise widens to FP32 and uses
// FMAs in the same pair order; the two can differ in the last bits of the
// FP32 sum (VDPBF16PS rounds once per pair, flushes subnormals), never in
// what is multiplied. As in tile_gemm.h, every element of C is one sum over
// k in increasing pair order, independent of threading; with beta == 0 C is
// not read.
#include <cstdint>

namespace sparta::ops {

// k rounded up to even: the packed length of a k dimension.
inline int64_t bf16_pairs_len(int64_t k) { return k + (k & 1); }

// C (m×n, ldc) = alpha · A · B + beta · C with A packed as rows (m × kp,
// lda >= kp) and B packed as pairs (kp/2 pair rows, ldb >= 2n).
void tile_gemm_bf16(int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* A, int64_t lda, const uint16_t* B,
                    int64_t ldb, float beta, float* C, int64_t ldc);

// A rows from A = X, X an FP32 (m × k) matrix with row stride ldx.
void pack_bf16_rows(uint16_t* A, int64_t lda, const float* X, int64_t ldx, int64_t m, int64_t k);
// A rows from A = Xᵀ, X stored (k × m) with row stride ldx.
void pack_bf16_rows_t(uint16_t* A, int64_t lda, const float* X, int64_t ldx, int64_t m, int64_t k);
// B pairs from B = X, X stored (k × n) with row stride ldx.
void pack_bf16_pairs(uint16_t* B, int64_t ldb, const float* X, int64_t ldx, int64_t k, int64_t n);
// B pairs from B = Xᵀ, X stored (n × k) with row stride ldx (Kᵀ from the
// rows of K: each pair is two neighbours of one row).
void pack_bf16_pairs_t(uint16_t* B, int64_t ldb, const float* X, int64_t ldx, int64_t k, int64_t n);

// Whether tile_gemm_bf16 runs VDPBF16PS on this machine (false in
// SPARTA_PORTABLE_KERNELS builds), for tests and benchmark reports.
bool tile_gemm_bf16_uses_avx512bf16();

}  // namespace sparta::ops
