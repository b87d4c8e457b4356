#include "core/matmul.h"

#include <omp.h>

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <unordered_map>
#include <vector>

#include "core/convert.h"
#include "core/error.h"
#include "core/operand_extent.h"

namespace sparta {

namespace {

using dnnl::memory;

struct Dims {
  int64_t M, N, K;
};

bool is_matmul_type(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

void check_shape(const char* name, const void* data, int64_t rows, int64_t cols, int64_t ld) {
  SPARTA_CHECK(rows >= 0 && cols >= 0, "[matmul] ", name, " has a negative shape ", rows, "x", cols);
  SPARTA_CHECK(ld >= cols && ld >= 1, "[matmul] ", name, ": leading dimension ", ld, " < ", cols, " columns");
  SPARTA_CHECK(data != nullptr || rows == 0 || cols == 0, "[matmul] ", name, " is ", rows, "x", cols,
               " but its data pointer is null");
}

Dims validate(const MatRef& a, const MatRef& b, const MatOut& c, const MatmulOptions& o) {
  SPARTA_CHECK(is_matmul_type(a.dtype), "[matmul] A is ", dtype_name(a.dtype), "; matmul takes F32, BF16 or F16");
  SPARTA_CHECK(is_matmul_type(b.dtype), "[matmul] B is ", dtype_name(b.dtype), "; matmul takes F32, BF16 or F16");
  SPARTA_CHECK(a.dtype == b.dtype, "[matmul] A is ", dtype_name(a.dtype), " but B is ", dtype_name(b.dtype),
               ": A and B must have the same type (convert one with core/convert.h)");
  SPARTA_CHECK(c.dtype == DType::F32 || c.dtype == a.dtype, "[matmul] C is ", dtype_name(c.dtype), " but A and B are ",
               dtype_name(a.dtype), ": C must be F32",
               a.dtype == DType::F32 ? std::string(" too") : cat(" or ", dtype_name(a.dtype)));
  SPARTA_CHECK(o.math == MatmulMath::Strict || (a.dtype == DType::F32 && c.dtype == DType::F32),
               "[matmul] MatmulMath::Bf16 is for F32 operands and output, got A ", dtype_name(a.dtype), " and C ",
               dtype_name(c.dtype));
  SPARTA_CHECK(std::isfinite(o.beta), "[matmul] beta must be finite, got ", o.beta);
  check_shape("A", a.data, a.rows, a.cols, a.ld);
  check_shape("B", b.data, b.rows, b.cols, b.ld);
  check_shape("C", c.data, c.rows, c.cols, c.ld);
  const Dims d{a.trans ? a.cols : a.rows, b.trans ? b.rows : b.cols, a.trans ? a.rows : a.cols};
  const int64_t kb = b.trans ? b.cols : b.rows;
  SPARTA_CHECK(d.K == kb, "[matmul] op(A) is ", d.M, "x", d.K, " but op(B) is ", kb, "x", d.N,
               ": inner dimensions differ");
  SPARTA_CHECK(c.rows == d.M && c.cols == d.N, "[matmul] C is ", c.rows, "x", c.cols, " but op(A)·op(B) is ", d.M,
               "x", d.N);
  SPARTA_CHECK(d.K > 0 || d.M == 0 || d.N == 0, "[matmul] the inner dimension K is 0 (", d.M, "x0 times 0x", d.N,
               "); an empty product is not supported");
  return d;
}

memory::data_type dnnl_type(DType t) {
  switch (t) {
    case DType::BF16: return memory::data_type::bf16;
    case DType::F16: return memory::data_type::f16;
    default: return memory::data_type::f32;
  }
}

// Everything a oneDNN matmul primitive is specialised on; the cache key.
struct Problem {
  int64_t M, N, K;
  DType ab, c;            // element types of A/B and of C
  int64_t a_rs, a_cs;     // strides of op(A) (M x K): row, column
  int64_t b_rs, b_cs;     // strides of op(B) (K x N)
  int64_t ldc;
  uint32_t beta_bits;     // the sum post-op's scale, by bits (0: no sum post-op)
  bool bias, gelu;
  bool operator==(const Problem&) const = default;
};

struct ProblemHash {
  size_t operator()(const Problem& p) const {
    size_t h = 0;
    auto mix = [&h](uint64_t v) { h ^= std::hash<uint64_t>{}(v) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2); };
    for (int64_t v : {p.M, p.N, p.K, p.a_rs, p.a_cs, p.b_rs, p.b_cs, p.ldc}) mix(static_cast<uint64_t>(v));
    mix(static_cast<uint64_t>(p.ab) | static_cast<uint64_t>(p.c) << 8 | static_cast<uint64_t>(p.bias) << 16 |
        static_cast<uint64_t>(p.gelu) << 17 | static_cast<uint64_t>(p.beta_bits) << 32);
    return h;
  }
};

Problem make_problem(const Dims& d, const MatRef& a, const MatRef& b, const MatOut& c, const MatmulOptions& o) {
  Problem p{};
  p.M = d.M, p.N = d.N, p.K = d.K;
  p.ab = a.dtype, p.c = c.dtype;
  // op(X) of a row-major matrix with row stride ld: plain {ld, 1}, transposed {1, ld}.
  p.a_rs = a.trans ? 1 : a.ld, p.a_cs = a.trans ? a.ld : 1;
  p.b_rs = b.trans ? 1 : b.ld, p.b_cs = b.trans ? b.ld : 1;
  p.ldc = c.ld;
  p.beta_bits = o.beta == 0.0f ? 0u : std::bit_cast<uint32_t>(o.beta);  // -0.0 is 0 too
  p.bias = o.bias != nullptr;
  p.gelu = o.gelu;
  return p;
}

struct Primitive {
  std::optional<dnnl::matmul> matmul;  // empty: oneDNN has no implementation of this problem
  memory::desc a, b, bias, c, scratchpad;
  std::string impl;
};

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One stream per calling thread: concurrent executions then never share a
// stream object (CPU streams are cheap; oneDNN does not promise that one
// stream may be used from several threads at once).
dnnl::stream& thread_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

std::shared_ptr<const Primitive> create_primitive(const Problem& p) {
  auto prim = std::make_shared<Primitive>();
  prim->a = memory::desc({p.M, p.K}, dnnl_type(p.ab), {p.a_rs, p.a_cs});
  prim->b = memory::desc({p.K, p.N}, dnnl_type(p.ab), {p.b_rs, p.b_cs});
  prim->c = memory::desc({p.M, p.N}, dnnl_type(p.c), {p.ldc, 1});
  if (p.bias) prim->bias = memory::desc({1, p.N}, memory::data_type::f32, {p.N, 1});
  dnnl::post_ops post_ops;
  // Sum before GELU: the GELU then applies to the whole pre-activation, and
  // oneDNN 2.6 keeps its fast kernels for strided C only in this order.
  if (p.beta_bits != 0) post_ops.append_sum(std::bit_cast<float>(p.beta_bits));
  if (p.gelu) post_ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_tanh, 0.0f, 0.0f);
  dnnl::primitive_attr attr;
  attr.set_post_ops(post_ops);
  // Our scratchpad, not oneDNN's: with the library's own, every execution
  // of a BF16 (brgemm) primitive allocates and page-faults its buffers anew,
  // which cost as much time as the products at the bench GPT's sizes.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  try {
    const auto desc = p.bias ? dnnl::matmul::desc(prim->a, prim->b, prim->bias, prim->c)
                             : dnnl::matmul::desc(prim->a, prim->b, prim->c);
    const dnnl::matmul::primitive_desc pd(desc, attr, cpu_engine());
    prim->impl = pd.impl_info_str();
    prim->scratchpad = pd.scratchpad_desc();
    prim->matmul.emplace(pd);
  } catch (const dnnl::error& e) {
    SPARTA_CHECK(e.status == dnnl_unimplemented && p.ab != DType::F32, "[matmul] oneDNN could not create a ",
                 dtype_name(p.ab), " matmul for M=", p.M, " N=", p.N, " K=", p.K, ": ", e.what());
  }
  return prim;
}

