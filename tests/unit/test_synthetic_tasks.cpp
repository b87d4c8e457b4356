// Synthetic long-context tasks (passkey, MQAR): exact layout, determinism,
// scoring masks and config errors, checked by parsing the generated text
// independently of the generator, with the byte tokenizer and a small
// trained WordPiece.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "data/byte_tokenizer.h"
#include "data/synthetic_tasks.h"
#include "data/tokenizer.h"

using namespace sparta;

namespace {

std::string task_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TaskConfig passkey_config(int64_t length, int64_t digits = 5) {
  TaskConfig c;
  c.kind = "passkey";
  c.length = length;
  c.passkey_digits = digits;
  return c;
}

TaskConfig mqar_config(int64_t length, int64_t pairs, int64_t queries) {
  TaskConfig c;
  c.kind = "mqar";
  c.length = length;
  c.mqar_pairs = pairs;
  c.mqar_queries = queries;
  return c;
}

std::string byte_text(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 256);  // no eot inside the inputs of these layouts
    s.push_back(static_cast<char>(id));
  }
  return s;
}

// Positions with a target other than -1, ascending.
std::vector<int64_t> scored(const TaskExample& ex) {
  std::vector<int64_t> pos;
  for (size_t t = 0; t < ex.targets.size(); ++t)
    if (ex.targets[t] != -1) pos.push_back(static_cast<int64_t>(t));
  return pos;
}

// A small corpus with the task sentences and plenty of numbers, so the
// trained vocab has every digit both word-initial and as "##d".
const Tokenizer& small_wordpiece() {
  static const std::unique_ptr<Tokenizer> tok = [] {
    std::string corpus =
        "The grass is green. The sky is blue. The sun is yellow. Here we go. "
        "There and back again. The pass key is 31415. Remember it. 31415 is the pass key. "
        "What is the pass key? The pass key is 27182.\n";
    Rng rng(7);
    for (int i = 0; i < 300; ++i) {
      // Zero-padded, so "0" also starts words (pass keys may lead with 0).
      const std::string n = std::to_string(rng.below(1000000));
      corpus += std::string(6 - n.size(), '0') + n + " ";
      corpus += (i % 3 == 0) ? "the cat sat on a mat . " : "key value pair and query . ";
    }
    return train_wordpiece(corpus, 200);
  }();
  return *tok;
}

size_t find_ids(const std::vector<int32_t>& hay, const std::vector<int32_t>& needle) {
  auto it = std::search(hay.begin(), hay.end(), needle.begin(), needle.end());
  return it == hay.end() ? std::string::npos : static_cast<size_t>(it - hay.begin());
}

}  // namespace

TEST(SyntheticTasks, DeterministicInSeedAndIndex) {
  auto tok = make_byte_tokenizer();
  for (const TaskConfig& c : {passkey_config(300), mqar_config(128, 16, 8)}) {
    const TaskExample a = make_task_example(c, *tok, 42, 7);
    const TaskExample b = make_task_example(c, *tok, 42, 7);
    EXPECT_EQ(a.inputs, b.inputs) << c.kind;
    EXPECT_EQ(a.targets, b.targets) << c.kind;
    EXPECT_EQ(a.answer_positions, b.answer_positions) << c.kind;
    EXPECT_NE(a.inputs, make_task_example(c, *tok, 42, 8).inputs) << c.kind;
    EXPECT_NE(a.inputs, make_task_example(c, *tok, 43, 7).inputs) << c.kind;
    EXPECT_EQ(static_cast<int64_t>(a.inputs.size()), c.length);
    EXPECT_EQ(static_cast<int64_t>(a.targets.size()), c.length);
  }
}

