#include "data/wordpiece.h"

#include <fstream>
#include <limits>

#include "core/error.h"
#include "data/bert_basic_tokenizer.h"
#include "data/utf8.h"

namespace sparta {

WordPieceTokenizer::WordPieceTokenizer(std::vector<std::string> vocab, bool lowercase,
                                       const std::string& source)
    : vocab_(std::move(vocab)), lowercase_(lowercase) {
  SPARTA_CHECK(vocab_.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()),
               "[wordpiece] ", source, " has ", vocab_.size(), " tokens, more than int32 ids allow");
  // decode() promises valid UTF-8, and it returns tokens verbatim.
  for (size_t i = 0; i < vocab_.size(); ++i)
    SPARTA_CHECK(utf8_first_invalid(vocab_[i]) == vocab_[i].size(), "[wordpiece] ", source, ": token ", i,
                 " is not valid UTF-8");
  index_.reserve(vocab_.size());
  for (size_t i = 0; i < vocab_.size(); ++i) index_[vocab_[i]] = static_cast<int32_t>(i);
  auto special = [&](const char* name) {
    const int32_t id = token_to_id(name);
    SPARTA_CHECK(id >= 0, "[wordpiece] ", source, " has no '", name,
                 "' token (a WordPiece vocab needs [PAD] [UNK] [CLS] [SEP] [MASK])");
    return id;
  };
  pad_id_ = special("[PAD]");
  unk_id_ = special("[UNK]");
  cls_id_ = special("[CLS]");
  sep_id_ = special("[SEP]");
  mask_id_ = special("[MASK]");
}

int32_t WordPieceTokenizer::token_to_id(std::string_view token) const {
  const auto it = index_.find(token);
  return it == index_.end() ? -1 : it->second;
}

const std::string& WordPieceTokenizer::id_to_token(int32_t id) const {
  SPARTA_CHECK(id >= 0 && static_cast<size_t>(id) < vocab_.size(), "[wordpiece] token id ", id,
               " is outside the vocab [0, ", vocab_.size(), ")");
  return vocab_[id];
}

void WordPieceTokenizer::encode_word(const std::string& word, std::vector<int32_t>& out,
                                     std::string& scratch) const {
  // Character boundaries (words are well-formed UTF-8: the basic tokenizer
  // re-encodes them), so pieces never split a character.
  size_t chars = 0;
  for (unsigned char c : word) chars += (c & 0xC0) != 0x80;
  if (chars > static_cast<size_t>(kMaxWordChars)) {
    out.push_back(unk_id_);
    return;
  }
  const size_t first_piece = out.size();
  size_t start = 0;
  while (start < word.size()) {
    size_t end = word.size();
    int32_t found = -1;
    while (end > start) {
      const std::string_view sub(word.data() + start, end - start);
      if (start == 0) {
        found = token_to_id(sub);
      } else {
        scratch.assign("##");
        scratch.append(sub);
        found = token_to_id(scratch);
      }
      if (found >= 0) break;
      // Step back one whole character.
      do --end;
      while (end > start && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80);
    }
    if (found < 0) {
      out.resize(first_piece);
      out.push_back(unk_id_);
      return;
    }
    out.push_back(found);
    start = end;
  }
}

std::vector<int32_t> WordPieceTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  std::string scratch;
  for (const std::string& w : bert_basic_tokenize(text, lowercase_)) encode_word(w, ids, scratch);
  return ids;
}

std::vector<std::string> WordPieceTokenizer::tokenize(std::string_view text) const {
  std::vector<std::string> pieces;
  for (int32_t id : encode(text)) pieces.push_back(vocab_[id]);
  return pieces;
}

void WordPieceTokenizer::append_piece(std::string& out, int32_t id, bool first) const {
  const std::string& tok = id_to_token(id);
  if (tok.size() > 2 && tok[0] == '#' && tok[1] == '#') {
    out.append(tok, 2, std::string::npos);
  } else {
    if (!first) out.push_back(' ');
    out += tok;
  }
}