std::shared_ptr<const Primitive> cached_primitive(const Problem& p) {
  static std::mutex mutex;
  static std::unordered_map<Problem, std::shared_ptr<const Primitive>, ProblemHash> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = cache[p];
  if (!slot) slot = create_primitive(p);  // under the lock: creation is rare, and never twice
  return slot;
}

void execute(const Primitive& prim, const void* a, const void* b, const float* bias, void* c, const Dims& d) {
  dnnl::engine& engine = cpu_engine();
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(prim.a, engine, const_cast<void*>(a))},
                                       {DNNL_ARG_WEIGHTS, memory(prim.b, engine, const_cast<void*>(b))},
                                       {DNNL_ARG_DST, memory(prim.c, engine, c)}};
  if (bias) args.emplace(DNNL_ARG_BIAS, memory(prim.bias, engine, const_cast<float*>(bias)));
  // One per calling thread, kept between calls and grown to the largest
  // primitive's need (concurrent executions never share it).
  thread_local std::vector<std::byte> scratchpad;
  if (const size_t bytes = prim.scratchpad.get_size(); bytes > 0) {
    if (scratchpad.size() < bytes) scratchpad.resize(bytes);
    args.emplace(DNNL_ARG_SCRATCHPAD, memory(prim.scratchpad, engine, scratchpad.data()));
  }
  try {
    prim.matmul->execute(thread_stream(), args);
    thread_stream().wait();
  } catch (const dnnl::error& e) {
    SPARTA_CHECK(false, "[matmul] oneDNN matmul failed for M=", d.M, " N=", d.N, " K=", d.K, ": ", e.what());
  }
}