TEST(SyntheticTasks, PasskeyByteLayoutAndMask) {
  auto tok = make_byte_tokenizer();
  const std::string question = "What is the pass key? The pass key is ";
  for (int64_t length : {102, 103, 200, 777}) {
    const TaskConfig c = passkey_config(length, 5);
    for (int64_t idx = 0; idx < 10; ++idx) {
      const TaskExample ex = make_task_example(c, *tok, 1, idx);
      ASSERT_EQ(static_cast<int64_t>(ex.inputs.size()), length);
      ASSERT_EQ(static_cast<int64_t>(ex.targets.size()), length);
      const std::string text = byte_text(ex.inputs);
      const size_t at = text.find("The pass key is ");
      ASSERT_NE(at, std::string::npos) << text;
      const std::string key = text.substr(at + 16, 5);
      ASSERT_EQ(key.find_first_not_of("0123456789"), std::string::npos) << text;
      EXPECT_EQ(text.substr(at + 21, 38), ". Remember it. " + key + " is the pass key. ");
      // The inputs end with the question and the key (the eot after it is
      // only the unscored last target).
      const std::string tail = question + key;
      ASSERT_GE(text.size(), tail.size());
      EXPECT_EQ(text.substr(text.size() - tail.size()), tail);
      EXPECT_EQ(ex.targets[length - 1], -1);
      // Scored: exactly the 5 final digits, each predicted one position early.
      const std::vector<int64_t> want = {length - 6, length - 5, length - 4, length - 3, length - 2};
      EXPECT_EQ(ex.answer_positions, want);
      // Sources: the needle's first copy of the key, digit by digit.
      const std::vector<int64_t> src = {static_cast<int64_t>(at) + 16, static_cast<int64_t>(at) + 17,
                                        static_cast<int64_t>(at) + 18, static_cast<int64_t>(at) + 19,
                                        static_cast<int64_t>(at) + 20};
      EXPECT_EQ(ex.source_positions, src);
      EXPECT_EQ(scored(ex), want);
      for (int i = 0; i < 5; ++i) {
        EXPECT_EQ(ex.targets[want[i]], static_cast<unsigned char>(key[i]));
        EXPECT_EQ(ex.targets[want[i]], ex.inputs[want[i] + 1]);
      }
      // The needle sits between whole filler sentences.
      EXPECT_TRUE(at == 0 || text.substr(at - 2, 2) == ". ") << text.substr(0, at);
    }
  }
}

TEST(SyntheticTasks, PasskeyDepthSpreadsOverTheContext) {
  auto tok = make_byte_tokenizer();
  const TaskConfig c = passkey_config(600, 5);
  int thirds[3] = {0, 0, 0};
  std::set<std::string> keys;
  for (int64_t idx = 0; idx < 200; ++idx) {
    const std::string text = byte_text(make_task_example(c, *tok, 9, idx).inputs);
    const size_t at = text.find("The pass key is ");
    ASSERT_NE(at, std::string::npos);
    keys.insert(text.substr(at + 16, 5));
    // Depth as a fraction of the filler: the needle (54 characters) can
    // start anywhere from 0 to the question's start minus its own length.
    const size_t q = text.rfind("What is the pass key?");
    ASSERT_NE(q, std::string::npos);
    ASSERT_LE(at + 54, q);
    ++thirds[std::min<size_t>(2, at * 3 / (q - 54 + 1))];
  }
  for (int k = 0; k < 3; ++k) EXPECT_GE(thirds[k], 40) << "third " << k;
  EXPECT_GE(keys.size(), 190u);  // 200 draws from 10^5 keys
}

TEST(SyntheticTasks, MqarByteRecallStructure) {
  auto tok = make_byte_tokenizer();
  const int64_t P = 16, Q = 8;
  for (int64_t length : {48, 100, 512}) {
    const TaskConfig c = mqar_config(length, P, Q);
    for (int64_t idx = 0; idx < 20; ++idx) {
      const TaskExample ex = make_task_example(c, *tok, 5, idx);
      ASSERT_EQ(static_cast<int64_t>(ex.inputs.size()), length);
      std::map<int32_t, int32_t> value_of;
      for (int64_t i = 0; i < P; ++i) {
        const int32_t k = ex.inputs[2 * i], v = ex.inputs[2 * i + 1];
        EXPECT_TRUE(std::isalpha(k)) << k;
        EXPECT_TRUE(std::isdigit(v)) << v;
        EXPECT_TRUE(value_of.emplace(k, v).second) << "key repeated: " << char(k);
      }
      for (int64_t t = 2 * P; t < length - 2 * Q; ++t) EXPECT_EQ(ex.inputs[t], '.') << t;
      const std::vector<int64_t> pos = scored(ex);
      EXPECT_EQ(pos, ex.answer_positions);
      ASSERT_EQ(static_cast<int64_t>(pos.size()), Q);
      std::set<int32_t> asked;
      for (int64_t j = 0; j < Q; ++j) {
        EXPECT_EQ(pos[j], length - 2 * Q + 2 * j);
        const int32_t k = ex.inputs[pos[j]];
        ASSERT_TRUE(value_of.count(k)) << "query key never shown: " << char(k);
        EXPECT_EQ(ex.targets[pos[j]], value_of[k]);
        EXPECT_TRUE(asked.insert(k).second) << "key asked twice";
        if (pos[j] + 1 < length) {
          EXPECT_EQ(ex.inputs[pos[j] + 1], value_of[k]);
        }
      }
    }
  }
}

