#pragma once
// Tokenizers turn text into token ids and back. Two kinds exist:
//
//   byte       ids 0..255 are raw bytes, 256 = <|endoftext|> (vocab 257).
//   wordpiece  BERT's BasicTokenizer + greedy longest-match WordPiece over a
//              vocab.txt (one token per line, id = line number); specials
//              [PAD] [UNK] [CLS] [SEP] [MASK] must be in the vocab.
//
// On disk a tokenizer is a folder holding tokenizer.json and, for wordpiece,
// the vocab file it names:
//
//   {"kind": "byte"}
//   {"kind": "wordpiece", "lowercase": true, "vocab_file": "vocab.txt"}
//
// "lowercase" (default true) turns on lower-casing and accent stripping;
// "vocab_file" (default "vocab.txt") is relative to the folder. Unknown keys
// are ignored.
//
// encode() never interprets special-token spellings inside the text (the
// string "<|endoftext|>" or "[SEP]" is tokenized as ordinary characters), so
// a document cannot inject a separator; the data pipeline inserts eot_id()
// itself. encode() accepts any bytes: ill-formed UTF-8 is treated as U+FFFD.
// Tokenizers are immutable after construction, so one instance may be used
// from several threads.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sparta {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;  // "byte" | "wordpiece"
  virtual int64_t vocab_size() const = 0;
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Always valid UTF-8. Throws Error for an id outside [0, vocab_size()).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  // Streaming decode: the text that tokens ids[new_from..] add to the text
  // already streamed for ids[0..new_from). Calling it once per generated
  // token with new_from = the previous ids.size() gives pieces whose
  // concatenation is a prefix of decode(ids) that equals decode(ids)
  // whenever ids does not end in the middle of a UTF-8 character (the byte
  // tokenizer holds back such a partial character, so a piece may be "").
  // When a stream ends, decode(ids).substr(bytes_streamed) is the rest
  // (a held partial character comes out as U+FFFD). Requires
  // new_from <= ids.size().
  // The default works for any tokenizer whose decode(prefix) is a prefix of
  // decode(ids) (checked); it costs O(ids.size()) per call.
  virtual std::string decode_incremental(const std::vector<int32_t>& ids, size_t new_from) const;
  virtual int32_t eot_id() const = 0;  // document separator / end of text
  // Writes dir/tokenizer.json (+ dir/vocab.txt for wordpiece); creates dir.
  virtual void save(const std::filesystem::path& dir) const = 0;
};

std::unique_ptr<Tokenizer> make_byte_tokenizer();
// Reads dir/tokenizer.json (+ the vocab file it names). Error if a file is
// missing or garbled.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& dir);
// A BERT vocab.txt used unchanged (including [unused0] etc.): one token
// per line, LF or CRLF, the last line with or without a newline. Error
// naming the file and line for an empty line or a line that is not valid
// UTF-8, and for a file over kMaxVocabTokens lines or kMaxVocabFileBytes
// bytes (wordpiece.h), checked before it is read.
std::unique_ptr<Tokenizer> load_wordpiece_vocab(const std::filesystem::path& vocab_txt,
                                                 bool lowercase = true);
// Learns a WordPiece vocab of at most vocab_size tokens (5 specials
// included) from the corpus: words from BERT's basic tokenizer start as
// characters (non-initial ones as "##c"), then the adjacent pair with the
// best score count(ab) / (count(a) * count(b)) is merged until the vocab is
// full or no pair is left. Deterministic (no dependence on hash order or
// threads). Vocab order: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, the
// character alphabet, then merged tokens in merge order. Every character of
// the corpus is in the vocab (unless the alphabet alone exceeds vocab_size:
// then only the most frequent characters are kept), so the corpus encodes
// without [UNK] except for words over 100 characters. Error if
// vocab_size < 6 or the corpus has no words. Details: wordpiece_trainer.cpp.
std::unique_ptr<Tokenizer> train_wordpiece(std::string_view corpus, int64_t vocab_size,
                                           bool lowercase = true);

}  // namespace sparta
