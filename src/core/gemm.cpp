#include "core/gemm.h"

#include <oneapi/dnnl/dnnl.h>

#include "core/error.h"
#include "core/operand_extent.h"

namespace sparta {

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  check_operand_extent("gemm", "A", A, trans_a ? K : M, trans_a ? M : K, lda, sizeof(float));
  check_operand_extent("gemm", "B", B, trans_b ? N : K, trans_b ? K : N, ldb, sizeof(float));
  check_operand_extent("gemm", "C", C, M, N, ldc, sizeof(float));
  dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb,
                                beta, C, ldc);
  SPARTA_CHECK(st == dnnl_success, "[gemm] oneDNN sgemm failed (status ", static_cast<int>(st), ") for M=", M,
               " N=", N, " K=", K);
}

}  // namespace sparta
