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
    out.insert(out.end(), buf, buf + k);
  }
  // Canonical ordering: stable sort of each run of non-starters by
  // combining class (runs are short, insertion sort is what utf8proc does).
  auto ccc = [](int32_t cp) { return cp < 0x300 ? 0 : utf8proc_get_property(cp)->combining_class; };
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
  out.erase(std::remove_if(out.begin(), out.end(),
                           [](int32_t cp) {
                             return cp >= 0x300 &&
                                    utf8proc_category(cp) == UTF8PROC_CATEGORY_MN;
                           }),
            out.end());
}

void emit(const int32_t* cps, size_t n, std::vector<std::string>& words) {
  if (n == 0) return;
  std::string w;
  w.reserve(n);
  for (size_t i = 0; i < n; ++i) utf8_append(w, cps[i]);
  words.push_back(std::move(w));
}

}  // namespace

std::vector<std::string> bert_basic_tokenize(std::string_view text, bool lowercase) {
  std::vector<int32_t> cps;
  cps.reserve(text.size());
  utf8_decode(text, cps);

  // Steps 1-2 in place: cleaning only removes or replaces characters, and
  // each CJK character is marked by a space on either side.
  std::vector<int32_t> clean;
  clean.reserve(cps.size() + 16);
  for (const int32_t cp : cps) {
    if (cp < 0x80 && cp > 0x20 && cp != 0x7F) {  // printable ASCII fast path
      clean.push_back(cp);
    } else if (cp == 0 || cp == kReplacementChar || bert_is_control(cp)) {
      continue;
    } else if (bert_is_whitespace(cp)) {
      clean.push_back(' ');
    } else if (bert_is_cjk(cp)) {
      clean.push_back(' ');
      clean.push_back(cp);
      clean.push_back(' ');
    } else {
      clean.push_back(cp);
    }
  }

  std::vector<std::string> words;
  std::vector<int32_t> word, lowered, stripped;
  const size_t n = clean.size();
  for (size_t i = 0; i < n;) {
    if (splits_words(clean[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < n && !splits_words(clean[j])) ++j;
    word.assign(clean.begin() + i, clean.begin() + j);
    i = j;
    const std::vector<int32_t>* w = &word;
    if (lowercase) {
      lower_word(word, lowered);
      strip_accents(lowered, stripped);
      w = &stripped;
    }
    // Step 5: punctuation characters become words of their own.
    size_t start = 0;
    for (size_t k = 0; k < w->size(); ++k) {
      if (bert_is_punctuation((*w)[k])) {
        emit(w->data() + start, k - start, words);
        emit(w->data() + k, 1, words);
        start = k + 1;
      }
    }
    emit(w->data() + start, w->size() - start, words);
  }
  return words;
}

}  // namespace sparta
