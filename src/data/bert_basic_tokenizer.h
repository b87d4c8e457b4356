#pragma once
// BERT's BasicTokenizer (google-research/bert tokenization.py, the same as
// Hugging Face's BertTokenizer with default options): the pre-tokenizer
// that splits text into the words WordPiece then cuts into pieces.
//   1. clean: drop NUL, U+FFFD and control characters (category C*, except
//      \t \n \r); every whitespace character becomes a space;
//   2. put spaces around CJK ideographs, so each is a word of its own;
//   3. split on whitespace;
//   4. with lowercase: lower-case each word (Python str.lower semantics
//      incl. final sigma), decompose to NFD and drop nonspacing marks (Mn),
//      which strips accents ("Héllo" -> "hello");
//   5. split every punctuation character (ASCII 33-47, 58-64, 91-96,
//      123-126, and Unicode category P*) off as a word of its own.
// Ill-formed UTF-8 in the input reads as U+FFFD and is therefore dropped.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sparta {

// The words of `text`, each non-empty, well-formed UTF-8 and free of
// whitespace.
std::vector<std::string> bert_basic_tokenize(std::string_view text, bool lowercase);

// BERT's character classes (exposed for tests).
bool bert_is_whitespace(int32_t cp);   // ' ' \t \n \r, category Zs
bool bert_is_control(int32_t cp);      // category C*, except \t \n \r
bool bert_is_punctuation(int32_t cp);  // the ASCII ranges above, category P*
bool bert_is_cjk(int32_t cp);          // CJK Unified Ideographs blocks

}  // namespace sparta
