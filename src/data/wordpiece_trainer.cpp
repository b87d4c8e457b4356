// WordPiece vocabulary training (train_wordpiece in tokenizer.h).
//
// Algorithm (the WordPiece recipe from the Hugging Face NLP course):
//   - words = bert_basic_tokenize(corpus) with their counts; words longer
//     than WordPieceTokenizer::kMaxWordChars are left out (they encode to
//     [UNK] anyway) before they are counted, so memory stays proportional
//     to the text;
//   - every word starts as its characters, the first as-is and the others
//     with a "##" prefix; these symbols are the initial alphabet;
//   - repeatedly merge the adjacent pair (a, b) with the highest score
//     count(ab) / (count(a) * count(b)), where counts are occurrences in the
//     current segmentation weighted by word frequency; ties go to the more
//     frequent pair, then to the smaller (id(a), id(b)), ids numbering the
//     alphabet in byte order and merged symbols in creation order. The new
//     symbol is a + b without b's "##". Stop when the vocab (5 specials +
//     symbols) has vocab_size entries or no adjacent pair is left.
//   - if the alphabet alone does not fit, the most frequent characters are
//     kept (ties in byte order) and the rest will encode to [UNK].
// The output vocab is [PAD] [UNK] [CLS] [SEP] [MASK], then the alphabet,
// then the merged symbols in merge order.
//
// Speed: a merge only rewrites the words that contain the pair (each pair
// keeps the list of words it occurs in) and updates pair and symbol counts
// for those words; choosing the best pair is a linear scan over live pairs,
// because a merge changes count(a) and count(b) and so the score of every
// pair that contains a or b, which a priority queue would have to re-key.
#include <algorithm>
#include <limits>
#include <unordered_map>

#include "core/error.h"
#include "data/bert_basic_tokenizer.h"
#include "data/utf8.h"
#include "data/wordpiece.h"

