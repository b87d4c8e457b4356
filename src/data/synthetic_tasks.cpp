// Passkey and MQAR generators (synthetic_tasks.h).
#include "data/synthetic_tasks.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <string_view>

#include "core/error.h"
#include "core/rng.h"
#include "data/byte_tokenizer.h"
#include "data/wordpiece.h"

namespace sparta {

namespace {

constexpr std::string_view kFiller[] = {"The grass is green. ", "The sky is blue. ",
                                        "The sun is yellow. ", "Here we go. ",
                                        "There and back again. "};
constexpr std::string_view kNeedleA = "The pass key is ";
constexpr std::string_view kNeedleB = ". Remember it. ";
constexpr std::string_view kNeedleC = " is the pass key. ";
constexpr std::string_view kQuestion = "What is the pass key? The pass key is ";

// splitmix64's finalizer: a bijective scramble, so nearby (seed, index)
// pairs give unrelated example streams.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t example_seed(uint64_t seed, int64_t index) {
  return mix64(seed ^ mix64(static_cast<uint64_t>(index) + 0x9e3779b97f4a7c15ULL));
}

// Everything about a (config, tokenizer) pair that does not depend on the
// example: validated once, then reused for every row of a batch.
struct Prepared {
  const TaskConfig* c = nullptr;
  const Tokenizer* tok = nullptr;
  bool passkey = false;
  int32_t eot = 0;
  // passkey: token ids of the fixed text pieces
  std::vector<std::vector<int32_t>> filler;
  std::vector<int32_t> needle_a, needle_b, needle_c, question;
  // mqar
  std::vector<int32_t> keys, values;
  int32_t pad = 0;
};

bool all_of_chars(const std::string& s, bool (*pred)(char)) {
  return !s.empty() && std::all_of(s.begin(), s.end(), pred);
}
bool is_lower(char ch) { return ch >= 'a' && ch <= 'z'; }
bool is_alpha(char ch) { return is_lower(ch) || (ch >= 'A' && ch <= 'Z'); }
bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }

// Key and value token sets from the vocabulary, in id order. A token only
// qualifies when encoding its own text gives back exactly that id, so the
// sets are "words" a text encoder would also produce.
void collect_mqar_tokens(const Tokenizer& tok, Prepared& p) {
  if (tok.kind() == "byte") {
    for (int32_t id = 0; id < 256; ++id) {
      const char ch = static_cast<char>(id);
      if (is_alpha(ch)) p.keys.push_back(id);
      if (is_digit(ch)) p.values.push_back(id);
    }
    return;
  }
  const auto* wp = dynamic_cast<const WordPieceTokenizer*>(&tok);
  SPARTA_CHECK(wp != nullptr, "[task] mqar: no key/value token sets for tokenizer kind '",
               tok.kind(), "' (expected \"byte\" or \"wordpiece\")");
  // A lower-casing tokenizer never emits a token with capitals, so those
  // entries would be keys the model can never be asked about in text form.
  bool (*key_char)(char) = wp->lowercase() ? is_lower : is_alpha;
  const auto& vocab = wp->vocab();
  for (size_t i = 0; i < vocab.size(); ++i) {
    const auto id = static_cast<int32_t>(i);
    const std::string& t = vocab[i];
    // "##" pieces and "[PAD]"-style specials fail the character test.
    const bool key = all_of_chars(t, key_char);
    const bool value = !key && all_of_chars(t, is_digit);
    if ((key || value) && wp->token_to_id(t) == id) (key ? p.keys : p.values).push_back(id);
  }
}

