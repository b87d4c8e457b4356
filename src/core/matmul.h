#pragma once
// Dtype-aware matrix multiply on oneDNN's matmul primitive, for mixed
// precision (BF16 / FP16 operands, FP32 accumulation, FP32 master weights).
// sgemm (core/gemm.h) stays the FP32 workhorse of the model; this is the
// typed path beside it.
//
//   C(M,N) = epilogue( op(A)(M,K) · op(B)(K,N) + bias + beta·C )
//   epilogue = identity, or GELU (tanh approximation, as ops/gelu.h)
//
// Row-major with leading dimensions, like sgemm: a MatRef describes the
// matrix as stored (rows x cols, row stride ld >= cols, in elements of its
// dtype); trans = true means the product uses its transpose.
//
// Types: A and B both F32, both BF16 or both F16; C is F32 or the operands'
// type. Products always accumulate in FP32; bias is FP32, one value per
// output column. Mixing BF16 with F16, or F32 with a 16-bit type, is refused
// (convert first: core/convert.h) so no silent conversion hides in a call.
//
// beta: oneDNN's sum post-op, applied before the GELU (so the GELU sees the
// whole pre-activation). With a 16-bit C the old C is read as 16-bit, the sum
// formed in FP32 and rounded to C's type once more: accumulating many
// products into a BF16/F16 C loses precision with every call; accumulate in
// an FP32 C when that matters (gradients). beta = 0 never reads C (NaN or
// garbage there is overwritten).
//
// Speed and fallbacks. Each distinct problem (shapes, strides, dtypes,
// transposes, bias/GELU/beta) creates its oneDNN primitive once; later calls
// take it from a process-wide, mutex-protected cache, so a training loop
// never re-creates one. Where oneDNN has no implementation for a 16-bit
// problem on this CPU -- FP16 matmul anywhere with Debian 12's oneDNN 2.6,
// BF16 on CPUs without AVX-512 (or under ONEDNN_MAX_CPU_ISA=AVX2) -- the call
// still succeeds: A and B are widened exactly to FP32, multiplied by the FP32
// primitive with the same bias/beta/GELU, and the result rounded to C's type.
// The numbers are those of the native path up to FP32 summation order; only
// the speed differs. matmul_implementation() says which path a problem takes.
//
// Threads. Debian's oneDNN uses OpenMP. Called outside a parallel region the
// primitive uses all OpenMP threads; called inside one (e.g. per head or per
// sequence in a `#pragma omp parallel for`), oneDNN's own parallel region is
// nested, and with nested parallelism off (OpenMP's default; sparta never
// turns it on) that region has one thread: the product runs on the calling
// thread only, as sgemm does (results checked by the tests). Concurrent calls
// from several threads are safe: the cache is locked, primitives are
// reentrant, and each thread executes on its own oneDNN stream.
//
// Operands live in host memory. A device (accelerator) field would join
// MatRef / MatOut when kernels for another device exist.
#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace sparta {

// A read-only matrix operand as stored.
struct MatRef {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  int64_t ld = 0;      // row stride in elements, >= cols
  bool trans = false;  // use the transpose: op(X) is cols x rows
};

// The output matrix (never transposed).
struct MatOut {
  void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  int64_t ld = 0;  // row stride in elements, >= cols
};

// Arithmetic for F32 operands.
//   Strict: IEEE FP32 products, FP32 accumulation (what sgemm computes).
//   Bf16:   the CPU analogue of TF32 (coarser: BF16 keeps 8 significant
//           bits, TF32 11). A and B are rounded to BF16 (each input moves by
//           up to 2^-9 ≈ 0.2% relative), their products are exact in FP32 and
//           accumulated in FP32; C, bias and beta stay FP32. Each product
//           term is thus off by up to ~2^-8 relative (Strict: 2^-24), about
//           2-3 correct significant digits in the result, less where terms
//           cancel. The rounding is done here explicitly
//           (core/convert.h, round to nearest even), then the BF16 primitive
//           runs: Debian 12's oneDNN 2.6 accepts fpmath_mode::bf16 for an
//           FP32 matmul but still computes strict FP32 (measured), so setting
//           that mode alone would not give the speed. Worth it for large
//           products on CPUs with AVX512-BF16 or AMX; elsewhere it falls
//           back to FP32 on the rounded inputs (same numbers, no gain).
enum class MatmulMath : uint8_t { Strict, Bf16 };

struct MatmulOptions {
  float beta = 0.0f;            // C = ... + beta·C (sum post-op); 0: C is write-only
  const float* bias = nullptr;  // (N,) FP32, added per output column; nullptr: none
  bool gelu = false;            // GELU (tanh approximation) on the result
  MatmulMath math = MatmulMath::Strict;
};

// C = epilogue(op(A)·op(B) + bias + beta·C). Throws sparta::Error with a
// one-line message for unsupported types, mismatched shapes, ld < cols,
// K = 0, or a failure inside oneDNN. M = 0 or N = 0 is a no-op.
void matmul(const MatRef& a, const MatRef& b, const MatOut& c, const MatmulOptions& options = {});

// Which implementation matmul() uses for this problem: oneDNN's name for the
// primitive (e.g. "brg:avx512_core_bf16", "gemm:jit"), or, for the FP32
// fallback, "f32 fallback (" + that name + ")". Creates and caches the
// primitive like a call would, and checks its arguments the same way, but
// reads and writes no data.
std::string matmul_implementation(const MatRef& a, const MatRef& b, const MatOut& c,
                                  const MatmulOptions& options = {});

}  // namespace sparta