TEST(SyntheticTasks, ConfigErrors) {
  auto tok = make_byte_tokenizer();
  TaskConfig bad = passkey_config(1024);
  bad.kind = "needle";
  EXPECT_NE(task_error([&] { check_task_config(bad, *tok); }).find("unknown kind 'needle'"),
            std::string::npos);
  // Byte tokenizer, 5 digits: needle 16 + 5 + 15 + 5 + 18, question 38 + 5
  // = 102 tokens, plus the eot as the last target.
  EXPECT_EQ(task_error([&] { check_task_config(passkey_config(102), *tok); }), "(no error)");
  const std::string short_pk = task_error([&] { check_task_config(passkey_config(101), *tok); });
  EXPECT_NE(short_pk.find("length 101 is too short"), std::string::npos) << short_pk;
  EXPECT_NE(task_error([&] { make_task_example(passkey_config(60), *tok, 0, 0); })
                .find("too short"),
            std::string::npos);
  EXPECT_NE(task_error([&] { check_task_config(passkey_config(500, 0), *tok); })
                .find("passkey_digits 0"),
            std::string::npos);
  EXPECT_EQ(task_error([&] { check_task_config(mqar_config(48, 16, 8), *tok); }), "(no error)");
  const std::string short_mq = task_error([&] { check_task_config(mqar_config(47, 16, 8), *tok); });
  EXPECT_NE(short_mq.find("length 47 is too short"), std::string::npos) << short_mq;
  EXPECT_NE(task_error([&] { check_task_config(mqar_config(512, 4, 5), *tok); })
                .find("mqar_queries 5"),
            std::string::npos);
  EXPECT_NE(task_error([&] { check_task_config(mqar_config(512, 53, 5), *tok); })
                .find("exceeds the 52 distinct key tokens"),
            std::string::npos);
  EXPECT_NE(task_error([&] { make_task_example(mqar_config(512, 4, 2), *tok, 0, -1); })
                .find("index -1"),
            std::string::npos);
}

TEST(SyntheticTasks, PasskeyWordPiece) {
  const Tokenizer& tok = small_wordpiece();
  const TaskConfig c = passkey_config(256, 5);
  const std::vector<int32_t> lead = tok.encode("The pass key is ");
  const std::vector<int32_t> question = tok.encode("What is the pass key? The pass key is ");
  for (int64_t idx = 0; idx < 20; ++idx) {
    const TaskExample ex = make_task_example(c, tok, 3, idx);
    ASSERT_EQ(ex.inputs.size(), 256u);
    const std::string text = tok.decode(ex.inputs);
    const size_t at = text.find("the pass key is ");
    ASSERT_NE(at, std::string::npos) << text;
    const std::string key = text.substr(at + 16, 5);
    ASSERT_EQ(key.find_first_not_of("0123456789"), std::string::npos) << text;
    EXPECT_EQ(text.substr(at + 21, 40), " . remember it . " + key + " is the pass key .");
    // The answer tokens are exactly the encoding of the key, and the needle
    // carries the same ids.
    const std::vector<int32_t> ans = tok.encode(key);
    const std::vector<int64_t> pos = scored(ex);
    EXPECT_EQ(pos, ex.answer_positions);
    ASSERT_EQ(pos.size(), ans.size());
    for (size_t i = 0; i < ans.size(); ++i) EXPECT_EQ(ex.targets[pos[i]], ans[i]);
    EXPECT_EQ(pos.back(), 254);
    const size_t needle = find_ids(ex.inputs, lead);
    ASSERT_NE(needle, std::string::npos);
    EXPECT_TRUE(std::equal(ans.begin(), ans.end(), ex.inputs.begin() + needle + lead.size()));
    // The question directly precedes the scored answer.
    const size_t q = pos.front() + 1 - question.size();
    EXPECT_TRUE(std::equal(question.begin(), question.end(), ex.inputs.begin() + q));
  }
}

TEST(SyntheticTasks, WordPieceWithoutDigitsIsRejected) {
  const auto tok = train_wordpiece("The grass is green. The sky is blue. key value . ", 60);
  const std::string pk = task_error([&] { check_task_config(passkey_config(512), *tok); });
  EXPECT_NE(pk.find("cannot spell the digit '0'"), std::string::npos) << pk;
  const std::string mq = task_error([&] { check_task_config(mqar_config(512, 4, 2), *tok); });
  EXPECT_NE(mq.find("no single-token numbers"), std::string::npos) << mq;
}

