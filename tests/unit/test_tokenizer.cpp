// Tokenizers: UTF-8 handling, byte-level, BERT basic + WordPiece, WordPiece
// training, and tokenizer folders on disk. Expected BERT outputs come from
// google-research/bert's tokenization_test.py and from Python's unicodedata
// running the reference BasicTokenizer.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <set>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "data/bert_basic_tokenizer.h"
#include "data/text_corpus.h"
#include "data/byte_tokenizer.h"
#include "data/tokenizer.h"
#include "data/utf8.h"
#include "data/wordpiece.h"
#include "benchmark/attention_bench.h"

using namespace sparta;
namespace fs = std::filesystem;

namespace {

// A fresh folder under the system temp dir, removed at scope exit.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    static int counter = 0;
    path = fs::temp_directory_path() /
           cat("sparta_tok_", tag, "_", ::getpid(), "_", counter++);
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Streams ids one token at a time, then flushes as tokenizer.h documents.
std::string stream_decode(const Tokenizer& tok, const std::vector<int32_t>& ids,
                          std::vector<std::string>* pieces = nullptr) {
  std::string text;
  std::vector<int32_t> prefix;
  for (int32_t id : ids) {
    const size_t before = prefix.size();
    prefix.push_back(id);
    std::string piece = tok.decode_incremental(prefix, before);
    if (pieces) pieces->push_back(piece);
    text += piece;
  }
  return text;
}

bool valid_utf8(const std::string& s) { return utf8_first_invalid(s) == s.size(); }

// google-research/bert tokenization_test.py vocab plus the docstring's
// "unaffable" pieces and the pieces for "Héllo, World!".
const std::vector<std::string> kBertVocab = {
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "want", "##want", "##ed", "wa", "un", "runn",
    "##ing", ",", "##aff", "##able", "hello", "world", "!", "[unused0]"};

std::vector<std::string> pieces_of(const Tokenizer& tok, const std::string& text) {
  return dynamic_cast<const WordPieceTokenizer&>(tok).tokenize(text);
}

using Words = std::vector<std::string>;

// A corpus with a few thousand distinct pseudo-words, Zipf-like counts,
// capitals, accents and punctuation.
std::string synthetic_corpus(uint64_t seed, int n_words) {
  Rng rng(seed);
  const char* syll[] = {"ka", "to", "ri", "men", "sol", "ve", "ny", "qua", "ex", "ph", "il",
                        "dor", "ze", "bu", "é", "ö", "ing", "st", "a", "o"};
  std::vector<std::string> lexicon;
  for (int i = 0; i < 3000; ++i) {
    std::string w;
    const int k = 1 + static_cast<int>(rng.below(4));
    for (int j = 0; j < k; ++j) w += syll[rng.below(20)];
    lexicon.push_back(w);
  }
  std::string text;
  for (int i = 0; i < n_words; ++i) {
    // Zipf-like: index = floor(N^u) - 1 favours the front of the lexicon.
    const double u = rng.uniform();
    size_t idx = static_cast<size_t>(std::pow(3000.0, u)) - 1;
    std::string w = lexicon[std::min<size_t>(idx, 2999)];
    if (rng.below(10) == 0) w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0])));
    text += w;
    const uint64_t r = rng.below(20);
    text += r == 0 ? ", " : r == 1 ? ".\n" : r == 2 ? "! " : " ";
  }
  return text;
}

}  // namespace

// ---------------------------------------------------------------- UTF-8

TEST(Utf8, SanitizeMatchesPythonReplace) {
  // Expected values: bytes.decode("utf-8", errors="replace") in CPython.
  const std::string R = "\xEF\xBF\xBD";
  EXPECT_EQ(utf8_sanitize("a\xFF" "b"), "a" + R + "b");
  EXPECT_EQ(utf8_sanitize("\xE2\x82"), R);
  EXPECT_EQ(utf8_sanitize("\xE2\x82" "a"), R + "a");
  EXPECT_EQ(utf8_sanitize("\xF0\x80\x80"), R + R + R);
  EXPECT_EQ(utf8_sanitize("\xED\xA0\x80"), R + R + R);  // surrogate
  EXPECT_EQ(utf8_sanitize("\xC0\xAF"), R + R);          // overlong
  EXPECT_EQ(utf8_sanitize("\xF4\x90\x80\x80"), R + R + R + R);  // > U+10FFFF
  EXPECT_EQ(utf8_sanitize("\xF0\x9F\x98"), R);
  EXPECT_EQ(utf8_sanitize("\xE2\x82\xAC\x80"), "\xE2\x82\xAC" + R);
  EXPECT_EQ(utf8_sanitize("h\xC3\xA9llo \xF0\x9F\x8E\x89"), "h\xC3\xA9llo \xF0\x9F\x8E\x89");
  EXPECT_EQ(utf8_first_invalid("ab\xC3\xA9\xFF"), 4u);
  EXPECT_EQ(utf8_first_invalid("ab\xC3"), 2u);
}

