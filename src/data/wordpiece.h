#pragma once
// WordPiece tokenizer, exactly like BERT's: bert_basic_tokenize() splits the
// text into words, then each word is cut greedily into the longest vocab
// pieces from the left, pieces after the first spelled with a "##" prefix
// ("unaffable" -> un ##aff ##able). A word longer than 100 characters, or
// with any part that matches no piece, becomes a single [UNK].
//
// decode() joins the pieces with single spaces and glues "##" pieces to the
// piece before them without the "##", BERT style: "hello, world!" encodes to
// hello , world ! and decodes to "hello , world !" (lower-cased, accents
// stripped, spaces around punctuation). Special tokens decode to their
// spelling ("[SEP]").
#include <cstdint>
#include <string>
#include <unordered_map>

#include "data/tokenizer.h"

namespace sparta {

// Limits of load_wordpiece_vocab (tokenizer.h): the token count matches
// the largest tokenizer.vocab_size a config may ask for; the file size
// allows that many tokens of 64 bytes on average (BERT's are under 10).
inline constexpr int64_t kMaxVocabTokens = 1'000'000;
inline constexpr uintmax_t kMaxVocabFileBytes = uintmax_t{64} << 20;

class WordPieceTokenizer final : public Tokenizer {
 public:
  static constexpr int kMaxWordChars = 100;

  // vocab[id] is the token with that id. Throws Error naming the first of
  // [PAD] [UNK] [CLS] [SEP] [MASK] that is missing, or a token that is not
  // valid UTF-8; `source` names the vocab
  // in messages. A token listed twice maps to its last id (as in BERT's
  // load_vocab); both ids still decode.
  WordPieceTokenizer(std::vector<std::string> vocab, bool lowercase,
                     const std::string& source = "vocab");

  std::string kind() const override { return "wordpiece"; }
  int64_t vocab_size() const override { return static_cast<int64_t>(vocab_.size()); }
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  // O(new tokens) per call; pieces always concatenate to decode(ids).
  std::string decode_incremental(const std::vector<int32_t>& ids, size_t new_from) const override;
  int32_t eot_id() const override { return sep_id_; }
  // Writes tokenizer.json and vocab.txt (one token per line, id order).
  void save(const std::filesystem::path& dir) const override;

  // The pieces encode() would return ids of.
  std::vector<std::string> tokenize(std::string_view text) const;
  bool lowercase() const { return lowercase_; }
  const std::vector<std::string>& vocab() const { return vocab_; }
  int32_t token_to_id(std::string_view token) const;  // -1 when absent
  const std::string& id_to_token(int32_t id) const;    // Error when out of range
  int32_t pad_id() const { return pad_id_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t cls_id() const { return cls_id_; }
  int32_t sep_id() const { return sep_id_; }
  int32_t mask_id() const { return mask_id_; }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  // Appends the ids of one basic-tokenizer word.
  void encode_word(const std::string& word, std::vector<int32_t>& out, std::string& scratch) const;
  void append_piece(std::string& out, int32_t id, bool first) const;

  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int32_t, Hash, std::equal_to<>> index_;
  bool lowercase_;
  int32_t pad_id_, unk_id_, cls_id_, sep_id_, mask_id_;
};

}  // namespace sparta