TEST(SyntheticTasks, MqarWordPieceTokenSets) {
  const Tokenizer& tok = small_wordpiece();
  const TaskConfig c = mqar_config(200, 12, 6);
  std::set<int32_t> keys_seen;
  for (int64_t idx = 0; idx < 20; ++idx) {
    const TaskExample ex = make_task_example(c, tok, 11, idx);
    ASSERT_EQ(ex.inputs.size(), 200u);
    std::map<int32_t, int32_t> value_of;
    for (int i = 0; i < 12; ++i) {
      const int32_t k = ex.inputs[2 * i], v = ex.inputs[2 * i + 1];
      const std::string ks = tok.decode({k}), vs = tok.decode({v});
      EXPECT_TRUE(!ks.empty() && std::all_of(ks.begin(), ks.end(), ::islower)) << ks;
      EXPECT_TRUE(!vs.empty() && std::all_of(vs.begin(), vs.end(), ::isdigit)) << vs;
      EXPECT_EQ(tok.encode(ks), std::vector<int32_t>{k}) << ks;  // a whole word
      EXPECT_EQ(tok.encode(vs), std::vector<int32_t>{v}) << vs;
      EXPECT_TRUE(value_of.emplace(k, v).second) << "key repeated: " << ks;
      keys_seen.insert(k);
    }
    ASSERT_EQ(ex.answer_positions.size(), 6u);
    ASSERT_EQ(ex.source_positions.size(), 6u);
    for (size_t i = 0; i < 6; ++i) {
      // The source is the value of the queried pair: the token right after
      // the same key among the pairs, equal to the answer.
      const int64_t src = ex.source_positions[i], ans = ex.answer_positions[i];
      ASSERT_TRUE(src >= 1 && src < 24 && src % 2 == 1) << src;
      EXPECT_EQ(ex.inputs[src - 1], ex.inputs[ans]);
      EXPECT_EQ(ex.inputs[src], ex.targets[ans]);
    }
    for (int64_t t : ex.answer_positions) {
      ASSERT_TRUE(value_of.count(ex.inputs[t]));
      EXPECT_EQ(ex.targets[t], value_of[ex.inputs[t]]);
    }
  }
  EXPECT_GT(keys_seen.size(), 12u);  // keys vary between examples
}

TEST(SyntheticTasks, BatchMatchesPerExampleGenerator) {
  auto tok = make_byte_tokenizer();
  for (const TaskConfig& c : {passkey_config(160), mqar_config(64, 8, 4)}) {
    const int64_t B = 3, L = c.length;
    std::vector<int32_t> in(B * L), tg(B * L);
    DataCursor cur{2, 5};
    next_task_batch(c, *tok, 77, in.data(), tg.data(), B, cur);
    EXPECT_EQ(cur.index, 8);
    EXPECT_EQ(cur.epoch, 2);
    for (int64_t b = 0; b < B; ++b) {
      const TaskExample ex = make_task_example(c, *tok, 77, 5 + b);
      EXPECT_TRUE(std::equal(ex.inputs.begin(), ex.inputs.end(), in.begin() + b * L)) << b;
      EXPECT_TRUE(std::equal(ex.targets.begin(), ex.targets.end(), tg.begin() + b * L)) << b;
    }
    // The next batch continues the stream: its first row is example 8.
    next_task_batch(c, *tok, 77, in.data(), tg.data(), B, cur);
    EXPECT_EQ(cur.index, 11);
    const TaskExample ex8 = make_task_example(c, *tok, 77, 8);
    EXPECT_TRUE(std::equal(ex8.inputs.begin(), ex8.inputs.end(), in.begin()));
    EXPECT_NE(task_error([&] { next_task_batch(c, *tok, 77, in.data(), tg.data(), 0, cur); })
                  .find("batch size 0"),
              std::string::npos);
  }
}

TEST(SyntheticTasks, ExampleCorrectUsesArgmaxAtAnswers) {
  auto tok = make_byte_tokenizer();
  const TaskExample ex = make_task_example(mqar_config(64, 8, 4), *tok, 1, 0);
  const int64_t V = ByteTokenizer::kVocabSize, L = 64;
  std::vector<float> logits(L * V, 0.0f);
  // Junk maxima at unscored positions must not matter.
  for (int64_t t = 0; t < L; ++t) logits[t * V + 200] = 5.0f;
  for (int64_t t : ex.answer_positions) {
    logits[t * V + 200] = 0.0f;
    logits[t * V + ex.targets[t]] = 3.0f;
  }
  EXPECT_TRUE(task_example_correct(ex, logits.data(), V));
  // One answer position wrong -> the example is wrong.
  const int64_t t1 = ex.answer_positions[1];
  logits[t1 * V + 'z'] = 4.0f;
  EXPECT_FALSE(task_example_correct(ex, logits.data(), V));
  // A tie goes to the lower id.
  logits[t1 * V + 'z'] = 0.0f;
  logits[t1 * V + 0] = 3.0f;
  EXPECT_FALSE(task_example_correct(ex, logits.data(), V));
}