TEST(Utf8, StableLengthHoldsOnlyCompletablePrefixes) {
  EXPECT_EQ(utf8_stable_length("abc"), 3u);
  EXPECT_EQ(utf8_stable_length("ab\xE2"), 2u);
  EXPECT_EQ(utf8_stable_length("ab\xE2\x82"), 2u);
  EXPECT_EQ(utf8_stable_length("ab\xE2\x82\xAC"), 5u);
  EXPECT_EQ(utf8_stable_length("\xF0\x9F\x8E"), 0u);
  EXPECT_EQ(utf8_stable_length("a\x80"), 2u);      // stray continuation: already invalid
  EXPECT_EQ(utf8_stable_length("a\xE0\x80"), 3u);  // E0 80 can never complete
  EXPECT_EQ(utf8_stable_length("a\xFF"), 2u);
  EXPECT_EQ(utf8_stable_length(""), 0u);
}

TEST(Utf8, RandomBytesSanitizeToValidText) {
  Rng rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    std::string s(rng.below(40), '\0');
    for (char& c : s) c = static_cast<char>(rng.below(256));
    const std::string clean = utf8_sanitize(s);
    EXPECT_TRUE(valid_utf8(clean));
    std::vector<int32_t> cps;
    utf8_decode(s, cps);
    std::string re;
    for (int32_t cp : cps) utf8_append(re, cp);
    EXPECT_EQ(re, clean);
  }
}

// --------------------------------------------------------- byte tokenizer

TEST(ByteTokenizer, EncodesBytesAndRoundTripsText) {
  auto tok = make_byte_tokenizer();
  EXPECT_EQ(tok->kind(), "byte");
  EXPECT_EQ(tok->vocab_size(), 257);
  EXPECT_EQ(tok->eot_id(), 256);
  const std::string text = "H\xC3\xA9llo, w\xC3\xB6rld \xE2\x80\x94 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x8E\x89\n";
  const std::vector<int32_t> ids = tok->encode(text);
  ASSERT_EQ(ids.size(), text.size());
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], static_cast<unsigned char>(text[i]));
  EXPECT_EQ(tok->decode(ids), text);
  // Special spellings in text are plain bytes.
  EXPECT_EQ(tok->encode("<|endoftext|>").size(), 13u);
  EXPECT_EQ(tok->decode({'a', 256, 'b'}), "a<|endoftext|>b");
}

TEST(ByteTokenizer, RandomBytesRoundTripAndNeverCrash) {
  auto tok = make_byte_tokenizer();
  Rng rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s(rng.below(64), '\0');
    for (char& c : s) c = static_cast<char>(rng.below(256));
    const auto ids = tok->encode(s);
    for (size_t i = 0; i < s.size(); ++i) ASSERT_EQ(ids[i], static_cast<unsigned char>(s[i]));
    const std::string text = tok->decode(ids);
    EXPECT_TRUE(valid_utf8(text));
    EXPECT_EQ(text, utf8_sanitize(s));
    if (valid_utf8(s)) {
      EXPECT_EQ(text, s);
    }
  }
}

TEST(ByteTokenizer, DecodeRejectsOutOfRangeIds) {
  auto tok = make_byte_tokenizer();
  EXPECT_NE(error_of([&] { tok->decode({65, 257}); }).find("token id 257"), std::string::npos);
  EXPECT_NE(error_of([&] { tok->decode({-1}); }).find("token id -1"), std::string::npos);
  EXPECT_THROW(tok->decode_incremental({65, 300}, 1), Error);
  EXPECT_THROW(tok->decode_incremental({65}, 2), Error);
}

TEST(ByteTokenizer, IncrementalDecodeHoldsPartialCharacters) {
  auto tok = make_byte_tokenizer();
  // The emoji is 4 bytes: nothing comes out until the last one arrives.
  std::vector<std::string> pieces;
  const std::string text = "a\xF0\x9F\x8E\x89" "b\xC3\xA9";
  const auto ids = tok->encode(text);
  EXPECT_EQ(stream_decode(*tok, ids, &pieces), text);
  const std::vector<std::string> expected = {"a", "", "", "", "\xF0\x9F\x8E\x89", "b", "", "\xC3\xA9"};
  EXPECT_EQ(pieces, expected);
  // A stream cut inside a character: the flush is the replacement char.
  const std::vector<int32_t> cut = {'x', 0xE2, 0x82};
  const std::string streamed = stream_decode(*tok, cut);
  EXPECT_EQ(streamed, "x");
  EXPECT_EQ(streamed + tok->decode(cut).substr(streamed.size()), tok->decode(cut));
  EXPECT_EQ(tok->decode(cut), "x\xEF\xBF\xBD");
}

