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
// Always FP32, whatever the precision: the token embedding, LayerNorm
// (statistics and output), softmax, the loss, attention (its own kernels),
// the residual stream, gradient norms and the optimizer.
//
// The policy names the matrix-product modules that stay FP32 in bf16, fp16 and
// fp32-fast, by glob pattern ('*' any run of characters, '?' one) over the
// module names "h.<layer>.attn.qkv", "h.<layer>.attn.proj",
// "h.<layer>.mlp.fc", "h.<layer>.mlp.proj" and "head" (the logits).
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

// What a product computes in, for people: "fp32", "bf16", "fp16" or
// "fp32 (bf16 math)".
std::string matmul_precision_label(const MatmulPrecision& m);

// One line for `sparta info` and logs, e.g. "bf16: 24 of 25 matrix products
// in 16 bits; FP32: head".
std::string precision_summary(Precision p, const std::vector<std::string>& fp32_modules, int64_t n_layer);

// sparta::Error naming the first pattern that matches no module of a model
// with n_layer blocks (a typo would otherwise silently keep nothing FP32).
void check_fp32_modules(const std::vector<std::string>& fp32_modules, int64_t n_layer);

}  // namespace sparta
