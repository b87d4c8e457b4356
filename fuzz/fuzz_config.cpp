// libFuzzer harness: the TOML config parser and --set overrides
// (run/config.h). The input is TOML text, optionally followed by NUL
// bytes separating "section.key=value" overrides. A parse error is a normal
// outcome; anything else the parser accepts must round-trip: config_to_toml
// of the result parses back to the same TOML (config.h promises this).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "run/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view toml_text = input.substr(0, nul);
  std::vector<std::string> overrides;
  if (nul != std::string_view::npos) {
    std::string_view rest = input.substr(nul + 1);
    while (true) {
      const size_t next = rest.find('\0');
      overrides.emplace_back(rest.substr(0, next));
      if (next == std::string_view::npos) break;
      rest = rest.substr(next + 1);
    }
  }
  std::string saved;
  try {
    saved = sparta::config_to_toml(sparta::parse_config(toml_text, "fuzz.toml", overrides));
  } catch (const sparta::Error&) {
    return 0;
  }
  try {
    const std::string again = sparta::config_to_toml(sparta::parse_config(saved, "saved.toml"));
    if (again != saved) std::abort();  // config_to_toml output did not round-trip
  } catch (const sparta::Error&) {
    std::abort();  // a config the parser accepted was saved as text it rejects
  }
  return 0;
}
