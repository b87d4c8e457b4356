#pragma once
// The attention implementations a model, the config checker and the
// benchmark can name, in one explicit table (attention_registry.cpp): each
// entry is registered exactly once with its name, a one-line description
// and its factory. Everything that validates, lists or constructs an
// implementation by name reads this table, so adding an implementation
// means adding one entry. The table is a plain function-local array, not
// static-initialisation self-registration: the layers are static archives,
// and the linker drops object files nothing references.
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ops/attention.h"

namespace sparta {

struct AttentionImpl {
  std::string_view name;         // what model.attention and --impls accept
  std::string_view description;  // one line, for help and listings
  std::unique_ptr<Attention> (*make)(const DsaConfig& dsa);  // throws on an invalid dsa where it reads it
};

// Every implementation, in the order help and error messages list them.
std::span<const AttentionImpl> attention_registry();

// The entry called `name`, or null when there is none.
const AttentionImpl* find_attention(std::string_view name);

// {"dense", "window", "dsa"}: the registered names, in registry order.
std::vector<std::string> attention_names();

// "dense, window, dsa": the names as error and help messages list them.
std::string attention_names_text();

// One line per implementation, "  name  description", names padded to one
// width: the listing for --help.
std::string attention_descriptions_text();

}  // namespace sparta
