#include "ops/attention_registry.h"

#include <algorithm>

#include "core/error.h"
#include "ops/attention_dense.h"
#include "ops/attention_dsa.h"

namespace sparta {

std::span<const AttentionImpl> attention_registry() {
  static constexpr AttentionImpl kImpls[] = {
      {"dense", "exact attention over every key (flash-style tiles)",
       [](const DsaConfig&) -> std::unique_ptr<Attention> { return std::make_unique<DenseAttention>(); }},
      {"window", "local attention: the last model.dsa.window tokens, in whole blocks",
       [](const DsaConfig& dsa) -> std::unique_ptr<Attention> { return std::make_unique<WindowAttention>(dsa); }},
      {"dsa", "dynamic sparse: window + top-k far blocks per token + summary key",
       [](const DsaConfig& dsa) -> std::unique_ptr<Attention> { return std::make_unique<DsaAttention>(dsa); }},
  };
  return kImpls;
}

const AttentionImpl* find_attention(std::string_view name) {
  for (const AttentionImpl& impl : attention_registry())
    if (impl.name == name) return &impl;
  return nullptr;
}

std::vector<std::string> attention_names() {
  std::vector<std::string> names;
  for (const AttentionImpl& impl : attention_registry()) names.emplace_back(impl.name);
  return names;
}

std::string attention_names_text() {
  std::string text;
  for (const AttentionImpl& impl : attention_registry()) {
    if (!text.empty()) text += ", ";
    text += impl.name;
  }
  return text;
}

std::string attention_descriptions_text() {
  size_t width = 0;
  for (const AttentionImpl& impl : attention_registry()) width = std::max(width, impl.name.size());
  std::string text;
  for (const AttentionImpl& impl : attention_registry()) {
    if (!text.empty()) text += '\n';
    text += cat("  ", impl.name, std::string(width - impl.name.size() + 2, ' '), impl.description);
  }
  return text;
}

std::unique_ptr<Attention> make_attention(const std::string& name, const DsaConfig& dsa) {
  const AttentionImpl* impl = find_attention(name);
  if (!impl) throw Error(cat("[attention] unknown implementation '", name, "' (available: ", attention_names_text(), ")"));
  return impl->make(dsa);
}

std::unique_ptr<Attention> make_attention(const std::string& name) { return make_attention(name, DsaConfig{}); }

}  // namespace sparta