// Converts n elements between the matmul types (same type: a copy).
void convert_elements(void* dst, DType to, const void* src, DType from, int64_t n) {
  if (to == from) {
    std::memcpy(dst, src, static_cast<size_t>(n) * dtype_size(to));
  } else if (from == DType::F32) {
    auto* out = static_cast<uint16_t*>(dst);
    auto* in = static_cast<const float*>(src);
    to == DType::BF16 ? f32_to_bf16(out, in, n) : f32_to_f16(out, in, n);
  } else {
    SPARTA_CHECK(to == DType::F32, "[matmul] no conversion from ", dtype_name(from), " to ", dtype_name(to));
    auto* out = static_cast<float*>(dst);
    auto* in = static_cast<const uint16_t*>(src);
    from == DType::BF16 ? bf16_to_f32(out, in, n) : f16_to_f32(out, in, n);
  }
}

// Row-by-row conversion of a rows x cols matrix between strided buffers.
// Rows in parallel when the matrix is large and the caller is not already in
// a parallel region (each row's conversion is independent).
void convert_matrix(void* dst, DType to, int64_t ld_dst, const void* src, DType from, int64_t ld_src, int64_t rows,
                    int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols >= (int64_t{1} << 16) && rows > 1 && !omp_in_parallel())
  for (int64_t r = 0; r < rows; ++r)
    convert_elements(static_cast<std::byte*>(dst) + r * ld_dst * dtype_size(to), to,
                     static_cast<const std::byte*>(src) + r * ld_src * dtype_size(from), from, cols);
}

// Per-thread buffers for converted operands, kept between calls so a training
// loop does not allocate each step (they grow to the largest operand seen).
struct Scratch {
  std::vector<std::byte> a16, b16, a32, b32, c32;
  static void* reserve(std::vector<std::byte>& buf, int64_t elements, DType t) {
    buf.resize(static_cast<size_t>(elements) * dtype_size(t));
    return buf.data();
  }
};
Scratch& thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

// The same operand stored densely (ld = cols) in type t at data.
MatRef dense_like(const MatRef& x, DType t, const void* data) { return {data, t, x.rows, x.cols, x.cols, x.trans}; }

