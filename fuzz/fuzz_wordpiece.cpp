// libFuzzer harness: the text path. UTF-8 scanning (data/utf8.h), BERT's
// basic tokenizer (data/bert_basic_tokenizer.h), WordPiece training on the
// input and encode/decode with the trained vocab (data/tokenizer.h). The
// first byte picks the options (lower-casing, vocab size), the rest is the
// text. Every promise of those headers that can be checked from outside is
// checked; a broken one aborts so the fuzzer reports it.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "data/bert_basic_tokenizer.h"
#include "data/tokenizer.h"
#include "data/utf8.h"
#include "data/wordpiece.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

bool valid_utf8(std::string_view s) { return sparta::utf8_first_invalid(s) == s.size(); }

void check_utf8(std::string_view text) {
  const std::string clean = sparta::utf8_sanitize(text);
  check(valid_utf8(clean));
  if (valid_utf8(text)) check(clean == text);
  const size_t stable = sparta::utf8_stable_length(text);
  check(stable <= text.size() && text.size() - stable <= 3);
  // Decoding the stable prefix is unchanged by what follows it.
  std::vector<int32_t> whole, prefix;
  sparta::utf8_decode(text, whole);
  sparta::utf8_decode(text.substr(0, stable), prefix);
  check(prefix.size() <= whole.size());
  for (size_t i = 0; i < prefix.size(); ++i) check(prefix[i] == whole[i]);
  // Re-encoding the code points gives the sanitized text.
  std::string encoded;
  for (const int32_t cp : whole) sparta::utf8_append(encoded, cp);
  check(encoded == clean);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool lowercase = (data[0] & 1) != 0;
  const int64_t vocab_size = 6 + (data[0] >> 1);  // 6..133: small vocabs exercise both stop rules
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  check_utf8(text);

  const std::vector<std::string> words = sparta::bert_basic_tokenize(text, lowercase);
  // Alphabet the trainer must keep: first characters as-is, others "##c",
  // of the words WordPiece does not turn into [UNK] for length.
  std::set<std::string> alphabet;
  for (const std::string& w : words) {
    check(!w.empty() && valid_utf8(w));
    std::vector<int32_t> cps;
    sparta::utf8_decode(w, cps);
    for (const int32_t cp : cps) check(!sparta::bert_is_whitespace(cp));
    if (cps.size() > static_cast<size_t>(sparta::WordPieceTokenizer::kMaxWordChars)) continue;
    for (size_t i = 0; i < cps.size(); ++i) {
      std::string s = i == 0 ? "" : "##";
      sparta::utf8_append(s, cps[i]);
      alphabet.insert(s);
    }
  }

  std::unique_ptr<sparta::Tokenizer> tok;
  try {
    tok = sparta::train_wordpiece(text, vocab_size, lowercase);
  } catch (const sparta::Error&) {
    check(alphabet.empty());  // the only documented failure for a valid vocab_size
    return 0;
  }
  check(tok->vocab_size() <= vocab_size);
  const auto& wp = static_cast<const sparta::WordPieceTokenizer&>(*tok);
  const std::vector<int32_t> ids = tok->encode(text);
  const bool full_alphabet = static_cast<int64_t>(alphabet.size()) + 5 <= vocab_size;
  for (const int32_t id : ids) {
    check(id >= 0 && id < tok->vocab_size());
    // The trained vocab covers the corpus: [UNK] only for over-long words.
    if (full_alphabet && id == wp.unk_id()) {
      bool has_long_word = false;
      for (const std::string& w : words) {
        std::vector<int32_t> cps;
        sparta::utf8_decode(w, cps);
        has_long_word |= cps.size() > static_cast<size_t>(sparta::WordPieceTokenizer::kMaxWordChars);
      }
      check(has_long_word);
    }
  }
  const std::string decoded = tok->decode(ids);
  check(valid_utf8(decoded));
  // Streaming decode concatenates to decode().
  std::string streamed;
  std::vector<int32_t> prefix;
  for (const int32_t id : ids) {
    prefix.push_back(id);
    streamed += tok->decode_incremental(prefix, prefix.size() - 1);
  }
  check(streamed == decoded);
  return 0;
}
