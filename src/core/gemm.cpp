#include "core/gemm.h"

#include <oneapi/dnnl/dnnl.h>

#include "core/error.h"

#if defined(__SANITIZE_ADDRESS__)
#define SPARTA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPARTA_ASAN 1
#endif
#endif
#ifdef SPARTA_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace sparta {

namespace {

#ifdef SPARTA_ASAN
// oneDNN's JIT code is not instrumented, so ASan cannot see a GEMM that reads
// or writes past its buffers; a sanitizer build checks each operand's whole
// extent (rows x cols, row-major with leading dimension ld) before the call.
void check_operand(const char* name, const float* p, int64_t rows, int64_t cols, int64_t ld) {
  if (rows == 0 || cols == 0) return;
  SPARTA_CHECK(ld >= cols, "[gemm] ", name, ": leading dimension ", ld, " < ", cols, " columns");
  const size_t bytes = static_cast<size_t>((rows - 1) * ld + cols) * sizeof(float);
  if (const void* bad = __asan_region_is_poisoned(const_cast<float*>(p), bytes)) {
    __asan_describe_address(const_cast<void*>(bad));
    SPARTA_CHECK(false, "[gemm] ", name, " (", rows, "x", cols, ", ld ", ld, ") reaches unaddressable memory at byte ",
                 static_cast<const char*>(bad) - reinterpret_cast<const char*>(p), " of ", bytes);
  }
}
#endif

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
#ifdef SPARTA_ASAN
  check_operand("A", A, trans_a ? K : M, trans_a ? M : K, lda);
  check_operand("B", B, trans_b ? N : K, trans_b ? K : N, ldb);
  check_operand("C", C, M, N, ldc);
#endif
  dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb,
                                beta, C, ldc);
  SPARTA_CHECK(st == dnnl_success, "[gemm] oneDNN sgemm failed (status ", static_cast<int>(st), ") for M=", M,
               " N=", N, " K=", K);
}

}  // namespace sparta
