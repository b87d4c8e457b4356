#pragma once
// JSON read from files a user can hand us (safetensors headers,
// tokenizer.json): parsing whose cost is linear in the input whatever its
// shape, and error messages of bounded length.
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace sparta {

// Deepest nesting of arrays and objects parse_json_input accepts. sparta's
// own files nest at most three levels; the bound keeps anything recursive
// downstream (nlohmann's dump, destructors of other libraries) safe.
constexpr int kMaxJsonDepth = 64;

// Parses `text` as one JSON value in time and memory linear in its size.
// Throws sparta::Error, `subject` followed by the problem, when the text is
// not valid JSON ("<subject> is not valid JSON: ..."), an object has a key
// twice (nlohmann would keep the last one silently: "<subject> has duplicate
// key 'k'"), or arrays/objects nest deeper than kMaxJsonDepth.
nlohmann::json parse_json_input(std::string_view text, const std::string& subject);

// `v` as JSON text for an error message, at most ~100 characters whatever
// its size: the text itself when short, else its first 60 bytes and its
// length ("[[1,1,1,... (200003 bytes of JSON)"). `v` must nest no deeper than
// kMaxJsonDepth (true of anything parse_json_input returned).
std::string describe_json(const nlohmann::json& v);

}  // namespace sparta
