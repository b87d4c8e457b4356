// evaluate_task's source-recall diagnostic (trainer.h): which layers'
// sparse attention reaches the block holding each answer's source token.
// Checked against what the attention pattern implies, computed here from
// the examples alone: dense reports nothing, a full DSA budget reaches every
// source, a one-block window exactly the sources in the answer's own block.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>

#include "data/synthetic_tasks.h"
#include "data/tokenizer.h"
#include "nn/gpt.h"
#include "eval/evaluate.h"

namespace sparta {
namespace {

GPTConfig tiny_model(const std::string& attention) {
  GPTConfig c;
  c.vocab_size = 257, c.context = 512, c.n_layer = 2, c.n_head = 2, c.d_model = 32;
  c.attention = attention;
  c.dsa.block = 64;
  c.dsa.window = 64;  // one window block
  return c;
}

TaskConfig passkey512() {
  TaskConfig t;
  t.kind = "passkey";
  t.length = 512;
  return t;
}

TaskEvalResult eval_with(const GPTConfig& c, int64_t n) {
  GPT model(c);
  GPTActivations model_acts;
  model.init_weights(3);
  auto tok = make_byte_tokenizer();
  return evaluate_task(model, model_acts, passkey512(), *tok, 11, n, 4);
}

TEST(TaskEval, DenseAttentionReportsNoSourceRecall) {
  const TaskEvalResult r = eval_with(tiny_model("dense"), 4);
  EXPECT_TRUE(r.source_recall.empty());
  EXPECT_TRUE(r.source_recall_any.empty());
  EXPECT_EQ(r.examples, 4);
  EXPECT_EQ(r.tokens, 4 * 5);  // 5 key digits per example
}

TEST(TaskEval, FullDsaBudgetReachesEverySource) {
  GPTConfig c = tiny_model("dsa");
  c.dsa.top_k = int64_t{1} << 30;  // budget = every key
  const TaskEvalResult r = eval_with(c, 6);
  ASSERT_EQ(r.source_recall.size(), 2u);
  for (size_t l = 0; l < 2; ++l) {
    EXPECT_EQ(r.source_recall[l], 1.0) << l;
    EXPECT_EQ(r.source_recall_any[l], 1.0) << l;
  }
}

TEST(TaskEval, WindowRecallIsTheShareOfSourcesInTheAnswersBlock) {
  const int64_t n = 24;
  auto tok = make_byte_tokenizer();
  int64_t in_window = 0, answers = 0;
  for (int64_t i = 0; i < n; ++i) {
    const TaskExample ex = make_task_example(passkey512(), *tok, 11, i);
    for (size_t a = 0; a < ex.answer_positions.size(); ++a, ++answers)
      in_window += ex.answer_positions[a] / 64 == ex.source_positions[a] / 64;
  }
  const TaskEvalResult r = eval_with(tiny_model("window"), n);
  ASSERT_EQ(r.source_recall.size(), 2u);
  const double want = static_cast<double>(in_window) / static_cast<double>(answers);
  ASSERT_LT(want, 1.0);  // some needles lie outside the answer's block
  for (size_t l = 0; l < 2; ++l) {
    EXPECT_DOUBLE_EQ(r.source_recall[l], want) << l;  // the window is the same for every head
    EXPECT_DOUBLE_EQ(r.source_recall_any[l], want) << l;
  }
}

TEST(TaskEval, SparseDsaRecallIsAFractionAndAnyHeadBoundsIt) {
  const TaskEvalResult r = eval_with(tiny_model("dsa"), 8);
  ASSERT_EQ(r.source_recall.size(), 2u);
  for (size_t l = 0; l < 2; ++l) {
    EXPECT_GE(r.source_recall[l], 0.0);
    EXPECT_LE(r.source_recall[l], r.source_recall_any[l]);
    EXPECT_LE(r.source_recall_any[l], 1.0);
  }
}

}  // namespace
// Data parallel: shards of the examples (every R-th batch) add up to the
// whole evaluation: loss, accuracy and the per-layer source recall.
TEST(TaskEval, ShardsAddUpToTheWholeEvaluation) {
  GPTConfig c = tiny_model("dsa");
  GPT model(c);
  GPTActivations acts;
  model.init_weights(3);
  auto tok = make_byte_tokenizer();
  const int64_t n = 10, batch = 3;  // batches of 3, 3, 3, 1 examples
  const TaskEvalResult whole = evaluate_task(model, acts, passkey512(), *tok, 11, n, batch);
  ASSERT_EQ(whole.source_recall.size(), 2u);
  const int64_t count = 3;
  std::vector<double> total;
  for (int64_t i = 0; i < count; ++i)
    evaluate_task(model, acts, passkey512(), *tok, 11, n, batch, EvalShard{i, count, [&](double* v, int64_t k) {
                    total.resize(static_cast<size_t>(k), 0.0);
                    for (int64_t j = 0; j < k; ++j) total[j] += v[j];
                  }});
  for (int64_t i = 0; i < count; ++i) {
    const TaskEvalResult r = evaluate_task(
        model, acts, passkey512(), *tok, 11, n, batch,
        EvalShard{i, count, [&](double* v, int64_t k) { std::copy(total.begin(), total.begin() + k, v); }});
    EXPECT_EQ(r.tokens, whole.tokens);
    EXPECT_EQ(r.examples, n);
    EXPECT_NEAR(r.loss, whole.loss, 1e-12 * whole.loss);
    EXPECT_EQ(r.accuracy, whole.accuracy);
    EXPECT_EQ(r.source_recall, whole.source_recall);
    EXPECT_EQ(r.source_recall_any, whole.source_recall_any);
  }
}

}  // namespace sparta