TEST(ByteTokenizer, IncrementalPiecesConcatenateToFullDecode) {
  auto tok = make_byte_tokenizer();
  Rng rng(11);
  const std::vector<std::string> chars = {"a", " ", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x8E\x89"};
  for (int trial = 0; trial < 200; ++trial) {
    // Mostly valid UTF-8, with random bytes and eot mixed in.
    std::vector<int32_t> ids;
    const int n = static_cast<int>(rng.below(30));
    for (int i = 0; i < n; ++i) {
      const uint64_t r = rng.below(10);
      if (r == 0) {
        ids.push_back(static_cast<int32_t>(rng.below(256)));
      } else if (r == 1) {
        ids.push_back(256);
      } else {
        for (unsigned char c : chars[rng.below(chars.size())]) ids.push_back(c);
      }
    }
    std::vector<std::string> pieces;
    const std::string streamed = stream_decode(*tok, ids, &pieces);
    const std::string full = tok->decode(ids);
    for (const auto& p : pieces) EXPECT_TRUE(valid_utf8(p));
    ASSERT_LE(streamed.size(), full.size());
    EXPECT_EQ(full.substr(0, streamed.size()), streamed);
    // Held back is at most one partial character (<= 3 bytes -> one U+FFFD).
    EXPECT_LE(full.size() - streamed.size(), 3u);
    // Taking several tokens per call gives the same text.
    std::string chunked;
    for (size_t i = 0; i < ids.size(); i += 3) {
      std::vector<int32_t> prefix(ids.begin(), ids.begin() + std::min(ids.size(), i + 3));
      chunked += tok->decode_incremental(prefix, i);
    }
    EXPECT_EQ(chunked, streamed);
  }
}

// ---------------------------------------------------- BERT basic tokenizer

TEST(BertBasic, CharacterClassesMatchBert) {
  EXPECT_TRUE(bert_is_whitespace(' '));
  EXPECT_TRUE(bert_is_whitespace('\t'));
  EXPECT_TRUE(bert_is_whitespace('\r'));
  EXPECT_TRUE(bert_is_whitespace('\n'));
  EXPECT_TRUE(bert_is_whitespace(0xA0));
  EXPECT_FALSE(bert_is_whitespace('A'));
  EXPECT_FALSE(bert_is_whitespace('-'));
  EXPECT_TRUE(bert_is_control(0x05));
  EXPECT_TRUE(bert_is_control(0x200B));  // Cf
  EXPECT_FALSE(bert_is_control('A'));
  EXPECT_FALSE(bert_is_control(' '));
  EXPECT_FALSE(bert_is_control('\t'));
  EXPECT_FALSE(bert_is_control('\r'));
  EXPECT_FALSE(bert_is_control(0x1F4A9));
  EXPECT_TRUE(bert_is_punctuation('-'));
  EXPECT_TRUE(bert_is_punctuation('$'));
  EXPECT_TRUE(bert_is_punctuation('`'));
  EXPECT_TRUE(bert_is_punctuation('.'));
  EXPECT_TRUE(bert_is_punctuation(0x3001));  // 、 (Po)
  EXPECT_FALSE(bert_is_punctuation('A'));
  EXPECT_FALSE(bert_is_punctuation(' '));
  EXPECT_FALSE(bert_is_punctuation(0x20AC));  // € is Sc, not ASCII
  EXPECT_TRUE(bert_is_cjk(0x535A));
  EXPECT_FALSE(bert_is_cjk(0x3042));  // Hiragana is not in BERT's CJK blocks
}

TEST(BertBasic, MatchesReferenceTokenizations) {
  // tokenization_test.py
  EXPECT_EQ(bert_basic_tokenize("ah\xE5\x8D\x9A\xE6\x8E\xA8zz", true),
            (Words{"ah", "\xE5\x8D\x9A", "\xE6\x8E\xA8", "zz"}));
  EXPECT_EQ(bert_basic_tokenize(" \tHeLLo!how  \n Are yoU?  ", true),
            (Words{"hello", "!", "how", "are", "you", "?"}));
  EXPECT_EQ(bert_basic_tokenize("H\xC3\xA9llo", true), (Words{"hello"}));
  EXPECT_EQ(bert_basic_tokenize(" \tHeLLo!how  \n Are yoU?  ", false),
            (Words{"HeLLo", "!", "how", "Are", "yoU", "?"}));
  EXPECT_EQ(bert_basic_tokenize("H\xC3\xA9llo, World!", true), (Words{"hello", ",", "world", "!"}));
  EXPECT_EQ(bert_basic_tokenize("H\xC3\xA9llo", false), (Words{"H\xC3\xA9llo"}));
  // Python: "ΟΔΟΣ ΣΑΣ Σ".lower() == "οδος σας σ" (final sigma).
  EXPECT_EQ(bert_basic_tokenize("\xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3 \xCE\xA3\xCE\x91\xCE\xA3 \xCE\xA3", true),
            (Words{"\xCE\xBF\xCE\xB4\xCE\xBF\xCF\x82", "\xCF\x83\xCE\xB1\xCF\x82", "\xCF\x83"}));
  // NUL, U+FFFD, controls and ill-formed bytes vanish; U+3000 and U+2028 split.
  const char messy[] = "a\0b\xEF\xBF\xBD" "c\x01\xFF" "d\xE3\x80\x80" "e\xE2\x80\xA8" "f";
  EXPECT_EQ(bert_basic_tokenize(std::string(messy, sizeof(messy) - 1), true),
            (Words{"abcd", "e", "f"}));
  // Python: "Ǳ" lowers to "ǳ"; "ﬁ" has no canonical decomposition.
  EXPECT_EQ(bert_basic_tokenize("\xC7\xB1 \xEF\xAC\x81", true), (Words{"\xC7\xB3", "\xEF\xAC\x81"}));
  EXPECT_TRUE(bert_basic_tokenize(" \t\n ", true).empty());
}

// ---------------------------------------------------------------- WordPiece

TEST(WordPiece, ClassicBertExamples) {
  TempDir dir("wp");
  std::string file;
  for (const auto& t : kBertVocab) file += t + "\n";
  write_file(dir.path / "vocab.txt", file);
  auto tok = load_wordpiece_vocab(dir.path / "vocab.txt");
  EXPECT_EQ(tok->kind(), "wordpiece");
  EXPECT_EQ(tok->vocab_size(), static_cast<int64_t>(kBertVocab.size()));
  EXPECT_EQ(tok->eot_id(), 3);  // [SEP]
  EXPECT_EQ(pieces_of(*tok, "unaffable"), (Words{"un", "##aff", "##able"}));
  EXPECT_EQ(tok->encode("unaffable"), (std::vector<int32_t>{9, 13, 14}));
  EXPECT_EQ(pieces_of(*tok, "unwanted running"), (Words{"un", "##want", "##ed", "runn", "##ing"}));
  EXPECT_EQ(pieces_of(*tok, "unwantedX running"), (Words{"[UNK]", "runn", "##ing"}));
  EXPECT_EQ(pieces_of(*tok, "UNwant\xC3\xA9" "d,running"),
            (Words{"un", "##want", "##ed", ",", "runn", "##ing"}));
  EXPECT_EQ(pieces_of(*tok, "H\xC3\xA9llo, World!"), (Words{"hello", ",", "world", "!"}));
  EXPECT_EQ(tok->encode("H\xC3\xA9llo, World!"), (std::vector<int32_t>{15, 12, 16, 17}));
  EXPECT_EQ(pieces_of(*tok, "xyzzy"), (Words{"[UNK]"}));
  EXPECT_TRUE(tok->encode("").empty());
  // [CLS] in text is not special: "[", "cls", "]" are unknown words.
  EXPECT_EQ(pieces_of(*tok, "[CLS]"), (Words{"[UNK]", "[UNK]", "[UNK]"}));
  // decode: spaces between pieces, "##" glued.
  EXPECT_EQ(tok->decode({9, 13, 14, 12, 10, 11}), "unaffable , running");
  EXPECT_EQ(tok->decode({2, 15, 3}), "[CLS] hello [SEP]");
  EXPECT_NE(error_of([&] { tok->decode({19}); }).find("token id 19"), std::string::npos);
}

TEST(WordPiece, CaseSensitiveVocabKeepsCase) {
  auto tok = std::make_unique<WordPieceTokenizer>(
      Words{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "H\xC3\xA9llo", "hello"}, false);
  EXPECT_EQ(tok->tokenize("H\xC3\xA9llo hello Hello"), (Words{"H\xC3\xA9llo", "hello", "[UNK]"}));
}

TEST(WordPiece, LongWordsBecomeUnk) {
  auto tok = std::make_unique<WordPieceTokenizer>(
      Words{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "##a", "\xC3\xA9", "##\xC3\xA9"},
      false);
  EXPECT_EQ(tok->encode(std::string(100, 'a')).size(), 100u);
  EXPECT_EQ(tok->encode(std::string(101, 'a')), (std::vector<int32_t>{1}));
  // Length counts characters, not bytes: 100 two-byte characters are fine.
  std::string e100;
  for (int i = 0; i < 100; ++i) e100 += "\xC3\xA9";
  EXPECT_EQ(tok->encode(e100).size(), 100u);
}

TEST(WordPiece, IncrementalDecodeConcatenates) {
  auto tok = std::make_unique<WordPieceTokenizer>(kBertVocab, true);
  const std::vector<int32_t> ids = {9, 13, 14, 12, 10, 11, 3, 15};
  std::vector<std::string> pieces;
  EXPECT_EQ(stream_decode(*tok, ids, &pieces), tok->decode(ids));
  EXPECT_EQ(pieces[0], "un");
  EXPECT_EQ(pieces[1], "aff");
  EXPECT_EQ(pieces[3], " ,");
}

TEST(WordPiece, AnyBytesEncodeWithoutCrashing) {
  auto tok = std::make_unique<WordPieceTokenizer>(kBertVocab, true);
  Rng rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    std::string s(rng.below(50), '\0');
    for (char& c : s) c = static_cast<char>(rng.below(256));
    for (int32_t id : tok->encode(s)) ASSERT_TRUE(id >= 0 && id < tok->vocab_size());
  }
}

