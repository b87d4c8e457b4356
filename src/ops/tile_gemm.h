#pragma once
// Small row-major matrix products for the tiles of the block-sparse
// attention kernel (16-64 query rows against 64-512 keys of head dim 64).
// At these sizes a library GEMM call costs more in dispatch and packing
// than in arithmetic (oneDNN sgemm: ~15 us for 16x64x64, ~9 GFLOP/s), so
// the tiles are multiplied by hand: a 4-row × 64-column block of C is held
// in registers while the k dimension streams through.
//
// Every element of C is one sum over k in increasing order, so results do
// not depend on threading or on how callers split the rows; they can differ
// in the last bits from oneDNN's (another summation order). When beta == 0,
// C is not read (it may hold garbage or NaN).
#include <cstdint>

namespace sparta::ops {

// C (m×n, ldc) = alpha · A · B + beta · C, with A (m×k, lda), B (k×n, ldb).
void tile_gemm_nn(int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda, const float* B,
                  int64_t ldb, float beta, float* C, int64_t ldc);

// C (m×n, ldc) = alpha · Aᵀ · B + beta · C, with A stored (k×m, lda), B (k×n, ldb).
void tile_gemm_tn(int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda, const float* B,
                  int64_t ldb, float beta, float* C, int64_t ldc);

// Xᵀ of a strided (rows × cols) matrix: out[c * ldo + r] = X[r * ldx + c].
void transpose_into(float* out, int64_t ldo, const float* X, int64_t ldx, int64_t rows, int64_t cols);

}  // namespace sparta::ops