Prepared prepare(const TaskConfig& c, const Tokenizer& tok) {
  Prepared p;
  p.c = &c;
  p.tok = &tok;
  p.eot = tok.eot_id();
  SPARTA_CHECK(c.length >= 1, "[task] ", c.kind, ": length ", c.length, " must be >= 1");
  if (c.kind == "passkey") {
    p.passkey = true;
    SPARTA_CHECK(c.passkey_digits >= 1 && c.passkey_digits <= c.length, "[task] passkey: passkey_digits ",
                 c.passkey_digits, " must be in [1, length = ", c.length, "]");
    for (char d = '0'; d <= '9'; ++d) {
      const std::string s(1, d);
      const std::string back = tok.decode(tok.encode(s));
      SPARTA_CHECK(back == s, "[task] passkey: the ", tok.kind(), " tokenizer cannot spell the digit '",
                   s, "' (it decodes as '", back, "')");
    }
    for (std::string_view s : kFiller) {
      p.filler.push_back(tok.encode(s));
      SPARTA_CHECK(!p.filler.back().empty(), "[task] passkey: filler sentence '", s,
                   "' encodes to no tokens");
    }
    p.needle_a = tok.encode(kNeedleA);
    p.needle_b = tok.encode(kNeedleB);
    p.needle_c = tok.encode(kNeedleC);
    p.question = tok.encode(kQuestion);
    // The answer D appears three times and encodes to at most one token per
    // digit (every WordPiece piece spans at least one character).
    const int64_t need = static_cast<int64_t>(p.needle_a.size() + p.needle_b.size() +
                                              p.needle_c.size() + p.question.size()) +
                         3 * c.passkey_digits + 1;
    SPARTA_CHECK(c.length + 1 >= need, "[task] passkey: length ", c.length,
                 " is too short: the pass key text, question and answer (passkey_digits ",
                 c.passkey_digits, ") need up to ", need - 1, " tokens with the ", tok.kind(),
                 " tokenizer");
    return p;
  }
  SPARTA_CHECK(c.kind == "mqar", "[task] unknown kind '", c.kind,
               "' (expected \"passkey\" or \"mqar\")");
  SPARTA_CHECK(c.mqar_pairs >= 1, "[task] mqar: mqar_pairs ", c.mqar_pairs, " must be >= 1");
  SPARTA_CHECK(c.mqar_queries >= 1 && c.mqar_queries <= c.mqar_pairs, "[task] mqar: mqar_queries ",
               c.mqar_queries, " must be in [1, mqar_pairs = ", c.mqar_pairs, "]");
  collect_mqar_tokens(tok, p);
  SPARTA_CHECK(c.mqar_pairs <= static_cast<int64_t>(p.keys.size()), "[task] mqar: mqar_pairs ",
               c.mqar_pairs, " exceeds the ", p.keys.size(), " distinct key tokens of the ",
               tok.kind(), " tokenizer");
  SPARTA_CHECK(!p.values.empty(), "[task] mqar: the ", tok.kind(),
               " tokenizer has no single-token numbers to use as values");
  const std::vector<int32_t> dot = tok.encode(".");
  SPARTA_CHECK(dot.size() == 1, "[task] mqar: the pad text \".\" encodes to ", dot.size(),
               " tokens, expected 1");
  p.pad = dot[0];
  const int64_t need = 2 * (c.mqar_pairs + c.mqar_queries);  // + eot as the last target
  SPARTA_CHECK(c.length >= need, "[task] mqar: length ", c.length, " is too short: ",
               c.mqar_pairs, " pairs and ", c.mqar_queries, " queries need ", need, " tokens");
  return p;
}

void append(std::vector<int32_t>& out, const std::vector<int32_t>& ids) {
  out.insert(out.end(), ids.begin(), ids.end());
}