TEST(WordPiece, MissingSpecialTokenIsNamed) {
  TempDir dir("wpmiss");
  write_file(dir.path / "vocab.txt", "[PAD]\n[CLS]\n[SEP]\n[MASK]\nhello\n");
  const std::string msg = error_of([&] { load_wordpiece_vocab(dir.path / "vocab.txt"); });
  EXPECT_NE(msg.find("'[UNK]'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vocab.txt"), std::string::npos) << msg;
  EXPECT_NE(error_of([] { WordPieceTokenizer(Words{"[PAD]", "[UNK]", "[CLS]", "[SEP]"}, true); })
                .find("'[MASK]'"),
            std::string::npos);
}

TEST(WordPiece, VocabFileLoadsUnchanged) {
  TempDir dir("wpfile");
  // CRLF line ends, [unusedN] and a duplicate line are kept as they are.
  write_file(dir.path / "vocab.txt",
             "[PAD]\r\n[unused0]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]\r\nthe\r\n##s\r\nthe\r\n");
  auto tok = load_wordpiece_vocab(dir.path / "vocab.txt");
  const auto& wp = dynamic_cast<const WordPieceTokenizer&>(*tok);
  EXPECT_EQ(wp.vocab_size(), 9);
  EXPECT_EQ(wp.id_to_token(1), "[unused0]");
  EXPECT_EQ(wp.unk_id(), 2);
  EXPECT_EQ(wp.sep_id(), 4);
  EXPECT_EQ(wp.token_to_id("the"), 8);  // the last of duplicates wins, as in BERT
  EXPECT_EQ(tok->encode("The thes"), (std::vector<int32_t>{8, 8, 7}));
  EXPECT_EQ(tok->decode({6, 7}), "thes");
}