namespace sparta {

namespace {

const char* const kSpecials[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
constexpr int64_t kNumSpecials = 5;

struct Pair {
  int64_t count = 0;
  int32_t a = 0, b = 0;
};

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

class Trainer {
 public:
  Trainer(std::string_view corpus, bool lowercase) {
    count_words(corpus, lowercase);
  }

  std::vector<std::string> run(int64_t budget) {
    if (static_cast<int64_t>(sym_str_.size()) >= budget) return truncated_alphabet(budget);
    int64_t n_symbols = static_cast<int64_t>(sym_str_.size());
    build_pairs();
    while (n_symbols < budget) {
      const int32_t best = best_pair();
      if (best < 0) break;
      if (merge(best)) ++n_symbols;
    }
    return sym_str_;
  }

 private:
  void count_words(std::string_view corpus, bool lowercase) {
    // Over-long words are dropped before anything is kept of them, so a
    // corpus that is one huge word costs no more than its text.
    std::unordered_map<std::string, int64_t> counts;
    {
      std::vector<std::string> all = bert_basic_tokenize(corpus, lowercase);
      for (std::string& w : all) {
        size_t chars = 0;
        for (const unsigned char c : w) chars += (c & 0xC0) != 0x80;
        if (chars <= static_cast<size_t>(WordPieceTokenizer::kMaxWordChars)) ++counts[std::move(w)];
        std::string().swap(w);
      }
    }
    std::vector<std::pair<std::string, int64_t>> words;
    words.reserve(counts.size());
    while (!counts.empty()) {
      auto node = counts.extract(counts.begin());
      words.emplace_back(std::move(node.key()), node.mapped());
    }
    std::sort(words.begin(), words.end());  // fixes every later order

    // Split into characters; collect the alphabet.
    std::vector<std::vector<std::string>> chars(words.size());
    std::vector<std::string> alphabet;
    std::vector<int32_t> cps;
    for (size_t w = 0; w < words.size(); ++w) {
      cps.clear();
      utf8_decode(words[w].first, cps);
      for (size_t i = 0; i < cps.size(); ++i) {
        std::string s = i == 0 ? "" : "##";
        utf8_append(s, cps[i]);
        chars[w].push_back(s);
        alphabet.push_back(std::move(s));
      }
    }
    std::sort(alphabet.begin(), alphabet.end());
    alphabet.erase(std::unique(alphabet.begin(), alphabet.end()), alphabet.end());
    for (std::string& s : alphabet) add_symbol(std::move(s));

    for (size_t w = 0; w < words.size(); ++w) {
      if (chars[w].empty()) continue;
      std::vector<int32_t> seq;
      for (const std::string& c : chars[w]) seq.push_back(sym_id_.at(c));
      for (int32_t s : seq) sym_count_[s] += words[w].second;
      word_seq_.push_back(std::move(seq));
      word_freq_.push_back(words[w].second);
    }
  }

  int32_t add_symbol(std::string s) {
    const int32_t id = static_cast<int32_t>(sym_str_.size());
    sym_id_.emplace(s, id);
    sym_str_.push_back(std::move(s));
    sym_count_.push_back(0);
    return id;
  }

  std::vector<std::string> truncated_alphabet(int64_t budget) {
    std::vector<int32_t> order(sym_str_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
    // Ids are in byte order, so the id breaks count ties deterministically.
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t x, int32_t y) { return sym_count_[x] > sym_count_[y]; });
    order.resize(budget);
    std::sort(order.begin(), order.end());
    std::vector<std::string> out;
    for (int32_t id : order) out.push_back(sym_str_[id]);
    return out;
  }

  int32_t pair_index(int32_t a, int32_t b) {
    const auto [it, inserted] = pair_of_.try_emplace(pair_key(a, b), static_cast<int32_t>(pairs_.size()));
    if (inserted) {
      pairs_.push_back({0, a, b});
      where_.emplace_back();
      in_live_.push_back(0);
    }
    return it->second;
  }

  // Adds (sign = +1) or removes (-1) the pairs and symbols of word w.
  void account(int32_t w, int64_t sign) {
    const std::vector<int32_t>& seq = word_seq_[w];
    const int64_t f = sign * word_freq_[w];
    for (size_t i = 0; i < seq.size(); ++i) {
      sym_count_[seq[i]] += f;
      if (i + 1 == seq.size()) break;
      const int32_t p = pair_index(seq[i], seq[i + 1]);
      pairs_[p].count += f;
      if (sign > 0) note_occurrence(p, w);
    }
  }

  // Pair p (count > 0 now) occurs in word w.
  void note_occurrence(int32_t p, int32_t w) {
    // Lists may hold stale words (the pair left them); merge() skips those.
    // Skipping a repeat of the last entry keeps them short.
    if (where_[p].empty() || where_[p].back() != w) where_[p].push_back(w);
    if (!in_live_[p]) {  // new, or alive again after dropping to 0
      in_live_[p] = 1;
      live_.push_back(p);
    }
  }

  void build_pairs() {
    // Symbol counts were filled while reading; only the pairs are new here.
    for (size_t w = 0; w < word_seq_.size(); ++w) {
      const std::vector<int32_t>& seq = word_seq_[w];
      for (size_t i = 0; i + 1 < seq.size(); ++i) {
        const int32_t p = pair_index(seq[i], seq[i + 1]);
        pairs_[p].count += word_freq_[w];
        note_occurrence(p, static_cast<int32_t>(w));
      }
    }
  }

  // True when x = (count, a, b) ranks before y. Scores compare exactly by
  // cross-multiplying in 128 bits.
  bool better(const Pair& x, const Pair& y) const {
    using i128 = __int128;
    const i128 lhs = static_cast<i128>(x.count) * sym_count_[y.a] * sym_count_[y.b];
    const i128 rhs = static_cast<i128>(y.count) * sym_count_[x.a] * sym_count_[x.b];
    if (lhs != rhs) return lhs > rhs;
    if (x.count != y.count) return x.count > y.count;
    if (x.a != y.a) return x.a < y.a;
    return x.b < y.b;
  }

  int32_t best_pair() {
    // Pairs whose count dropped to 0 pile up in live_ as merges retire
    // them; compact it when they are the majority.
    if (dead_in_live_ * 2 > live_.size()) {
      size_t k = 0;
      for (const int32_t p : live_) {
        if (pairs_[p].count > 0)
          live_[k++] = p;
        else
          in_live_[p] = 0;
      }
      live_.resize(k);
    }

    int32_t best = -1;
    double best_score = -1.0;
    size_t dead = 0;
    for (const int32_t p : live_) {
      const Pair& x = pairs_[p];
      if (x.count <= 0) {
        ++dead;
        continue;
      }
      // Cheap floating-point filter; exact comparison only near the top.
      const double score = static_cast<double>(x.count) /
                           (static_cast<double>(sym_count_[x.a]) * static_cast<double>(sym_count_[x.b]));
      if (best >= 0 && score < best_score * (1.0 - 1e-9)) continue;
      if (best < 0 || better(x, pairs_[best])) {
        best = p;
        best_score = score;
      }
    }
    dead_in_live_ = dead;
    return best;
  }

  // Merges pair p everywhere; returns true when it created a new symbol.
  bool merge(int32_t p) {
    const int32_t a = pairs_[p].a, b = pairs_[p].b;
    const std::string& sb = sym_str_[b];
    std::string merged = sym_str_[a] + sb.substr(sb.compare(0, 2, "##") == 0 ? 2 : 0);
    bool created = false;
    int32_t m;
    if (const auto it = sym_id_.find(merged); it != sym_id_.end()) {
      m = it->second;
    } else {
      m = add_symbol(std::move(merged));
      created = true;
    }
    std::vector<int32_t> words = std::move(where_[p]);
    where_[p].clear();
    std::vector<int32_t> next;
    for (const int32_t w : words) {
      std::vector<int32_t>& seq = word_seq_[w];
      bool has = false;
      for (size_t i = 0; i + 1 < seq.size() && !has; ++i) has = seq[i] == a && seq[i + 1] == b;
      if (!has) continue;  // stale entry
      account(w, -1);
      next.clear();
      for (size_t i = 0; i < seq.size();) {
        if (i + 1 < seq.size() && seq[i] == a && seq[i + 1] == b) {
          next.push_back(m);
          i += 2;
        } else {
          next.push_back(seq[i++]);
        }
      }
      seq.swap(next);
      account(w, +1);
    }
    return created;
  }

  std::vector<std::string> sym_str_;
  std::unordered_map<std::string, int32_t> sym_id_;
  std::vector<int64_t> sym_count_;
  std::vector<std::vector<int32_t>> word_seq_;
  std::vector<int64_t> word_freq_;
  std::vector<Pair> pairs_;
  std::unordered_map<uint64_t, int32_t> pair_of_;
  std::vector<std::vector<int32_t>> where_;
  std::vector<int32_t> live_;      // pairs to scan: every pair with count > 0, maybe some with 0
  std::vector<char> in_live_;      // per pair: listed in live_
  size_t dead_in_live_ = 0;
};

}  // namespace

std::unique_ptr<Tokenizer> train_wordpiece(std::string_view corpus, int64_t vocab_size,
                                           bool lowercase) {
  SPARTA_CHECK(vocab_size > kNumSpecials && vocab_size <= std::numeric_limits<int32_t>::max(),
               "[wordpiece] vocab_size ", vocab_size, " must be in [", kNumSpecials + 1, ", ",
               std::numeric_limits<int32_t>::max(), "] (it includes the ", kNumSpecials,
               " special tokens)");
  Trainer trainer(corpus, lowercase);
  std::vector<std::string> symbols = trainer.run(vocab_size - kNumSpecials);
  SPARTA_CHECK(!symbols.empty(), "[wordpiece] cannot train a vocab: the corpus has no words");
  std::vector<std::string> vocab(std::begin(kSpecials), std::end(kSpecials));
  vocab.insert(vocab.end(), std::make_move_iterator(symbols.begin()),
               std::make_move_iterator(symbols.end()));
  return std::make_unique<WordPieceTokenizer>(std::move(vocab), lowercase, "trained vocab");
}

}  // namespace sparta