// The length + 1 tokens s[0..length] of one example; `answer` receives the
// sequence indices of the scored tokens (ascending), `source` the sequence
// index of the earlier copy of each.
std::vector<int32_t> passkey_sequence(const Prepared& p, Rng& rng, std::vector<int64_t>& answer,
                                      std::vector<int64_t>& source) {
  const TaskConfig& c = *p.c;
  std::string key(static_cast<size_t>(c.passkey_digits), '0');
  for (char& d : key) d = static_cast<char>('0' + rng.below(10));
  // Encoded once and reused, so the needle and the answer carry the same ids
  // even where the tokenizer would split differently in other contexts.
  const std::vector<int32_t> ans = p.tok->encode(key);
  const std::string back = p.tok->decode(ans);
  SPARTA_CHECK(back == key, "[task] passkey: the ", p.tok->kind(),
               " tokenizer does not round-trip the pass key '", key, "' (decodes as '", back, "')");
  const auto A = static_cast<int64_t>(ans.size());
  const int64_t fixed = static_cast<int64_t>(p.needle_a.size() + p.needle_b.size() +
                                             p.needle_c.size() + p.question.size()) +
                        3 * A + 1;
  const int64_t F = c.length + 1 - fixed;  // >= 0: prepare() checked the worst case

  // The sentence cycle cut to F tokens; the needle may go at any boundary
  // between whole sentences (including before the first and after the last
  // complete one; a cut sentence stays at the very end).
  std::vector<int32_t> filler;
  filler.reserve(static_cast<size_t>(F));
  std::vector<int64_t> bounds{0};
  for (size_t s = 0; static_cast<int64_t>(filler.size()) < F; ++s) {
    const auto& sent = p.filler[s % p.filler.size()];
    const int64_t room = F - static_cast<int64_t>(filler.size());
    const int64_t take = std::min<int64_t>(room, static_cast<int64_t>(sent.size()));
    filler.insert(filler.end(), sent.begin(), sent.begin() + take);
    if (take == static_cast<int64_t>(sent.size())) bounds.push_back(static_cast<int64_t>(filler.size()));
  }
  const int64_t depth = bounds[rng.below(bounds.size())];

  std::vector<int32_t> seq;
  seq.reserve(static_cast<size_t>(c.length + 1));
  seq.insert(seq.end(), filler.begin(), filler.begin() + depth);
  append(seq, p.needle_a);
  const auto needle = static_cast<int64_t>(seq.size());
  append(seq, ans);
  append(seq, p.needle_b);
  append(seq, ans);
  append(seq, p.needle_c);
  seq.insert(seq.end(), filler.begin() + depth, filler.end());
  append(seq, p.question);
  const auto first = static_cast<int64_t>(seq.size());
  append(seq, ans);
  seq.push_back(p.eot);
  for (int64_t i = 0; i < A; ++i) {
    answer.push_back(first + i);
    source.push_back(needle + i);
  }
  return seq;
}

std::vector<int32_t> mqar_sequence(const Prepared& p, Rng& rng, std::vector<int64_t>& answer,
                                   std::vector<int64_t>& source) {
  const TaskConfig& c = *p.c;
  const int64_t P = c.mqar_pairs, Q = c.mqar_queries;
  // Partial Fisher-Yates: the first P entries become P distinct keys.
  std::vector<int32_t> keys = p.keys;
  for (int64_t i = 0; i < P; ++i) {
    const auto j = i + static_cast<int64_t>(rng.below(keys.size() - static_cast<uint64_t>(i)));
    std::swap(keys[i], keys[j]);
  }
  std::vector<int32_t> vals(static_cast<size_t>(P));
  for (auto& v : vals) v = p.values[rng.below(p.values.size())];
  std::vector<int64_t> order(static_cast<size_t>(P));
  for (int64_t i = 0; i < P; ++i) order[i] = i;
  for (int64_t i = 0; i < Q; ++i) {
    const auto j = i + static_cast<int64_t>(rng.below(static_cast<uint64_t>(P - i)));
    std::swap(order[i], order[j]);
  }

  std::vector<int32_t> seq;
  seq.reserve(static_cast<size_t>(c.length + 1));
  for (int64_t i = 0; i < P; ++i) {
    seq.push_back(keys[i]);
    seq.push_back(vals[i]);
  }
  seq.insert(seq.end(), static_cast<size_t>(c.length - 2 * (P + Q)), p.pad);
  for (int64_t i = 0; i < Q; ++i) {
    seq.push_back(keys[order[i]]);
    answer.push_back(static_cast<int64_t>(seq.size()));
    source.push_back(2 * order[i] + 1);
    seq.push_back(vals[order[i]]);
  }
  seq.push_back(p.eot);
  return seq;
}