const char* const kSpecialLines = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";

TEST(WordPieceVocabFile, EmptyLineIsAnErrorWithItsLineNumber) {
  TempDir dir("wpempty");
  const fs::path p = dir.path / "vocab.txt";
  write_file(p, std::string(kSpecialLines) + "the\n\nend\n");
  std::string msg = error_of([&] { load_wordpiece_vocab(p); });
  EXPECT_NE(msg.find("vocab.txt' line 7 is empty"), std::string::npos) << msg;
  write_file(p, std::string(kSpecialLines) + "the\r\n\r\n");  // CRLF: the same
  msg = error_of([&] { load_wordpiece_vocab(p); });
  EXPECT_NE(msg.find("line 7 is empty"), std::string::npos) << msg;
  write_file(p, std::string(kSpecialLines) + "the\n\n");  // a blank last line is a line
  EXPECT_NE(error_of([&] { load_wordpiece_vocab(p); }).find("line 7 is empty"), std::string::npos);
  // One newline at the end, or none, is fine.
  write_file(p, std::string(kSpecialLines) + "the\n");
  EXPECT_EQ(load_wordpiece_vocab(p)->vocab_size(), 6);
  write_file(p, std::string(kSpecialLines) + "the");
  EXPECT_EQ(load_wordpiece_vocab(p)->vocab_size(), 6);
}

TEST(WordPieceVocabFile, InvalidUtf8IsAnErrorSoDecodeStaysValid) {
  TempDir dir("wputf8");
  const fs::path p = dir.path / "vocab.txt";
  write_file(p, std::string(kSpecialLines) + "caf\xC3\xA9\n##\xA9\n");
  const std::string msg = error_of([&] { load_wordpiece_vocab(p); });
  EXPECT_NE(msg.find("vocab.txt' line 7 is not valid UTF-8 (byte 3 of the token)"), std::string::npos) << msg;
  // Built in memory: the same promise.
  EXPECT_NE(error_of([] { WordPieceTokenizer(Words{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "\xE2\x82"}, true); })
                .find("token 5 is not valid UTF-8"),
            std::string::npos);
  write_file(p, std::string(kSpecialLines) + "caf\xC3\xA9\n");
  auto tok = load_wordpiece_vocab(p);
  EXPECT_EQ(tok->decode({5}), "caf\xC3\xA9");
}