std::string WordPieceTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) append_piece(out, ids[i], i == 0);
  return out;
}

std::string WordPieceTokenizer::decode_incremental(const std::vector<int32_t>& ids,
                                                   size_t new_from) const {
  SPARTA_CHECK(new_from <= ids.size(), "[wordpiece] decode_incremental: new_from ", new_from,
               " is past the ", ids.size(), " ids");
  std::string out;
  for (size_t i = new_from; i < ids.size(); ++i) append_piece(out, ids[i], i == 0);
  return out;
}

void WordPieceTokenizer::save(const std::filesystem::path& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  SPARTA_CHECK(!ec, "[wordpiece] cannot create folder '", dir.string(), "': ", ec.message());
  {
    const auto path = dir / "vocab.txt";
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    for (const std::string& t : vocab_) out << t << '\n';
    out.close();
    SPARTA_CHECK(out, "[wordpiece] cannot write '", path.string(), "'");
  }
  const auto path = dir / "tokenizer.json";
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << "{\"kind\": \"wordpiece\", \"lowercase\": " << (lowercase_ ? "true" : "false")
      << ", \"vocab_file\": \"vocab.txt\"}\n";
  out.close();
  SPARTA_CHECK(out, "[wordpiece] cannot write '", path.string(), "'");
}

std::unique_ptr<Tokenizer> load_wordpiece_vocab(const std::filesystem::path& vocab_txt,
                                                bool lowercase) {
  const std::string name = vocab_txt.string();
  std::error_code ec;
  SPARTA_CHECK(std::filesystem::is_regular_file(vocab_txt, ec), "[wordpiece] vocab file '", name,
               "' does not exist");
  // Bounded before reading: a wrong file (a corpus, a binary) must not be
  // read whole into memory.
  const auto bytes = std::filesystem::file_size(vocab_txt, ec);
  SPARTA_CHECK(!ec, "[wordpiece] cannot read the size of vocab file '", name, "': ", ec.message());
  SPARTA_CHECK(bytes <= kMaxVocabFileBytes, "[wordpiece] vocab file '", name, "' is ", bytes,
               " bytes, more than a vocab file may have (", kMaxVocabFileBytes, ")");
  std::ifstream in(vocab_txt, std::ios::binary);
  SPARTA_CHECK(in, "[wordpiece] cannot open vocab file '", name, "'");
  std::string text(bytes, '\0');
  in.read(text.data(), static_cast<std::streamsize>(bytes));
  SPARTA_CHECK(static_cast<size_t>(in.gcount()) == bytes, "[wordpiece] error reading vocab file '", name, "'");

  std::vector<std::string> vocab;
  size_t pos = 0;
  for (int64_t line = 1; pos < text.size(); ++line) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();  // a last line without '\n'
    std::string_view token(text.data() + pos, end - pos);
    pos = end + 1;
    // Tolerate CRLF files; a token never ends in '\r'.
    if (!token.empty() && token.back() == '\r') token.remove_suffix(1);
    SPARTA_CHECK(!token.empty(), "[wordpiece] vocab file '", name, "' line ", line,
                 " is empty (one token per line, ids are line numbers; only the last line may end with a newline)");
    const size_t bad = utf8_first_invalid(token);
    SPARTA_CHECK(bad == token.size(), "[wordpiece] vocab file '", name, "' line ", line,
                 " is not valid UTF-8 (byte ", bad + 1, " of the token)");
    SPARTA_CHECK(line <= kMaxVocabTokens, "[wordpiece] vocab file '", name, "' has more than ", kMaxVocabTokens,
                 " tokens, the most a vocab may have");
    vocab.emplace_back(token);
  }
  return std::make_unique<WordPieceTokenizer>(std::move(vocab), lowercase, "vocab file '" + name + "'");
}

}  // namespace sparta
