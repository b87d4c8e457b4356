#include "run/toml_guard.h"

#include <cstdio>

#include "core/error.h"
#include "data/utf8.h"

namespace sparta {
namespace {

// Walks the text one code point at a time, tracking line and column the way
// toml++ reports them (1-based, columns in code points).
class Guard {
 public:
  Guard(std::string_view text, const std::string& source) : text_(text), source_(source) {}

  std::string run() {
    if (text_.substr(0, 3) == "\xEF\xBB\xBF") copy(3);  // byte-order mark
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '#') {
        comment();
      } else if (starts("\"\"\"")) {
        copy(3);
        multi_line_basic();
      } else if (c == '"') {
        copy(1);
        basic();
      } else if (starts("'''")) {
        copy(3);
        literal("'''");
      } else if (c == '\'') {
        copy(1);
        literal("'");
      } else if (c == ' ' || c == '\t' || c == '\r') {
        copy(1);
      } else if (c == '\n') {
        if (brackets_.empty()) in_value_ = false;  // the next line starts with a key
        copy(1);
      } else if (c == '=') {
        in_value_ = true;
        copy(1);
      } else if (c == '[' || c == '{') {
        // '[' in a value opens an array of values, elsewhere a table
        // header of keys; '{' an inline table of key = value pairs.
        brackets_.push_back(c == '{' ? 'T' : in_value_ ? 'A' : 'H');
        in_value_ = c == '[' && in_value_;
        copy(1);
      } else if (c == ']' || c == '}') {
        if (!brackets_.empty()) brackets_.pop_back();
        copy(1);
      } else if (c == ',') {
        in_value_ = brackets_.empty() || brackets_.back() != 'T';
        copy(1);
      } else if (in_value_) {
        bare_value();
      } else if (static_cast<unsigned char>(c) >= 0x80) {
        outside_string();
      } else {
        copy(1);
      }
    }
    return out_;
  }


 private:
  bool starts(std::string_view s) const { return text_.substr(pos_, s.size()) == s; }

  // The code point at pos_ (the text is well-formed: checked up front).
  int32_t code_point() const {
    const auto* s = reinterpret_cast<const unsigned char*>(text_.data()) + pos_;
    return utf8_step(s, text_.size() - pos_).cp;
  }
  int code_point_length() const {
    const auto* s = reinterpret_cast<const unsigned char*>(text_.data()) + pos_;
    return utf8_step(s, text_.size() - pos_).len;
  }
  std::string code_point_name() const {
    char buf[16];
    std::snprintf(buf, sizeof buf, "U+%04X", static_cast<unsigned>(code_point()));
    return buf;
  }

  // Copies n bytes of whole code points, advancing line and column.
  void copy(size_t n) {
    const size_t end = pos_ + n;
    while (pos_ < end) {
      const char c = text_[pos_];
      const int len = static_cast<unsigned char>(c) < 0x80 ? 1 : code_point_length();
      out_.append(text_.substr(pos_, len));
      pos_ += len;
      if (c == '\n') {
        ++line_;
        column_ = 1;
      } else {
        ++column_;
      }
    }
  }
  void copy_code_point() { copy(static_cast<unsigned char>(text_[pos_]) < 0x80 ? 1 : code_point_length()); }

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(cat("[config] ", source_, ":", line_, ":", column_, ": ", what));
  }

  [[noreturn]] void outside_string() const {
    fail(cat("character ", code_point_name(), " is only allowed inside a string or a comment"));
  }

  // A value that is not a string, array or inline table (number, boolean,
  // date): toml++ reads it up to a value terminator, testing every
  // character on the way, quotes included; so a quote here opens no string.
  void bare_value() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ']' || c == '}' || c == ',' || c == '#') return;
      if (static_cast<unsigned char>(c) >= 0x80) outside_string();
      copy(1);
    }
  }

  void comment() {
    while (pos_ < text_.size() && text_[pos_] != '\n') copy_code_point();
  }

  // After a backslash in a basic string: an escape is ASCII.
  void escape() {
    copy(1);  // the backslash
    if (pos_ < text_.size() && static_cast<unsigned char>(text_[pos_]) >= 0x80)
      fail(cat("invalid escape sequence '\\' followed by ", code_point_name()));
  }

  void basic() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '"') {
        copy(1);
        return;
      }
      if (c == '\n') return;  // unterminated: toml++ reports it
      if (c == '\\') {
        escape();
        if (pos_ < text_.size() && text_[pos_] != '\n') copy(1);
        continue;
      }
      copy_code_point();
    }
  }

  void multi_line_basic() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '"') {
        size_t run = 0;
        while (pos_ + run < text_.size() && text_[pos_ + run] == '"' && run < 5) ++run;
        copy(run);
        if (run >= 3) return;  // """ closes; up to two more quotes belong to the string
        continue;
      }
      if (c != '\\') {
        copy_code_point();
        continue;
      }
      escape();
      if (pos_ >= text_.size()) return;
      if (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r') {
        // Line-ending backslash: toml++ skips the whitespace and line breaks
        // that follow and tests the next character for being whitespace.
        while (pos_ < text_.size() &&
               (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
          copy(1);
        if (pos_ < text_.size() && static_cast<unsigned char>(text_[pos_]) >= 0x80) {
          const int32_t cp = code_point();
          char buf[16];
          if (cp <= 0xFFFF)
            std::snprintf(buf, sizeof buf, "\\u%04X", static_cast<unsigned>(cp));
          else
            std::snprintf(buf, sizeof buf, "\\U%08X", static_cast<unsigned>(cp));
          out_ += buf;
          pos_ += code_point_length();
          ++column_;
        }
      } else {
        copy(1);  // the escaped ASCII character
      }
    }
  }

  // Literal strings have no escapes; toml++ never classifies their
  // characters as whitespace.
  void literal(std::string_view close) {
    while (pos_ < text_.size()) {
      if (close.size() == 1 && text_[pos_] == '\n') return;  // unterminated: toml++ reports it
      if (starts(close)) {
        if (close.size() == 1) {
          copy(1);
          return;
        }
        size_t run = 0;
        while (pos_ + run < text_.size() && text_[pos_ + run] == '\'' && run < 5) ++run;
        copy(run);
        if (run >= 3) return;
        continue;
      }
      copy_code_point();
    }
  }

  std::string_view text_;
  const std::string& source_;
  // Where the scan is outside strings: in a value (after '=', in an array)
  // or among keys; and the open brackets: 'A' array, 'T' inline table,
  // 'H' table header.
  bool in_value_ = false;
  std::string brackets_;
  size_t pos_ = 0;
  int64_t line_ = 1, column_ = 1;
  std::string out_;
};

}  // namespace

std::string guard_toml_text(std::string_view text, const std::string& source) {
  const size_t bad = utf8_first_invalid(text);
  if (bad != text.size()) {
    int64_t line = 1, column = 1;
    for (size_t i = 0; i < bad;) {
      if (text[i] == '\n') {
        ++line;
        column = 1;
        ++i;
      } else {
        ++column;
        i += utf8_step(reinterpret_cast<const unsigned char*>(text.data()) + i, text.size() - i).len;
      }
    }
    char byte[8];
    std::snprintf(byte, sizeof byte, "0x%02X", static_cast<unsigned>(static_cast<unsigned char>(text[bad])));
    throw Error(cat("[config] ", source, ":", line, ":", column, ": invalid UTF-8 (byte ", byte,
                    "); a config file must be UTF-8 text"));
  }
  return Guard(text, source).run();
}

}  // namespace sparta