TEST(WordPieceVocabFile, SizeLimitsAreCheckedWithBoundedMemory) {
  TempDir dir("wpbig");
  const fs::path p = dir.path / "vocab.txt";
  // Ten million lines (20 MB): rejected at the first token past the limit.
  {
    std::string text(kSpecialLines);
    text.reserve(20'000'010);
    while (text.size() < 20'000'000) text += "a\n";
    write_file(p, text);
  }
  std::string msg = error_of([&] { load_wordpiece_vocab(p); });
  EXPECT_NE(msg.find(cat("has more than ", kMaxVocabTokens, " tokens")), std::string::npos) << msg;
  // Exactly the limit loads.
  {
    std::string text(kSpecialLines);
    for (int64_t i = 5; i < kMaxVocabTokens; ++i) text += "b\n";
    write_file(p, text);
  }
  EXPECT_EQ(load_wordpiece_vocab(p)->vocab_size(), kMaxVocabTokens);
  // Too big a file is refused from its size, before anything is read.
  write_file(p, kSpecialLines);
  fs::resize_file(p, kMaxVocabFileBytes + 1);
  msg = error_of([&] { load_wordpiece_vocab(p); });
  EXPECT_NE(msg.find("more than a vocab file may have"), std::string::npos) << msg;
}

// A corpus that is one huge word used to cost 25 times its size (a copy per
// processing step, 4 bytes per character); now a small multiple.
TEST(WordPieceMemory, OneHugeWordCostsAFewTimesItsSize) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's redzones and quarantine change what memory use measures";
#endif
  const size_t n = size_t{16} << 20;
  for (const std::string unit : {"a", "\xC3\xA9"}) {
    std::string corpus;
    corpus.reserve(n + 64);
    while (corpus.size() < n) corpus += unit;
    corpus += " short words here";
    PeakMemoryMeter meter;
    meter.begin();
    const auto trained = train_wordpiece(corpus, 64);
    const std::vector<int32_t> ids = trained->encode(corpus);
    meter.end();
    if (!meter.reset_ok()) GTEST_SKIP() << "cannot reset the peak RSS counter here";
    const auto& wp = dynamic_cast<const WordPieceTokenizer&>(*trained);
    EXPECT_EQ(ids.front(), wp.unk_id());  // over 100 characters: [UNK], as in BERT
    EXPECT_EQ(ids.size(), 4u);
    const double input_mib = static_cast<double>(corpus.size()) / (1 << 20);
    EXPECT_LT(meter.peak_mib(), (unit == "a" ? 3.0 : 8.0) * input_mib) << "unit '" << unit << "'";
  }
}

// ------------------------------------------------------- WordPiece training

TEST(WordPieceTrainer, MatchesReferenceMerges) {
  // The Hugging Face course corpus. Expected vocab from a naive Python
  // implementation (full recount per merge, exact Fraction scores, ties:
  // higher count, then smaller alphabet/merge ids).
  const std::string corpus =
      "This is the Hugging Face Course.\nThis chapter is about tokenization.\n"
      "This section shows several tokenizer algorithms.\nHopefully, you will be able to "
      "understand how they are trained and generate tokens.\n";
  const Words expected_cased = {
      "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "##a", "##b", "##c", "##d", "##e", "##f",
      "##g", "##h", "##i", "##k", "##l", "##m", "##n", "##o", "##p", "##r", "##s", "##t", "##u",
      "##v", "##w", "##y", "##z", ",", ".", "C", "F", "H", "T", "a", "b", "c", "g", "h", "i",
      "s", "t", "u", "w", "y", "ab", "##fu", "Fa", "Fac", "##ct", "##ful", "##full", "##fully",
      "Th", "##hm", "ch", "##thm", "cha", "chap", "chapt", "Hu", "Hug", "Hugg", "sh", "th",
      "##at", "##zat", "##ta", "##ut", "##ra"};
  auto cased = train_wordpiece(corpus, 70, false);
  EXPECT_EQ(dynamic_cast<const WordPieceTokenizer&>(*cased).vocab(), expected_cased);
  const Words expected_lower = {
      "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "##a", "##b", "##c", "##d", "##e", "##f",
      "##g", "##h", "##i", "##k", "##l", "##m", "##n", "##o", "##p", "##r", "##s", "##t", "##u",
      "##v", "##w", "##y", "##z", ",", ".", "a", "b", "c", "f", "g", "h", "i", "s", "t", "u",
      "w", "y", "ab", "##fu", "fa", "fac", "##ct", "##ful", "##full", "##fully", "##hm",
      "##thm", "is", "##thms", "##pt", "##apt", "##hapt", "chapt", "##at", "##zat"};
  auto lower = train_wordpiece(corpus, 60, true);
  EXPECT_EQ(dynamic_cast<const WordPieceTokenizer&>(*lower).vocab(), expected_lower);
}

