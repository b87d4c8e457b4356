#include "data/bert_basic_tokenizer.h"

#include <utf8proc.h>

#include <algorithm>

#include "data/utf8.h"

namespace sparta {

bool bert_is_whitespace(int32_t cp) {
  if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r') return true;
  return utf8proc_category(cp) == UTF8PROC_CATEGORY_ZS;
}

bool bert_is_control(int32_t cp) {
  if (cp == '\t' || cp == '\n' || cp == '\r') return false;
  switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_CN:  // unassigned (Python reports "Cn")
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
      return true;
    default:
      return false;
  }
}

bool bert_is_punctuation(int32_t cp) {
  // BERT counts all non-alphanumeric ASCII as punctuation ("$", "^", "`"
  // are symbols in Unicode) so they split consistently.
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
      (cp >= 123 && cp <= 126))
    return true;
  const auto c = utf8proc_category(cp);
  return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

bool bert_is_cjk(int32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

namespace {

// BERT splits with Python's str.split(), which also breaks at the line and
// paragraph separators that cleaning leaves in place.
bool splits_words(int32_t cp) { return cp == ' ' || cp == 0x2028 || cp == 0x2029; }

// Unicode's Cased property: letters with case, plus the Other_Lowercase
// letters that have no case mapping and are not case-ignorable (ª, º).
bool is_cased(int32_t cp) {
  if (cp == 0xAA || cp == 0xBA) return true;
  const auto c = utf8proc_category(cp);
  return c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT ||
         utf8proc_tolower(cp) != cp || utf8proc_toupper(cp) != cp;
}

// Unicode's Case_Ignorable: categories Mn Me Cf Lm Sk plus the
// Word_Break classes MidLetter, MidNumLet and Single_Quote.
bool is_case_ignorable(int32_t cp) {
  switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_SK:
      return true;
    default:
      break;
  }
  switch (cp) {
    case 0x27: case 0x2E: case 0x3A: case 0xB7: case 0x387: case 0x55F: case 0x5F4:
    case 0x2018: case 0x2019: case 0x2024: case 0x2027: case 0xFE13: case 0xFE52:
    case 0xFE55: case 0xFF07: case 0xFF0E: case 0xFF1A:
      return true;
    default:
      return false;
  }
}

// Python's str.lower(): simple lower-case mapping plus the two context or
// length changes that matter here — capital sigma at the end of a word
// becomes final sigma, and U+0130 becomes "i" + U+0307 (whose dot the
// accent stripping removes again).
void lower_word(const std::vector<int32_t>& in, std::vector<int32_t>& out) {
  out.clear();
  out.reserve(in.size());
  const size_t n = in.size();
  for (size_t i = 0; i < n; ++i) {
    const int32_t cp = in[i];
    if (cp < 0x80) {
      out.push_back(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
    } else if (cp == 0x3A3) {
      bool before = false, after = false;
      for (size_t j = i; j-- > 0;) {
        if (is_case_ignorable(in[j])) continue;
        before = is_cased(in[j]);
        break;
      }
      for (size_t j = i + 1; j < n; ++j) {
        if (is_case_ignorable(in[j])) continue;
        after = is_cased(in[j]);
        break;
      }
      out.push_back(before && !after ? 0x3C2 : 0x3C3);
    } else if (cp == 0x130) {
      out.push_back('i');
      out.push_back(0x307);
    } else {
      out.push_back(utf8proc_tolower(cp));
    }
  }
}

// NFD (canonical decomposition + canonical ordering), then drops category Mn.
void strip_accents(const std::vector<int32_t>& in, std::vector<int32_t>& out) {
  out.clear();
  out.reserve(in.size());
  auto ccc = [](int32_t cp) { return cp < 0x300 ? 0 : utf8proc_get_property(cp)->combining_class; };
  auto is_mn = [](int32_t cp) { return cp >= 0x300 && utf8proc_category(cp) == UTF8PROC_CATEGORY_MN; };
  utf8proc_int32_t buf[32];
  for (const int32_t cp : in) {
    if (cp < 0x80) {
      out.push_back(cp);
      continue;
    }
    int boundclass = 0;
    const utf8proc_ssize_t k = utf8proc_decompose_char(cp, buf, 32, UTF8PROC_DECOMPOSE, &boundclass);
    if (k < 0 || k > 32) {  // cannot happen for valid scalar values; keep the char
      out.push_back(cp);
      continue;
    }
    // Marks that are non-starters are dropped right away, so the text
    // never grows ("é" -> "e" + U+0301 -> "e"): removing them before the
    // stable sort below gives what removing them after it would, as runs
    // of non-starters keep their bounds. Mn starters (rare) could join two
    // runs, so they go after the sort.
    for (utf8proc_ssize_t i = 0; i < k; ++i)
      if (!(is_mn(buf[i]) && ccc(buf[i]) != 0)) out.push_back(buf[i]);
  }
  // Canonical ordering: stable sort of each run of non-starters by
  // combining class (runs are short, insertion sort is what utf8proc does).
  for (size_t i = 1; i < out.size(); ++i) {
    const int32_t cp = out[i];
    const int c = ccc(cp);
    if (c == 0) continue;
    size_t j = i;
    while (j > 0 && ccc(out[j - 1]) > c) {
      out[j] = out[j - 1];
      --j;
    }
    out[j] = cp;
  }
  out.erase(std::remove_if(out.begin(), out.end(), is_mn), out.end());
}

void emit(const int32_t* cps, size_t n, std::vector<std::string>& words) {
  if (n == 0) return;
  std::string w;
  w.reserve(n);
  for (size_t i = 0; i < n; ++i) utf8_append(w, cps[i]);
  words.push_back(std::move(w));
}

// Steps 4-5 for one whitespace-delimited run of cleaned characters, held
// as UTF-8. An ASCII run (the common case, and the one a huge blob of
// base64 or minified code is) is lower-cased and split in place; others go
// through code points. The run is never copied more than that, so memory
// stays a small multiple of the longest run.
class RunSplitter {
 public:
  RunSplitter(bool lowercase, std::vector<std::string>& words) : lowercase_(lowercase), words_(words) {}

  void add(int32_t cp) {
    ascii_ = ascii_ && cp < 0x80;
    utf8_append(run_, cp);
  }

  void flush() {
    if (run_.empty()) return;
    if (ascii_)
      split_ascii();
    else
      split_unicode();
    // Keep the buffers' memory only while it is small.
    if (run_.capacity() > kKeepBytes) std::string().swap(run_);
    run_.clear();
    ascii_ = true;
  }

 private:
  static constexpr size_t kKeepBytes = size_t{1} << 16;

  void split_ascii() {
    if (lowercase_)
      for (char& c : run_)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    size_t start = 0;
    for (size_t k = 0; k < run_.size(); ++k) {
      if (bert_is_punctuation(static_cast<unsigned char>(run_[k]))) {
        if (k > start) words_.emplace_back(run_, start, k - start);
        words_.emplace_back(1, run_[k]);
        start = k + 1;
      }
    }
    if (start == 0)
      words_.push_back(std::move(run_));
    else if (start < run_.size())
      words_.emplace_back(run_, start, run_.size() - start);
  }

  void split_unicode() {
    size_t chars = 0;
    for (const unsigned char c : run_) chars += (c & 0xC0) != 0x80;
    word_.clear();
    word_.reserve(chars);
    utf8_decode(run_, word_);
    if (run_.capacity() > kKeepBytes) std::string().swap(run_);  // the code points hold it now
    std::vector<int32_t>* w = &word_;
    if (lowercase_) {
      lower_word(word_, lowered_);
      strip_accents(lowered_, word_);  // word_ is free again: reuse it
    }
    size_t start = 0;
    for (size_t k = 0; k < w->size(); ++k) {
      if (bert_is_punctuation((*w)[k])) {
        emit(w->data() + start, k - start, words_);
        emit(w->data() + k, 1, words_);
        start = k + 1;
      }
    }
    emit(w->data() + start, w->size() - start, words_);
    if (word_.capacity() * sizeof(int32_t) > kKeepBytes) std::vector<int32_t>().swap(word_);
    if (lowered_.capacity() * sizeof(int32_t) > kKeepBytes) std::vector<int32_t>().swap(lowered_);
  }

  bool lowercase_;
  std::vector<std::string>& words_;
  std::string run_;
  bool ascii_ = true;
  std::vector<int32_t> word_, lowered_;
};

}  // namespace

std::vector<std::string> bert_basic_tokenize(std::string_view text, bool lowercase) {
  std::vector<std::string> words;
  RunSplitter runs(lowercase, words);
  // Steps 1-3 while decoding: cleaning removes or replaces characters,
  // whitespace ends a run, and each CJK character is a run of its own.
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    int32_t cp;
    if (s[i] < 0x80) {
      cp = s[i++];
    } else {
      const Utf8Step st = utf8_step(s + i, n - i);
      cp = st.cp < 0 ? kReplacementChar : st.cp;
      i += st.len;
    }
    if (cp < 0x80 && cp > 0x20 && cp != 0x7F) {  // printable ASCII fast path
      runs.add(cp);
    } else if (cp == 0 || cp == kReplacementChar || bert_is_control(cp)) {
      continue;
    } else if (bert_is_whitespace(cp) || splits_words(cp)) {
      runs.flush();
    } else if (bert_is_cjk(cp)) {
      runs.flush();
      runs.add(cp);
      runs.flush();
    } else {
      runs.add(cp);
    }
  }
  runs.flush();
  return words;
}

}  // namespace sparta
