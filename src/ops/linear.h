#pragma once
// Fully connected layer in PyTorch nn.Linear layout: y = x · wᵀ + b.
#include <cstdint>

namespace sparta::ops {

// y: (N, out); x: (N, in); w: (out, in); b: (out,) or nullptr (no bias).
// y is overwritten. The GEMM is oneDNN's sgemm (core/gemm.h).
void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t N, int64_t in,
                    int64_t out);

// dy: (N, out); x: (N, in); w: (out, in).
//   dx (N, in)   = dy · w — overwritten, or added when accumulate_dx; skipped if dx == nullptr.
//   dw (out, in) += dyᵀ · x.
//   db (out,)    += column sums of dy; skipped if db == nullptr. Each column is
//                   summed over rows 0..N-1 in order on one thread, so db does
//                   not depend on the thread count.
void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     int64_t N, int64_t in, int64_t out, bool accumulate_dx = false);

}  // namespace sparta::ops