TEST(WordPieceTrainer, DeterministicFullSizeNoUnkAndSaveLoad) {
  const std::string corpus = synthetic_corpus(1, 20000);
  auto a = train_wordpiece(corpus, 600);
  auto b = train_wordpiece(corpus, 600);
  const auto& va = dynamic_cast<const WordPieceTokenizer&>(*a).vocab();
  EXPECT_EQ(va, dynamic_cast<const WordPieceTokenizer&>(*b).vocab());
  ASSERT_EQ(a->vocab_size(), 600);
  EXPECT_EQ((Words(va.begin(), va.begin() + 5)), (Words{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}));
  EXPECT_EQ(std::set<std::string>(va.begin(), va.end()).size(), va.size());  // no duplicates

  const auto ids = a->encode(corpus);
  const int32_t unk = dynamic_cast<const WordPieceTokenizer&>(*a).unk_id();
  EXPECT_EQ(std::count(ids.begin(), ids.end(), unk), 0);
  // Merges compress: fewer pieces than characters in the words.
  size_t chars = 0;
  for (const auto& w : bert_basic_tokenize(corpus, true)) {
    std::vector<int32_t> cps;
    utf8_decode(w, cps);
    chars += cps.size();
  }
  EXPECT_LT(ids.size(), chars * 3 / 4);

  TempDir dir("wptrain");
  a->save(dir.path / "tok");
  auto c = load_tokenizer(dir.path / "tok");
  EXPECT_EQ(c->kind(), "wordpiece");
  EXPECT_EQ(c->encode(corpus), ids);
  EXPECT_EQ(dynamic_cast<const WordPieceTokenizer&>(*c).vocab(), va);
  // Decoding reproduces the basic-tokenized text.
  const Words words = bert_basic_tokenize(corpus.substr(0, 500), true);
  std::string joined;
  for (const auto& w : words) joined += (joined.empty() ? "" : " ") + w;
  EXPECT_EQ(c->decode(c->encode(corpus.substr(0, 500))), joined);
}

TEST(WordPieceTrainer, StopsWhenNoPairsAreLeft) {
  auto tok = train_wordpiece("ab ab abc", 1000);
  // alphabet a ##b ##c, merges ab, abc: nothing left to merge.
  EXPECT_EQ(dynamic_cast<const WordPieceTokenizer&>(*tok).vocab(),
            (Words{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "##b", "##c", "a", "ab", "abc"}));
}

TEST(WordPieceTrainer, SmallBudgetKeepsMostFrequentCharacters) {
  auto tok = train_wordpiece("aaa bbb aab c d", 8);
  // Counts: ##a 3, a 3, ##b 3, b 2, c 1, d 1 -> three most frequent, byte order.
  EXPECT_EQ(dynamic_cast<const WordPieceTokenizer&>(*tok).vocab(),
            (Words{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "##a", "##b", "a"}));
}

TEST(WordPieceTrainer, RejectsBadArguments) {
  EXPECT_NE(error_of([] { train_wordpiece("hello world", 5); }).find("vocab_size 5"),
            std::string::npos);
  EXPECT_NE(error_of([] { train_wordpiece(" \n\t ", 100); }).find("no words"), std::string::npos);
}

TEST(WordPieceTrainer, FortunesVocab4096IsFast) {
  const fs::path dir = "/usr/share/games/fortunes";
  if (!fs::is_directory(dir)) GTEST_SKIP() << dir << " is not installed";
  std::string corpus;
  for (const auto& d : read_text_corpus(dir).documents) corpus += d;
  corpus.resize(std::min<size_t>(corpus.size(), 1'500'000));
  const auto t0 = std::chrono::steady_clock::now();
  auto tok = train_wordpiece(corpus, 4096);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(tok->vocab_size(), 4096);
  EXPECT_LT(seconds, 10.0);  // ~0.3 s on one core in a Release build
  const auto ids = tok->encode(corpus);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1), 0);  // no [UNK]
}

// ---------------------------------------------------- default streaming

