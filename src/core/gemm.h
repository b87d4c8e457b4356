#pragma once
// Single-precision GEMM through oneDNN (JIT kernels picked at run time for
// AVX2 / AVX-512 / AMX machines). Row-major:
//   C(M,N) = alpha * op(A)(M,K) * op(B)(K,N) + beta * C
// op(X) = X^T when trans is true. lda/ldb/ldc are row strides in elements.
// Called inside an OpenMP parallel region it runs on the calling thread only.
#include <cstdint>

namespace sparta {

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace sparta
