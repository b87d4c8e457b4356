// evaluate_tokens: windows of the model's context over a long stream, and a
// stream shorter than the context evaluated at its own length (not padded to
// the context, which made `sparta eval` of a small file at a long context
// take minutes).
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <vector>

#include "data/token_dataset.h"
#include "nn/gpt.h"
#include "nn/lm_objective.h"
#include "eval/evaluate.h"

using namespace sparta;

namespace {

std::unique_ptr<GPT> small_model(int64_t context) {
  GPTConfig g;
  g.vocab_size = 50;
  g.context = context;
  g.n_layer = 1;
  g.n_head = 2;
  g.d_model = 16;
  auto model = std::make_unique<GPT>(g);
  model->init_weights(3);
  return model;
}

std::vector<int32_t> stream(int64_t n) {
  std::vector<int32_t> t(n);
  for (int64_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 7 + i / 5) % 50);
  return t;
}

}  // namespace

TEST(Evaluate, StreamLongerThanTheContextIsCutIntoContextWindows) {
  const auto owner = small_model(16);
  GPT& model = *owner;
  GPTActivations acts;
  const std::vector<int32_t> tokens = stream(100);  // 99 targets: 6 full windows and a padded one
  double sum = 0.0;
  int64_t count = 0;
  std::vector<int32_t> in(16), tg(16);
  for (int64_t w = 0; w < eval_windows(100, 16); ++w) {
    eval_window(tokens, 16, w, in.data(), tg.data());
    int64_t c = 0;
    sum += lm_forward_loss(model, acts, in.data(), tg.data(), 1, 16, &c);
    count += c;
  }
  const EvalResult r = evaluate_tokens(model, acts, tokens, 1);
  EXPECT_EQ(r.tokens, 99);
  EXPECT_EQ(count, 99);
  EXPECT_EQ(r.loss, sum / static_cast<double>(count));
}

TEST(Evaluate, StreamShorterThanTheContextIsOneWindowOfItsLength) {
  const auto owner = small_model(1 << 20);
  GPT& model = *owner;
  GPTActivations acts;
  const std::vector<int32_t> tokens = stream(40);
  const auto t0 = std::chrono::steady_clock::now();
  const EvalResult r = evaluate_tokens(model, acts, tokens, 4);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t c = 0;
  const double sum = lm_forward_loss(model, acts, tokens.data(), tokens.data() + 1, 1, 39, &c);
  EXPECT_EQ(r.tokens, 39);
  EXPECT_EQ(r.loss, sum / static_cast<double>(c));
  EXPECT_LT(s, 20.0);  // padded to the context it would be a 1M-token forward pass (hours)
  EXPECT_EQ(evaluate_tokens(model, acts, stream(1), 4).tokens, 0);
}

// Data parallel: R processes each evaluate every R-th batch, and their sums
// (handed to sum_over_shards) add up to the single-process evaluation.
// Simulated here in one process: a first pass records each shard's sums, a
// second hands every shard the total, as an all-reduce would.
TEST(Evaluate, ShardsAddUpToTheWholeEvaluation) {
  const auto owner = small_model(16);
  GPT& model = *owner;
  GPTActivations acts;
  const std::vector<int32_t> tokens = stream(100);  // 7 windows: 4 batches of 2
  const EvalResult whole = evaluate_tokens(model, acts, tokens, 2);
  for (int64_t count : {2, 3, 5}) {
    SCOPED_TRACE(count);
    std::vector<double> total;
    for (int64_t i = 0; i < count; ++i) {
      EvalShard shard{i, count, [&](double* v, int64_t n) {
                        total.resize(static_cast<size_t>(n), 0.0);
                        for (int64_t j = 0; j < n; ++j) total[j] += v[j];
                      }};
      evaluate_tokens(model, acts, tokens, 2, 0, shard);
    }
    for (int64_t i = 0; i < count; ++i) {
      EvalShard shard{i, count, [&](double* v, int64_t n) { std::copy(total.begin(), total.begin() + n, v); }};
      const EvalResult r = evaluate_tokens(model, acts, tokens, 2, 0, shard);
      EXPECT_EQ(r.tokens, whole.tokens);
      EXPECT_NEAR(r.loss, whole.loss, 1e-12 * whole.loss);
      EXPECT_FALSE(r.partial);
    }
  }
  EXPECT_THROW(evaluate_tokens(model, acts, tokens, 2, 0, EvalShard{0, 2, nullptr}), Error);
  EXPECT_THROW(evaluate_tokens(model, acts, tokens, 2, 0, EvalShard{2, 2, [](double*, int64_t) {}}), Error);
}