namespace {
// Letters a.. for ids; optionally not prefix-stable (then streaming must
// refuse rather than emit garbage).
class LetterTokenizer final : public Tokenizer {
 public:
  explicit LetterTokenizer(bool stable) : stable_(stable) {}
  std::string kind() const override { return "letters"; }
  int64_t vocab_size() const override { return 26; }
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    for (char c : text) ids.push_back(c - 'a');
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (int32_t id : ids) s.push_back(static_cast<char>('a' + id));
    if (!stable_) std::reverse(s.begin(), s.end());
    return s;
  }
  int32_t eot_id() const override { return 25; }
  void save(const fs::path&) const override {}

 private:
  bool stable_;
};
}  // namespace

TEST(TokenizerDefault, IncrementalDecodeIsPrefixDifference) {
  LetterTokenizer tok(true);
  std::vector<std::string> pieces;
  EXPECT_EQ(stream_decode(tok, tok.encode("hello"), &pieces), "hello");
  EXPECT_EQ(pieces, (Words{"h", "e", "l", "l", "o"}));
  EXPECT_EQ(tok.decode_incremental(tok.encode("hello"), 2), "llo");
  EXPECT_THROW(tok.decode_incremental({1}, 2), Error);
  LetterTokenizer unstable(false);
  const std::string msg = error_of([&] { unstable.decode_incremental(unstable.encode("ab"), 1); });
  EXPECT_NE(msg.find("is not a prefix"), std::string::npos) << msg;
}

// ------------------------------------------------------- tokenizer folders

TEST(TokenizerIO, ByteSaveLoad) {
  TempDir dir("bytesave");
  make_byte_tokenizer()->save(dir.path / "t");
  auto tok = load_tokenizer(dir.path / "t");
  EXPECT_EQ(tok->kind(), "byte");
  EXPECT_EQ(tok->encode("hi"), (std::vector<int32_t>{'h', 'i'}));
}

TEST(TokenizerIO, WordPieceJsonOptionsAreHonoured) {
  TempDir dir("wpjson");
  std::string file;
  for (const auto& t : kBertVocab) file += t + "\n";
  file += "Hello\n";
  write_file(dir.path / "bert.vocab", file);
  write_file(dir.path / "tokenizer.json",
             R"({"kind": "wordpiece", "lowercase": false, "vocab_file": "bert.vocab"})");
  auto tok = load_tokenizer(dir.path);
  EXPECT_EQ(pieces_of(*tok, "Hello hello"), (Words{"Hello", "hello"}));
  write_file(dir.path / "tokenizer.json", R"({"kind": "wordpiece", "vocab_file": "bert.vocab"})");
  EXPECT_EQ(pieces_of(*load_tokenizer(dir.path), "Hello hello"), (Words{"hello", "hello"}));
}

TEST(TokenizerIO, LoadErrorsAreClear) {
  TempDir dir("ioerr");
  const fs::path d = dir.path;
  std::string msg = error_of([&] { load_tokenizer(d / "nope"); });
  EXPECT_NE(msg.find("tokenizer.json' does not exist"), std::string::npos) << msg;

  write_file(d / "tokenizer.json", "{\"kind\": \"byte\"");
  msg = error_of([&] { load_tokenizer(d); });
  EXPECT_NE(msg.find("is not valid JSON"), std::string::npos) << msg;

  write_file(d / "tokenizer.json", std::string("\x00\xFF\x13garbage", 10));
  msg = error_of([&] { load_tokenizer(d); });
  EXPECT_NE(msg.find("is not valid JSON"), std::string::npos) << msg;

  write_file(d / "tokenizer.json", R"({"type": "BPE"})");
  msg = error_of([&] { load_tokenizer(d); });
  EXPECT_NE(msg.find("has no string \"kind\""), std::string::npos) << msg;

  write_file(d / "tokenizer.json", R"({"kind": "sentencepiece"})");
  msg = error_of([&] { load_tokenizer(d); });
  EXPECT_NE(msg.find("unknown kind 'sentencepiece'"), std::string::npos) << msg;

  write_file(d / "tokenizer.json", R"({"kind": "wordpiece", "lowercase": "yes"})");
  msg = error_of([&] { load_tokenizer(d); });
  EXPECT_NE(msg.find("\"lowercase\" must be true or false"), std::string::npos) << msg;

  write_file(d / "tokenizer.json", R"({"kind": "wordpiece"})");
  msg = error_of([&] { load_tokenizer(d); });
  EXPECT_NE(msg.find("vocab.txt' does not exist"), std::string::npos) << msg;

  write_file(d / "vocab.txt", "[PAD]\n[CLS]\n[SEP]\n[MASK]\n");
  msg = error_of([&] { load_tokenizer(d); });
  EXPECT_NE(msg.find("no '[UNK]' token"), std::string::npos) << msg;

  msg = error_of([&] { load_wordpiece_vocab(d / "missing.txt"); });
  EXPECT_NE(msg.find("missing.txt' does not exist"), std::string::npos) << msg;
}