MatRef converted(const MatRef& x, DType t, std::vector<std::byte>& buf) {
  const MatRef out = dense_like(x, t, Scratch::reserve(buf, x.rows * x.cols, t));
  convert_matrix(const_cast<void*>(out.data), t, out.ld, x.data, x.dtype, x.ld, x.rows, x.cols);
  return out;
}

// What oneDNN actually multiplies: F32 operands under MatmulMath::Bf16 are
// rounded to BF16 first (data == nullptr: shapes only, nothing converted).
std::pair<MatRef, MatRef> effective_operands(const MatRef& a, const MatRef& b, const MatmulOptions& o,
                                             Scratch* scratch) {
  if (o.math != MatmulMath::Bf16) return {a, b};
  if (!scratch) return {dense_like(a, DType::BF16, nullptr), dense_like(b, DType::BF16, nullptr)};
  return {converted(a, DType::BF16, scratch->a16), converted(b, DType::BF16, scratch->b16)};
}

MatOut f32_output_like(const MatOut& c, void* data) { return {data, DType::F32, c.rows, c.cols, c.cols}; }

}  // namespace

void matmul(const MatRef& a, const MatRef& b, const MatOut& c, const MatmulOptions& options) {
  const Dims d = validate(a, b, c, options);
  if (d.M == 0 || d.N == 0) return;
  check_operand_extent("matmul", "A", a.data, a.rows, a.cols, a.ld, dtype_size(a.dtype));
  check_operand_extent("matmul", "B", b.data, b.rows, b.cols, b.ld, dtype_size(b.dtype));
  check_operand_extent("matmul", "C", c.data, c.rows, c.cols, c.ld, dtype_size(c.dtype));
  check_operand_extent("matmul", "bias", options.bias, options.bias ? 1 : 0, d.N, d.N, sizeof(float));

  Scratch& scratch = thread_scratch();
  const auto [ea, eb] = effective_operands(a, b, options, &scratch);
  const auto prim = cached_primitive(make_problem(d, ea, eb, c, options));
  if (prim->matmul) return execute(*prim, ea.data, eb.data, options.bias, c.data, d);

  // No 16-bit implementation here: widen A and B exactly, run the FP32
  // primitive with the same epilogue, round the result to C's type.
  const MatRef fa = converted(ea, DType::F32, scratch.a32), fb = converted(eb, DType::F32, scratch.b32);
  MatOut fc = c;
  if (c.dtype != DType::F32) {
    fc = f32_output_like(c, Scratch::reserve(scratch.c32, d.M * d.N, DType::F32));
    if (options.beta != 0.0f) convert_matrix(fc.data, DType::F32, fc.ld, c.data, c.dtype, c.ld, d.M, d.N);
  }
  const auto f32_prim = cached_primitive(make_problem(d, fa, fb, fc, options));
  execute(*f32_prim, fa.data, fb.data, options.bias, fc.data, d);
  if (c.dtype != DType::F32) convert_matrix(c.data, c.dtype, c.ld, fc.data, DType::F32, fc.ld, d.M, d.N);
}

std::string matmul_implementation(const MatRef& a, const MatRef& b, const MatOut& c, const MatmulOptions& options) {
  const Dims d = validate(a, b, c, options);
  if (d.M == 0 || d.N == 0) return "none (empty product)";
  const auto [ea, eb] = effective_operands(a, b, options, nullptr);
  const auto prim = cached_primitive(make_problem(d, ea, eb, c, options));
  if (prim->matmul) return prim->impl;
  const MatOut fc = c.dtype == DType::F32 ? c : f32_output_like(c, nullptr);
  const auto f32_prim = cached_primitive(
      make_problem(d, dense_like(ea, DType::F32, nullptr), dense_like(eb, DType::F32, nullptr), fc, options));
  return "f32 fallback (" + f32_prim->impl + ")";
}

}  // namespace sparta
