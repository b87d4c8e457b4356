#pragma once
// Numeric precision of a model's matrix products (mixed precision).
//
//   fp32       everything FP32.
//   bf16       matrix products of the linear layers (and the LM head unless
//              the policy keeps it FP32) take BF16 operands: 16-bit copies of
//              the FP32 master weights, refreshed whenever the weights change,
//              and BF16 activations, which are also what the forward saves for
//              the backward. Products accumulate in FP32; gradients, master
//              weights and optimizer state stay FP32.
//   fp16       as bf16 with FP16 operands (IEEE half: 11 significant bits
//              but a range of only ~6e-8 .. 65504), so gradients need loss
//              scaling (train/loss_scaler.h) to neither underflow nor
//              overflow. Debian 12's oneDNN has no FP16 matmul for x86: the
//              products widen FP16 operands exactly to FP32 (core/matmul.h),
//              so fp16 gives FP16's rounding and memory, not its speed.
//   fp32-fast  FP32 storage everywhere; the same products round their FP32
//              operands to BF16 inside the matmul and accumulate in FP32 (the
//              CPU analogue of TF32: about 3 significant digits per product
//              term; core/matmul.h says exactly what it computes).
//
// Attention's own products ("h.<layer>.attn.core": q·kᵀ and p·v, and the
// four products of their backward) take BF16 operands with FP32
// accumulation in bf16 and fp32-fast (AttnDims::bf16_products); they are
// FP32 in fp32 and in fp16 (there is no FP16 attention kernel).
// Under bf16 and fp16 the attention inputs q|k|v are stored for backward in
// the 16-bit type and the attention runs on their widened values.
//
// Always FP32, whatever the precision: the token embedding, LayerNorm
// (statistics and output), softmax and its statistics, the loss, the
// residual stream, gradient norms and the optimizer.
//
// The policy names the modules that stay FP32 in bf16, fp16 and fp32-fast,
// by glob pattern ('*' any run of characters, '?' one) over the matrix-product
// module names "h.<layer>.attn.qkv", "h.<layer>.attn.proj",
// "h.<layer>.mlp.fc", "h.<layer>.mlp.proj", "head" (the logits) and the
// attention modules "h.<layer>.attn.core".
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/matmul.h"

namespace sparta {

enum class Precision : uint8_t { FP32, BF16, FP16, FP32Fast };

// "fp32", "bf16", "fp16", "fp32-fast".
std::string_view precision_name(Precision p);
// Inverse of precision_name; sparta::Error naming the value and the choices.
Precision parse_precision(std::string_view name);
// The accepted names, for messages and --help: "fp32, bf16, fp16, fp32-fast".
std::string precision_choices();

// Default: the LM head stays FP32 (its logits feed the loss).
std::vector<std::string> default_fp32_modules();

// Whether `name` matches the glob `pattern` ('*' and '?').
bool glob_match(std::string_view pattern, std::string_view name);

// How one matrix product computes: operand type and FP32 math mode.
struct MatmulPrecision {
  DType operands = DType::F32;
  MatmulMath math = MatmulMath::Strict;
  bool is_16bit() const { return operands != DType::F32; }
  bool operator==(const MatmulPrecision&) const = default;
};

// What module `name` computes in under precision p with the modules
// matching one of `fp32_modules` kept FP32.
MatmulPrecision module_precision(Precision p, const std::vector<std::string>& fp32_modules, std::string_view name);

// The matrix-product module names of a model with n_layer blocks, in order.
std::vector<std::string> matmul_module_names(int64_t n_layer);

// "h.<layer>.attn.core": the attention products of a layer.
std::string attention_module_name(int64_t layer);
// Whether layer `layer`'s attention products take BF16 operands
// (AttnDims::bf16_products): bf16 or fp32-fast, and no pattern of
// `fp32_modules` matches attention_module_name(layer).
bool attention_bf16_products(Precision p, const std::vector<std::string>& fp32_modules, int64_t layer);

// The type layer `layer` keeps its attention inputs q|k|v in (for backward,
// and rounded to it before the attention reads them): BF16 in bf16, F16 in
// fp16, F32 in fp32 and fp32-fast and where the policy keeps
// attention_module_name(layer) FP32.
DType attention_input_type(Precision p, const std::vector<std::string>& fp32_modules, int64_t layer);
// For people: "fp32", "bf16", "fp32 (bf16 math)" (fp32-fast) or
// "fp32 (fp16 inputs)" (fp16: there is no FP16 attention kernel).
std::string attention_precision_label(Precision p, const std::vector<std::string>& fp32_modules, int64_t layer);

// What a product computes in, for people: "fp32", "bf16", "fp16" or
// "fp32 (bf16 math)".
std::string matmul_precision_label(const MatmulPrecision& m);

// One line for `sparta info` and logs, e.g. "bf16: 24 of 25 matrix products
// with 16-bit operands; FP32: head; attention products BF16 in 6 of 6 layers".
std::string precision_summary(Precision p, const std::vector<std::string>& fp32_modules, int64_t n_layer);

// sparta::Error naming the first pattern that matches no module (matrix
// product or attention) of a model with n_layer blocks (a typo would otherwise silently keep nothing FP32).
void check_fp32_modules(const std::vector<std::string>& fp32_modules, int64_t n_layer);

}  // namespace sparta
