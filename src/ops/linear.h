#pragma once
// Fully connected layer in PyTorch nn.Linear layout: y = x · wᵀ + b, on the
// typed matmul (core/matmul.h): x and w F32, BF16 or F16 (both the same),
// FP32 accumulation, bias and gradients FP32.
#include <cstdint>

#include "core/matmul.h"

namespace sparta::ops {

// y: (N, out) F32 or x's type; x: (N, in); w: (out, in) with x's type;
// b: (out,) FP32 or nullptr (no bias). y is overwritten. gelu: y =
// GELU(x·wᵀ + b) in the same pass (tanh approximation, as ops/gelu.h).
// math: MatmulMath::Bf16 rounds F32 operands to BF16 (core/matmul.h).
void linear_forward(const MatOut& y, const MatRef& x, const MatRef& w, const float* b, bool gelu = false,
                    MatmulMath math = MatmulMath::Strict);

// dy: (N, out) FP32; x (N, in) and w (out, in) as in the forward call.
//   dx (N, in) FP32 = dy · w — overwritten, or added when accumulate_dx;
//                   skipped if dx == nullptr.
//   dw (out, in) FP32 += dyᵀ · x.
//   db (out,)    += column sums of dy; skipped if db == nullptr. Each column is
//                   summed over rows 0..N-1 in order on one thread, so db does
//                   not depend on the thread count.
// With 16-bit x and w, dy is rounded to their type for both products (the
// mixed-precision convention: 16-bit operands, FP32 accumulation); db always
// sums the FP32 dy.
void linear_backward(float* dx, float* dw, float* db, const float* dy, const MatRef& x, const MatRef& w,
                     bool accumulate_dx = false, MatmulMath math = MatmulMath::Strict);

// The FP32 forms: dense row-major buffers, sizes given.
void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t N, int64_t in,
                    int64_t out);
void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     int64_t N, int64_t in, int64_t out, bool accumulate_dx = false);

// Dense row-major views for the typed forms.
inline MatRef dense_matrix(const void* data, DType t, int64_t rows, int64_t cols) {
  return {data, t, rows, cols, cols, false};
}
inline MatOut dense_output(void* data, DType t, int64_t rows, int64_t cols) { return {data, t, rows, cols, cols}; }

}  // namespace sparta::ops
