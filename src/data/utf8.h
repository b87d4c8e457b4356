#pragma once
// UTF-8 scanning shared by the tokenizers and the corpus reader. Ill-formed
// input is handled with the Unicode "maximal subpart" policy (the one
// Python's bytes.decode(errors="replace") and WHATWG use): each maximal
// prefix of a would-be sequence becomes one U+FFFD, so any byte string
// decodes, and decoding is stable under appending bytes at a boundary.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sparta {

inline constexpr int32_t kReplacementChar = 0xFFFD;

// One step of decoding at s[0..n) (n >= 1).
struct Utf8Step {
  int32_t cp;      // the code point, or -1 when s starts with an ill-formed subsequence
  int len;         // bytes consumed (>= 1): the sequence, or the maximal subpart
  bool truncated;  // cp == -1 only because the input ended inside a valid prefix
};
Utf8Step utf8_step(const unsigned char* s, size_t n);

// Offset of the first byte that is not part of well-formed UTF-8
// (text.size() when the whole text is well-formed).
size_t utf8_first_invalid(std::string_view text);

// The text with every ill-formed subsequence replaced by U+FFFD.
std::string utf8_sanitize(std::string_view bytes);

// Length of the longest prefix that does not end inside an incomplete but
// still completable sequence: appending bytes can change how the bytes past
// this point decode, never how the bytes before it do.
size_t utf8_stable_length(std::string_view bytes);

// Code points of `bytes` appended to `out`, ill-formed parts as U+FFFD.
void utf8_decode(std::string_view bytes, std::vector<int32_t>& out);

// Appends the UTF-8 encoding of cp (0 <= cp <= 0x10FFFF, not a surrogate;
// anything else is written as U+FFFD).
void utf8_append(std::string& out, int32_t cp);

}  // namespace sparta
