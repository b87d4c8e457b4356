#pragma once
// Built-in long-context tasks, generated on the fly from a seed: no corpus,
// no files. Each example is a token sequence of exactly `length` inputs
// whose loss is only on the answer tokens, so a model's accuracy on it
// measures retrieval over distance.
//
//   passkey  Filler sentences ("The grass is green. The sky is blue. ...")
//            with "The pass key is D. Remember it. D is the pass key. "
//            inserted at a uniformly random sentence boundary, then
//            "What is the pass key? The pass key is " D <eot>. D is
//            passkey_digits random decimal digits (leading zeros allowed);
//            its tokens are tok.encode(D), and the same ids are used in the
//            needle and in the answer. The filler is the sentence cycle cut
//            to the exact number of tokens that makes the length come out.
//            Scored: the tokens of the final D.
//   mqar     Multi-query associative recall:
//              k1 v1 k2 v2 ... kP vP  pad ... pad  q1 w1 ... qQ wQ <eot>
//            with P = mqar_pairs distinct keys, values drawn independently
//            (may repeat), and Q = mqar_queries distinct keys of the pairs
//            in random order, each followed by its value. The padding sits
//            between the pairs and the queries, so a longer `length` means
//            a longer distance from a pair to its query. Scored: the value
//            after each query key.
//            Keys are the vocabulary's single-token words made only of ASCII
//            letters (lowercase letters only when the tokenizer lower-cases),
//            values those made only of ASCII digits, listed in id order, so
//            the sets are disjoint and a pure function of the vocabulary:
//            byte tokenizer a-z A-Z (52 keys) and 0-9 (10 values); WordPiece
//            every whole-word (no "##") alphabetic / numeric vocab entry.
//            The pad token is tok.encode(".") (one token, neither key nor
//            value).
//
// The sequence behind an example has length + 1 tokens s[0..length] and
// ends with <eot>: inputs[t] = s[t], and targets[t] = s[t + 1] where
// s[t + 1] is an answer token, -1 elsewhere (ignored by the loss).
// Examples are a pure function of (config, tokenizer, seed, index): the
// random stream of example i is seeded from (seed, i) alone.
#include <cstdint>
#include <string>
#include <vector>

#include "data/token_dataset.h"
#include "data/tokenizer.h"

namespace sparta {

struct TaskConfig {
  std::string kind;       // "passkey" | "mqar"
  int64_t length = 1024;  // tokens per example (= model context)
  // passkey
  int64_t passkey_digits = 5;
  // mqar (multi-query associative recall)
  int64_t mqar_pairs = 16;   // key-value pairs shown
  int64_t mqar_queries = 8;  // queries asked (each key asked at most once)
};

// Error (one line, prefixed "[task]") for: an unknown kind; a tokenizer kind
// other than "byte"/"wordpiece" (mqar needs its vocabulary); passkey_digits
// < 1; a tokenizer that cannot spell a digit (WordPiece without it: [UNK]);
// mqar_pairs < 1, mqar_queries outside [1, mqar_pairs], more pairs than the
// tokenizer has key tokens, no value tokens, "." not a single token; and a
// length too short for the content (passkey: needle + question + answer +
// eot; mqar: length >= 2 * (pairs + queries), the eot being the last target).
void check_task_config(const TaskConfig& c, const Tokenizer& tok);

// One example. inputs, targets: (length). answer_positions: the positions t
// with targets[t] != -1, ascending. source_positions[i]: where the answer
// predicted at answer_positions[i] sits earlier in the inputs, i.e. the
// token a retrieving model must look at (passkey: the matching digit of the
// needle's first copy of D; mqar: the value of the queried pair). Used to
// measure whether sparse attention selects it.
struct TaskExample {
  std::vector<int32_t> inputs, targets;
  std::vector<int64_t> answer_positions, source_positions;
};
// Errors as check_task_config, and for index < 0 or a pass key that the
// tokenizer does not round-trip (decode(encode(D)) != D).
TaskExample make_task_example(const TaskConfig& c, const Tokenizer& tok, uint64_t seed,
                              int64_t index);

// inputs, targets: (B, length) row-major. Row b is example cursor.index + b
// of the stream (exactly make_task_example(c, tok, seed, cursor.index + b)).
// Advances cursor.index by B; cursor.epoch is neither read nor changed (the
// stream is endless). Error if B < 1 or cursor.index < 0.
void next_task_batch(const TaskConfig& c, const Tokenizer& tok, uint64_t seed, int32_t* inputs,
                     int32_t* targets, int64_t B, DataCursor& cursor);

// logits: (length, V) for one example, row-major. True when at every answer
// position the argmax of the logits (the first index among ties) equals the
// target there. Error if V < 1.
bool task_example_correct(const TaskExample& ex, const float* logits, int64_t V);

}  // namespace sparta