// Writes example `index` into inputs/targets (length each); returns the
// answer positions, and their source positions in *sources when given.
std::vector<int64_t> write_example(const Prepared& p, uint64_t seed, int64_t index,
                                   int32_t* inputs, int32_t* targets,
                                   std::vector<int64_t>* sources = nullptr) {
  SPARTA_CHECK(index >= 0, "[task] ", p.c->kind, ": example index ", index, " must be >= 0");
  Rng rng(example_seed(seed, index));
  std::vector<int64_t> answer, source;  // sequence indices of scored tokens and their earlier copies
  const std::vector<int32_t> seq =
      p.passkey ? passkey_sequence(p, rng, answer, source) : mqar_sequence(p, rng, answer, source);
  if (sources) *sources = source;
  const int64_t L = p.c->length;
  SPARTA_CHECK(static_cast<int64_t>(seq.size()) == L + 1, "[task] ", p.c->kind,
               ": internal length mismatch: built ", seq.size(), " tokens for length ", L);
  std::memcpy(inputs, seq.data(), static_cast<size_t>(L) * sizeof(int32_t));
  std::fill(targets, targets + L, -1);
  // Token s[i] is predicted at position i - 1; i >= 1 always holds because
  // every answer follows a key or the question.
  std::vector<int64_t> positions;
  positions.reserve(answer.size());
  for (int64_t i : answer) {
    targets[i - 1] = seq[static_cast<size_t>(i)];
    positions.push_back(i - 1);
  }
  return positions;
}

}  // namespace

void check_task_config(const TaskConfig& c, const Tokenizer& tok) { (void)prepare(c, tok); }

TaskExample make_task_example(const TaskConfig& c, const Tokenizer& tok, uint64_t seed,
                              int64_t index) {
  const Prepared p = prepare(c, tok);
  TaskExample ex;
  ex.inputs.resize(static_cast<size_t>(c.length));
  ex.targets.resize(static_cast<size_t>(c.length));
  ex.answer_positions =
      write_example(p, seed, index, ex.inputs.data(), ex.targets.data(), &ex.source_positions);
  return ex;
}

void next_task_batch(const TaskConfig& c, const Tokenizer& tok, uint64_t seed, int32_t* inputs,
                     int32_t* targets, int64_t B, DataCursor& cursor) {
  SPARTA_CHECK(B >= 1, "[task] ", c.kind, ": batch size ", B, " must be >= 1");
  SPARTA_CHECK(cursor.index >= 0 && cursor.index <= std::numeric_limits<int64_t>::max() - B,
               "[task] ", c.kind, ": cursor index ", cursor.index, " is out of range");
  const Prepared p = prepare(c, tok);
  for (int64_t b = 0; b < B; ++b)
    write_example(p, seed, cursor.index + b, inputs + b * c.length, targets + b * c.length);
  cursor.index += B;
}

bool task_example_correct(const TaskExample& ex, const float* logits, int64_t V) {
  SPARTA_CHECK(V >= 1, "[task] task_example_correct: vocab size ", V, " must be >= 1");
  const auto L = static_cast<int64_t>(ex.targets.size());
  for (int64_t t : ex.answer_positions) {
    SPARTA_CHECK(t >= 0 && t < L, "[task] task_example_correct: answer position ", t,
                 " is outside the example's ", L, " positions");
    const float* row = logits + t * V;
    // First maximum wins, so ties resolve the same way on every machine.
    const int64_t best = std::max_element(row, row + V) - row;
    if (best != ex.targets[static_cast<size_t>(t)]) return false;
  }
  return true;
}

}  // namespace sparta
