#pragma once
// Byte-level tokenizer: ids 0..255 are the raw bytes of the text, 256 is
// <|endoftext|>. Every byte string round-trips through encode/decode when it
// is well-formed UTF-8; ill-formed bytes decode to U+FFFD.
#include "data/tokenizer.h"

namespace sparta {

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kEot = 256;
  static constexpr int64_t kVocabSize = 257;
  static constexpr std::string_view kEotText = "<|endoftext|>";

  std::string kind() const override { return "byte"; }
  int64_t vocab_size() const override { return kVocabSize; }
  std::vector<int32_t> encode(std::string_view text) const override;
  // eot is written as "<|endoftext|>"; a byte run cut by eot or by the end
  // that stops inside a character yields U+FFFD.
  std::string decode(const std::vector<int32_t>& ids) const override;
  // Holds back a trailing incomplete (but completable) UTF-8 character
  // until the tokens that finish it arrive. O(new tokens) per call.
  std::string decode_incremental(const std::vector<int32_t>& ids, size_t new_from) const override;
  int32_t eot_id() const override { return kEot; }
  void save(const std::filesystem::path& dir) const override;

 private:
  // Decodes ids[begin..end) where begin is a character boundary of the
  // whole stream.
  std::string decode_range(const std::vector<int32_t>& ids, size_t begin, size_t end) const;
  // End of the stable part of ids[0..n): n, or the start of a trailing
  // completable partial character.
  size_t stable_end(const std::vector<int32_t>& ids, size_t n) const;
};

}  // namespace sparta
