#include "io/json_input.h"

#include <unordered_set>
#include <vector>

#include "core/error.h"

namespace sparta {

namespace {

// First pass over the text: nesting depth and duplicate keys. A SAX handler
// rather than a parser callback, because nlohmann's callback parser rescans
// the parent object at every end_object (quadratic in the number of keys).
class InputCheck : public nlohmann::json_sax<nlohmann::json> {
 public:
  std::string problem;  // empty while the text is acceptable

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    keys_.emplace_back();
    return enter();
  }
  bool key(string_t& k) override {
    if (keys_.back().insert(k).second) return true;
    problem = cat(" has duplicate key '", k.substr(0, 80), k.size() > 80 ? "...'" : "'");
    return false;
  }
  bool end_object() override {
    keys_.pop_back();
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override { return enter(); }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    std::string msg = e.what();
    // Drop nlohmann's "[json.exception.parse_error.101] " prefix.
    if (auto p = msg.find("] "); p != std::string::npos && msg.rfind("[json.exception", 0) == 0)
      msg = msg.substr(p + 2);
    problem = cat(" is not valid JSON: ", msg);
    return false;
  }

 private:
  bool enter() {
    if (++depth_ <= kMaxJsonDepth) return true;
    problem = cat(" nests arrays/objects deeper than ", kMaxJsonDepth, " levels");
    return false;
  }
  int depth_ = 0;
  std::vector<std::unordered_set<std::string>> keys_;
};

}  // namespace

nlohmann::json parse_json_input(std::string_view text, const std::string& subject) {
  InputCheck check;
  if (!nlohmann::json::sax_parse(text, &check) || !check.problem.empty())
    throw Error(cat(subject, check.problem.empty() ? std::string(" is not valid JSON") : check.problem));
  // The text is known to be valid and shallow; build the value without a
  // callback (linear time).
  return nlohmann::json::parse(text);
}

std::string describe_json(const nlohmann::json& v) {
  constexpr size_t kMax = 80, kPrefix = 60;
  // Linear in the size of v; its depth is bounded (parse_json_input), so
  // dump() cannot exhaust the stack.
  std::string text = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() <= kMax) return text;
  // A prefix of a UTF-8 string may end inside a character; drop the partial one.
  size_t cut = kPrefix;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return cat(text.substr(0, cut), "... (", text.size(), " bytes of JSON)");
}

}  // namespace sparta
