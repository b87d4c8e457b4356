#include "nn/precision.h"

#include <algorithm>

#include "core/error.h"

namespace sparta {

namespace {
constexpr Precision kAll[] = {Precision::FP32, Precision::BF16, Precision::FP16, Precision::FP32Fast};
}  // namespace

std::string_view precision_name(Precision p) {
  switch (p) {
    case Precision::BF16: return "bf16";
    case Precision::FP16: return "fp16";
    case Precision::FP32Fast: return "fp32-fast";
    default: return "fp32";
  }
}

std::string precision_choices() {
  std::string s;
  for (Precision p : kAll) s += (s.empty() ? "" : ", ") + std::string(precision_name(p));
  return s;
}

Precision parse_precision(std::string_view name) {
  for (Precision p : kAll)
    if (precision_name(p) == name) return p;
  SPARTA_CHECK(false, "unknown precision \"", name, "\" (choose one of: ", precision_choices(), ")");
  return Precision::FP32;
}

std::vector<std::string> default_fp32_modules() { return {"head"}; }

bool glob_match(std::string_view pattern, std::string_view name) {
  // Iterative wildcard match with backtracking to the last '*'.
  size_t p = 0, n = 0, star = std::string_view::npos, mark = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p, ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

namespace {
// Whether the policy keeps module `name` in FP32.
bool kept_fp32(const std::vector<std::string>& fp32_modules, std::string_view name) {
  return std::any_of(fp32_modules.begin(), fp32_modules.end(),
                     [&](const std::string& pattern) { return glob_match(pattern, name); });
}
}  // namespace

MatmulPrecision module_precision(Precision p, const std::vector<std::string>& fp32_modules, std::string_view name) {
  if (p == Precision::FP32 || kept_fp32(fp32_modules, name)) return {};
  if (p == Precision::FP32Fast) return {DType::F32, MatmulMath::Bf16};
  return {p == Precision::FP16 ? DType::F16 : DType::BF16, MatmulMath::Strict};
}

std::vector<std::string> matmul_module_names(int64_t n_layer) {
  std::vector<std::string> names;
  for (int64_t l = 0; l < n_layer; ++l)
    for (const char* m : {"attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"})
      names.push_back("h." + std::to_string(l) + "." + m);
  names.push_back("head");
  return names;
}

std::string attention_module_name(int64_t layer) { return "h." + std::to_string(layer) + ".attn.core"; }

bool attention_bf16_products(Precision p, const std::vector<std::string>& fp32_modules, int64_t layer) {
  return (p == Precision::BF16 || p == Precision::FP32Fast) &&
         !kept_fp32(fp32_modules, attention_module_name(layer));
}

DType attention_input_type(Precision p, const std::vector<std::string>& fp32_modules, int64_t layer) {
  if ((p != Precision::BF16 && p != Precision::FP16) || kept_fp32(fp32_modules, attention_module_name(layer)))
    return DType::F32;
  return p == Precision::BF16 ? DType::BF16 : DType::F16;
}

std::string attention_precision_label(Precision p, const std::vector<std::string>& fp32_modules, int64_t layer) {
  if (attention_bf16_products(p, fp32_modules, layer)) return p == Precision::BF16 ? "bf16" : "fp32 (bf16 math)";
  return attention_input_type(p, fp32_modules, layer) == DType::F16 ? "fp32 (fp16 inputs)" : "fp32";
}

std::string matmul_precision_label(const MatmulPrecision& m) {
  if (m.operands == DType::BF16) return "bf16";
  if (m.operands == DType::F16) return "fp16";
  return m.math == MatmulMath::Bf16 ? "fp32 (bf16 math)" : "fp32";
}

std::string precision_summary(Precision p, const std::vector<std::string>& fp32_modules, int64_t n_layer) {
  const std::vector<std::string> names = matmul_module_names(n_layer);
  std::string kept;
  int64_t reduced = 0;
  for (const std::string& n : names) {
    if (module_precision(p, fp32_modules, n) != MatmulPrecision{}) {
      ++reduced;
    } else if (p != Precision::FP32) {
      kept += (kept.empty() ? "" : ", ") + n;
    }
  }
  std::string out(precision_name(p));
  if (p == Precision::FP32) return out + ": every matrix product in FP32";
  out += cat(": ", reduced, " of ", names.size(), " matrix products ",
             p == Precision::FP32Fast ? "with BF16 math" : "with 16-bit operands");
  out += "; FP32: " + (kept.empty() ? "none" : kept);
  int64_t attn = 0;
  for (int64_t l = 0; l < n_layer; ++l) attn += attention_bf16_products(p, fp32_modules, l);
  return out + cat("; attention products BF16 in ", attn, " of ", n_layer, " layers");
}

void check_fp32_modules(const std::vector<std::string>& fp32_modules, int64_t n_layer) {
  std::vector<std::string> names = matmul_module_names(n_layer);
  for (int64_t l = 0; l < n_layer; ++l) names.push_back(attention_module_name(l));
  for (const std::string& pattern : fp32_modules) {
    bool hit = false;
    for (const std::string& n : names) hit = hit || glob_match(pattern, n);
    SPARTA_CHECK(hit, "precision.fp32: \"", pattern, "\" matches no module (they are h.<layer>.attn.qkv, ",
                 "h.<layer>.attn.proj, h.<layer>.mlp.fc, h.<layer>.mlp.proj, head and h.<layer>.attn.core; layers 0..",
                 n_layer - 1, ")");
  }
}

}  // namespace sparta
