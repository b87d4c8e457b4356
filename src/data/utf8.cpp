#include "data/utf8.h"

namespace sparta {

Utf8Step utf8_step(const unsigned char* s, size_t n) {
  const unsigned char b0 = s[0];
  if (b0 < 0x80) return {b0, 1, false};
  // Expected length and the allowed range of the second byte (Unicode
  // Table 3-7); the range excludes overlongs, surrogates and > U+10FFFF.
  int need;
  unsigned char lo = 0x80, hi = 0xBF;
  int32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {-1, 1, false};  // stray continuation byte, C0/C1, F5..FF
  }
  for (int i = 1; i < need; ++i) {
    if (static_cast<size_t>(i) >= n) return {-1, i, true};
    const unsigned char b = s[i];
    if (b < lo || b > hi) return {-1, i, false};
    cp = (cp << 6) | (b & 0x3F);
    lo = 0x80;
    hi = 0xBF;
  }
  return {cp, need, false};
}

size_t utf8_first_invalid(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    if (s[i] < 0x80) {  // ASCII fast path: corpora are mostly ASCII
      ++i;
      continue;
    }
    const Utf8Step st = utf8_step(s + i, n - i);
    if (st.cp < 0) return i;
    i += st.len;
  }
  return n;
}

std::string utf8_sanitize(std::string_view bytes) {
  const size_t bad = utf8_first_invalid(bytes);
  if (bad == bytes.size()) return std::string(bytes);
  std::string out(bytes.substr(0, bad));
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  for (size_t i = bad; i < n;) {
    const Utf8Step st = utf8_step(s + i, n - i);
    if (st.cp < 0)
      utf8_append(out, kReplacementChar);
    else
      out.append(bytes.substr(i, st.len));
    i += st.len;
  }
  return out;
}

size_t utf8_stable_length(std::string_view bytes) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  // A completable tail is a lead byte followed by fewer continuation bytes
  // than it needs, so it starts within the last 3 bytes.
  for (size_t k = 1; k <= 3 && k <= n; ++k) {
    const unsigned char b = s[n - k];
    if (b >= 0x80 && b <= 0xBF) continue;  // continuation byte: look further back
    const Utf8Step st = utf8_step(s + n - k, k);
    return st.truncated ? n - k : n;
  }
  return n;
}

void utf8_decode(std::string_view bytes, std::vector<int32_t>& out) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  for (size_t i = 0; i < n;) {
    if (s[i] < 0x80) {
      out.push_back(s[i++]);
      continue;
    }
    const Utf8Step st = utf8_step(s + i, n - i);
    out.push_back(st.cp < 0 ? kReplacementChar : st.cp);
    i += st.len;
  }
}

void utf8_append(std::string& out, int32_t cp) {
  if (cp < 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = kReplacementChar;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace sparta
