#include "data/tokenizer.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/json_input.h"

namespace sparta {

std::string Tokenizer::decode_incremental(const std::vector<int32_t>& ids, size_t new_from) const {
  SPARTA_CHECK(new_from <= ids.size(), "[tokenizer] decode_incremental: new_from ", new_from,
               " is past the ", ids.size(), " ids");
  const std::string all = decode(ids);
  const std::string prefix = decode(std::vector<int32_t>(ids.begin(), ids.begin() + new_from));
  SPARTA_CHECK(all.compare(0, prefix.size(), prefix) == 0, "[tokenizer] ", kind(),
               ": decode of the first ", new_from, " ids is not a prefix of decode of all ",
               ids.size(), " ids, so it cannot be streamed");
  return all.substr(prefix.size());
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  const fs::path json_path = dir / "tokenizer.json";
  std::error_code ec;
  SPARTA_CHECK(fs::is_regular_file(json_path, ec), "[tokenizer] '", json_path.string(),
               "' does not exist (a tokenizer folder needs tokenizer.json)");
  std::ifstream in(json_path, std::ios::binary);
  SPARTA_CHECK(in, "[tokenizer] cannot open '", json_path.string(), "'");
  std::ostringstream text;
  text << in.rdbuf();
  const nlohmann::json j = parse_json_input(text.str(), cat("[tokenizer] '", json_path.string(), "'"));
  const char* expected =
      R"(expected {"kind": "byte"} or {"kind": "wordpiece", "lowercase": true, "vocab_file": "vocab.txt"})";
  SPARTA_CHECK(j.is_object() && j.contains("kind") && j["kind"].is_string(), "[tokenizer] '",
               json_path.string(), "' has no string \"kind\"; ", expected);
  const std::string kind = j["kind"].get<std::string>();
  if (kind == "byte") return make_byte_tokenizer();
  SPARTA_CHECK(kind == "wordpiece", "[tokenizer] '", json_path.string(), "': unknown kind '", kind.substr(0, 40),
               kind.size() > 40 ? "...'; " : "'; ", expected);
  bool lowercase = true;
  if (j.contains("lowercase")) {
    SPARTA_CHECK(j["lowercase"].is_boolean(), "[tokenizer] '", json_path.string(),
                 "': \"lowercase\" must be true or false, got ", describe_json(j["lowercase"]));
    lowercase = j["lowercase"].get<bool>();
  }
  std::string vocab_file = "vocab.txt";
  if (j.contains("vocab_file")) {
    SPARTA_CHECK(j["vocab_file"].is_string() && !j["vocab_file"].get<std::string>().empty(),
                 "[tokenizer] '", json_path.string(),
                 "': \"vocab_file\" must be a non-empty string, got ", describe_json(j["vocab_file"]));
    vocab_file = j["vocab_file"].get<std::string>();
    // Longer than any path the system accepts; also keeps later messages that quote it short.
    SPARTA_CHECK(vocab_file.size() <= 4096, "[tokenizer] '", json_path.string(), "': \"vocab_file\" is ",
                 vocab_file.size(), " bytes long, not a file name");
  }
  return load_wordpiece_vocab(dir / vocab_file, lowercase);
}

}  // namespace sparta
