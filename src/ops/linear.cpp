#include "ops/linear.h"

#include <algorithm>
#include <cstddef>
#include <vector>

#include "core/convert.h"
#include "core/error.h"
#include "ops/elementwise.h"

namespace sparta::ops {
namespace {

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;
// Columns per work item of the bias-gradient reduction (a multiple of 16
// floats, so with a 64-byte aligned db no two threads write one cache line).
constexpr int64_t kBiasCols = 64;
// Rows of dy the backward's products take at a time. Their operands in
// 16 bits (dy rounded) and oneDNN's scratch for them grow with the rows:
// unchunked, a batch of 128 × 256 tokens held transient copies of about
// 100 MiB per product. 4096 rows keep each product large enough to run at
// the GEMM rate.
constexpr int64_t kBackwardRows = 4096;

void check_layer(const char* op, const MatRef& x, const MatRef& w) {
  SPARTA_CHECK(x.rows >= 0 && x.cols > 0 && w.rows > 0, "[", op, "] invalid sizes N=", x.rows, " in=", x.cols,
               " out=", w.rows);
  SPARTA_CHECK(!x.trans && !w.trans, "[", op, "] takes x and w as stored (no transposed views)");
  SPARTA_CHECK(w.cols == x.cols, "[", op, "] x has ", x.cols, " columns but w is ", w.rows, "x", w.cols);
}

// db[c] += sum over rows of dy[r * ld + c], rows in order; vectorised across c.
SPARTA_KERNEL_CLONES void column_sums(float* db, const float* dy, int64_t N, int64_t ld, int64_t width) {
  float acc[kBiasCols] = {};
  for (int64_t r = 0; r < N; ++r) {
    const float* row = dy + r * ld;
    for (int64_t c = 0; c < width; ++c) acc[c] += row[c];
  }
  for (int64_t c = 0; c < width; ++c) db[c] += acc[c];
}

void bias_gradient(float* db, const float* dy, int64_t N, int64_t out) {
  const int64_t chunks = (out + kBiasCols - 1) / kBiasCols;
#pragma omp parallel for schedule(static) if (N * out >= kParallelMin)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t c0 = ch * kBiasCols;
    column_sums(db + c0, dy + c0, N, out, std::min(kBiasCols, out - c0));
  }
}

// dy rounded to a 16-bit type, in a per-thread buffer kept between calls.
const uint16_t* rounded_gradient(const float* dy, DType t, int64_t n) {
  thread_local std::vector<uint16_t> buf;
  buf.resize(static_cast<size_t>(n));
  t == DType::BF16 ? f32_to_bf16(buf.data(), dy, n) : f32_to_f16(buf.data(), dy, n);
  return buf.data();
}

}  // namespace

void linear_forward(const MatOut& y, const MatRef& x, const MatRef& w, const float* b, bool gelu, MatmulMath math) {
  check_layer("linear", x, w);
  MatRef wt = w;
  wt.trans = true;
  matmul(x, wt, y, {.beta = 0.0f, .bias = b, .gelu = gelu, .math = math});
}

void linear_backward(float* dx, float* dw, float* db, const float* dy, const MatRef& x, const MatRef& w,
                     bool accumulate_dx, MatmulMath math) {
  check_layer("linear backward", x, w);
  const int64_t N = x.rows, in = x.cols, out = w.rows;
  const DType t = x.dtype;
  for (int64_t r0 = 0; r0 < N; r0 += kBackwardRows) {
    const int64_t rows = std::min(kBackwardRows, N - r0);
    const float* dy_rows = dy + r0 * out;
    const MatRef g = t == DType::F32 ? dense_matrix(dy_rows, t, rows, out)
                                     : dense_matrix(rounded_gradient(dy_rows, t, rows * out), t, rows, out);
    if (dx != nullptr)
      matmul(g, w, dense_output(dx + r0 * in, DType::F32, rows, in),
             {.beta = accumulate_dx ? 1.0f : 0.0f, .math = math});
    MatRef gt = g;
    gt.trans = true;
    MatRef x_rows = x;
    x_rows.data = static_cast<const std::byte*>(x.data) + r0 * x.ld * static_cast<int64_t>(dtype_size(t));
    x_rows.rows = rows;
    matmul(gt, x_rows, dense_output(dw, DType::F32, out, in), {.beta = 1.0f, .math = math});
  }
  if (db != nullptr) bias_gradient(db, dy, N, out);
}

void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t N, int64_t in,
                    int64_t out) {
  SPARTA_CHECK(N >= 0 && in > 0 && out > 0, "[linear] invalid sizes N=", N, " in=", in, " out=", out);
  linear_forward(dense_output(y, DType::F32, N, out), dense_matrix(x, DType::F32, N, in),
                 dense_matrix(w, DType::F32, out, in), b);
}

void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     int64_t N, int64_t in, int64_t out, bool accumulate_dx) {
  SPARTA_CHECK(N >= 0 && in > 0 && out > 0, "[linear backward] invalid sizes N=", N, " in=", in, " out=", out);
  linear_backward(dx, dw, db, dy, dense_matrix(x, DType::F32, N, in), dense_matrix(w, DType::F32, out, in),
                  accumulate_dx);
}

}  // namespace sparta::ops
