#include "data/byte_tokenizer.h"

#include <fstream>

#include "core/error.h"
#include "data/utf8.h"

namespace sparta {

std::unique_ptr<Tokenizer> make_byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode_range(const std::vector<int32_t>& ids, size_t begin,
                                        size_t end) const {
  std::string out, run;
  auto flush = [&] {
    out += utf8_sanitize(run);
    run.clear();
  };
  for (size_t i = begin; i < end; ++i) {
    const int32_t id = ids[i];
    SPARTA_CHECK(id >= 0 && id < kVocabSize, "[byte_tokenizer] token id ", id, " at position ", i,
                 " is outside the vocab [0, ", kVocabSize, ")");
    if (id == kEot) {
      // Bytes on either side of a separator never form one character.
      flush();
      out += kEotText;
    } else {
      run.push_back(static_cast<char>(id));
    }
  }
  flush();
  return out;
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids) const {
  return decode_range(ids, 0, ids.size());
}

size_t ByteTokenizer::stable_end(const std::vector<int32_t>& ids, size_t n) const {
  // Only the last <= 3 tokens can hold a partial character; gather the
  // trailing bytes (stopping at eot or an invalid id) and ask UTF-8 where
  // the stable prefix ends.
  std::string tail;
  size_t start = n;
  while (start > 0 && n - start < 3) {
    const int32_t id = ids[start - 1];
    if (id < 0 || id > 255) break;
    --start;
  }
  for (size_t i = start; i < n; ++i) tail.push_back(static_cast<char>(ids[i]));
  return start + utf8_stable_length(tail);
}

std::string ByteTokenizer::decode_incremental(const std::vector<int32_t>& ids,
                                              size_t new_from) const {
  SPARTA_CHECK(new_from <= ids.size(), "[byte_tokenizer] decode_incremental: new_from ", new_from,
               " is past the ", ids.size(), " ids");
  // Everything before stable_end(prefix) was already streamed; both ends
  // are character boundaries, so decoding just the range between them gives
  // exactly the new text.
  const size_t begin = stable_end(ids, new_from);
  const size_t end = stable_end(ids, ids.size());
  return end > begin ? decode_range(ids, begin, end) : std::string();
}

void ByteTokenizer::save(const std::filesystem::path& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  SPARTA_CHECK(!ec, "[byte_tokenizer] cannot create folder '", dir.string(), "': ", ec.message());
  const auto path = dir / "tokenizer.json";
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << "{\"kind\": \"byte\"}\n";
  out.close();
  SPARTA_CHECK(out, "[byte_tokenizer] cannot write '", path.string(), "'");
}

}  // namespace sparta
