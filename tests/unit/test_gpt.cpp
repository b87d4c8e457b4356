#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "nn/generate.h"
#include "nn/gpt.h"
#include "nn/lm_objective.h"
#include "ops/softmax_xent.h"

using namespace sparta;

namespace {
GPTConfig tiny() {
  GPTConfig c;
  c.vocab_size = 13;
  c.context = 12;
  c.n_layer = 2;
  c.n_head = 2;
  c.d_model = 16;
  return c;
}

// DSA that selects at context 64: blocks of 8, a one-block window, 8 keys
// of top-k and 30% of the groups kept.
GPTConfig tiny_dsa() {
  GPTConfig c = tiny();
  c.context = 64;
  c.attention = "dsa";
  c.dsa.block = 8, c.dsa.window = 8, c.dsa.top_k = 8, c.dsa.keep_short = 0.3, c.dsa.keep_long = 0.3;
  c.dsa.dense_len = 0;  // select at this short context
  return c;
}

// Larger-than-default random weights so every path carries signal.
void randomize(GPT& m, uint64_t seed) {
  Rng rng(seed);
  ParamStore& P = m.params();
  for (const ParamInfo& p : P.params()) {
    float* w = P.data() + p.offset;
    bool ln_w = p.shape.size() == 1 && p.name.find("ln") != std::string::npos && p.name.find("weight") != std::string::npos;
    for (int64_t i = 0; i < p.numel; ++i) w[i] = static_cast<float>((ln_w ? 1.0 : 0.0) + 0.3 * rng.normal());
  }
}

std::vector<int32_t> random_tokens(int64_t n, int64_t V, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng.below(V));
  return t;
}
}  // namespace

TEST(GPT, GradientsMatchFiniteDifferences) {
  for (int64_t rope_dims : {0, 4}) {  // whole-head and partial RoPE (head dim 8)
    SCOPED_TRACE(rope_dims);
    GPTConfig c = tiny();
    c.rope_dims = rope_dims;
    GPT m(c);
    GPTActivations m_acts, m_decode;
    randomize(m, 1);
    const int64_t B = 2, T = 10, V = 13;
    auto tok = random_tokens(B * T, V, 2), tgt = random_tokens(B * T, V, 3);
    tgt[3] = -1;  // an ignored target
    lm_loss_and_gradients(m, m_acts, tok.data(), tgt.data(), B, T);
    ParamStore& P = m.params();
    std::vector<float> grad(P.grad(), P.grad() + P.size());
    auto loss = [&] {
      int64_t c = 0;
      double s = lm_forward_loss(m, m_acts, tok.data(), tgt.data(), B, T, &c);
      return s / static_cast<double>(c);
    };
    Rng pick(4);
    int checked = 0;
    for (const ParamInfo& p : P.params()) {
      for (int k = 0; k < 3; ++k) {
        int64_t i = p.offset + static_cast<int64_t>(pick.below(p.numel));
        float saved = P.data()[i];
        const float eps = 1e-2f;
        P.data()[i] = saved + eps;
        double lp = loss();
        P.data()[i] = saved - eps;
        double lm = loss();
        P.data()[i] = saved;
        double fd = (lp - lm) / (2.0 * eps);
        EXPECT_NEAR(grad[i], fd, 2e-3 + 3e-2 * std::fabs(fd)) << p.name << " index " << i - p.offset;
        ++checked;
      }
    }
    EXPECT_GT(checked, 50);
  }
}

TEST(GPT, LossOnlyPathAgreesWithTrainingPath) {
  GPT m(tiny());
  GPTActivations m_acts, m_decode;
  randomize(m, 5);
  auto tok = random_tokens(24, 13, 6), tgt = random_tokens(24, 13, 7);
  float l1 = lm_loss_and_gradients(m, m_acts, tok.data(), tgt.data(), 2, 12);
  int64_t c = 0;
  double l2 = lm_forward_loss(m, m_acts, tok.data(), tgt.data(), 2, 12, &c) / c;
  EXPECT_EQ(c, 24);
  EXPECT_NEAR(l1, l2, 1e-5);
}

TEST(GPT, MicroBatchGradientsAddUpToTheWholeBatch) {
  // 4 rows at once vs 2 micro-batches of 2 and 4 of 1, each scaled by
  // 1/(targets of the whole batch): equal up to float rounding. Gradients
  // are added, so the model never zeroes them itself.
  GPT m(tiny());
  randomize(m, 31);
  const int64_t B = 4, T = 12, V = 13;
  auto tok = random_tokens(B * T, V, 32), tgt = random_tokens(B * T, V, 33);
  tgt[5] = -1;
  GPTActivations whole_acts;
  const float whole_loss = lm_loss_and_gradients(m, whole_acts, tok.data(), tgt.data(), B, T);
  const std::vector<float> whole(m.params().grad(), m.params().grad() + m.params().size());
  const int64_t counted = count_targets(tgt.data(), B * T);
  ASSERT_EQ(counted, B * T - 1);
  for (int64_t micro : {2, 1}) {
    SCOPED_TRACE(micro);
    m.params().zero_grad();
    GPTActivations acts;  // sized for one micro-batch
    double sum = 0.0;
    for (int64_t r = 0; r < B; r += micro)
      sum += lm_forward_backward(m, acts, tok.data() + r * T, tgt.data() + r * T, micro, T,
                                 1.0f / static_cast<float>(counted), 0, nullptr);
    EXPECT_LT(acts.bytes(), whole_acts.bytes());
    EXPECT_NEAR(sum / static_cast<double>(counted), whole_loss, 1e-6);
    double max_g = 0.0;
    for (float g : whole) max_g = std::max(max_g, static_cast<double>(std::fabs(g)));
    ASSERT_GT(max_g, 1e-3);
    for (int64_t i = 0; i < m.params().size(); ++i)
      ASSERT_NEAR(m.params().grad()[i], whole[i], 1e-6 + 1e-5 * std::fabs(whole[i])) << "index " << i;
  }
  // Two backward passes without zeroing add up (the accumulate rule).
  m.params().zero_grad();
  lm_forward_backward(m, whole_acts, tok.data(), tgt.data(), B, T, 1.0f / static_cast<float>(counted), 0, nullptr);
  lm_forward_backward(m, whole_acts, tok.data(), tgt.data(), B, T, 1.0f / static_cast<float>(counted), 0, nullptr);
  for (int64_t i = 0; i < m.params().size(); ++i)
    ASSERT_NEAR(m.params().grad()[i], 2.0f * whole[i], 1e-6 + 1e-5 * std::fabs(whole[i])) << "index " << i;
}

// The objective makes the logits a chunk of rows at a time so that the
// (B·T, V) logits never exist at once: any chunk size (1 row, one that does
// not divide B·T, all rows) gives the loss and gradients of the whole-batch
// forward, softmax cross-entropy and backward, with a 16-bit head as well,
// and holds only a chunk of logits.
TEST(GPT, LogitsInChunksGiveTheWholeBatchLossAndGradients) {
  for (bool bf16_head : {false, true}) {
    SCOPED_TRACE(bf16_head ? "bf16, 16-bit head" : "fp32");
    GPTConfig c = tiny();
    if (bf16_head) {
      c.precision = Precision::BF16;
      c.fp32_modules.clear();
    }
    GPT m(c);
    randomize(m, 51);
    const int64_t B = 3, T = 12, V = 13, N = B * T;
    auto tok = random_tokens(N, V, 52), tgt = random_tokens(N, V, 53);
    tgt[7] = -1;
    const float scale = 1.0f / static_cast<float>(count_targets(tgt.data(), N));
    // Reference: every logit at once, dL/dlogits written over them.
    GPTActivations whole;
    m.params().zero_grad();
    m.forward(whole, tok.data(), B, T);
    int64_t counted = 0;
    const double whole_sum =
        ops::softmax_xent_forward_backward(whole.logits(), whole.logits(), tgt.data(), N, V, scale, &counted);
    m.backward(whole, tok.data(), B, T);
    EXPECT_EQ(whole.logit_rows(), N);
    const std::vector<float> ref(m.params().grad(), m.params().grad() + m.params().size());
    double max_g = 0.0;
    for (float g : ref) max_g = std::max(max_g, static_cast<double>(std::fabs(g)));
    ASSERT_GT(max_g, 1e-3);
    for (int64_t chunk : {int64_t{1}, int64_t{5}, N}) {
      SCOPED_TRACE(chunk);
      GPTActivations acts;
      m.params().zero_grad();
      int64_t c2 = 0;
      const double sum = lm_forward_backward(m, acts, tok.data(), tgt.data(), B, T, scale, 0, &c2, 1.0, chunk);
      EXPECT_EQ(c2, counted);
      EXPECT_NEAR(sum, whole_sum, 1e-9 + 1e-6 * std::fabs(whole_sum));
      EXPECT_EQ(acts.logit_rows(), chunk);
      EXPECT_EQ(acts.bytes(), GPTActivations::bytes_for(c, B, T, ActivationMode::Train, chunk));
      for (int64_t i = 0; i < m.params().size(); ++i)
        ASSERT_NEAR(m.params().grad()[i], ref[i], 1e-6 + 1e-5 * std::fabs(ref[i])) << "index " << i;
      GPTActivations infer;
      int64_t c3 = 0;
      const double eval_sum = lm_forward_loss(m, infer, tok.data(), tgt.data(), B, T, &c3, chunk);
      EXPECT_EQ(c3, counted);
      EXPECT_NEAR(eval_sum, whole_sum, 1e-9 + 1e-6 * std::fabs(whole_sum));
    }
  }
  // A chunk holds about 16 MiB of logits: all of a small batch, 1024 rows at
  // V = 4096, never fewer than 64 rows.
  EXPECT_EQ(logit_chunk_rows(13, 36), 36);
  EXPECT_EQ(logit_chunk_rows(4096, 8192), 1024);
  EXPECT_EQ(logit_chunk_rows(1 << 20, 8192), 64);
  GPTConfig big = tiny();
  big.vocab_size = 4096;
  EXPECT_EQ(GPTActivations::bytes_for(big, 32, 12, ActivationMode::Train) -
                GPTActivations::bytes_for(big, 32, 12, ActivationMode::Train, 64),
            (32 * 12 - 64) * 4096 * sizeof(float));
}

TEST(GPT, MicroBatchesGiveTheWholeBatchGradientsWithTheDsaScorerLoss) {
  // The scorer loss is a mean over its rows; with grad_accum micro-batches
  // it must still be the mean over the whole step's rows, not their sum
  // (each micro-batch's mean counted once per micro-batch).
  GPTConfig c = tiny_dsa();
  c.dsa.scorer_loss = 5.0;
  GPT m(c);
  randomize(m, 41);
  const int64_t B = 4, T = 64, V = 13;
  auto tok = random_tokens(B * T, V, 42), tgt = random_tokens(B * T, V, 43);
  GPTActivations acts;
  const float whole_loss = lm_loss_and_gradients(m, acts, tok.data(), tgt.data(), B, T);
  const std::vector<float> whole(m.params().grad(), m.params().grad() + m.params().size());
  // The scorer loss moves the gradients (else this test proves nothing).
  GPTConfig no_scorer = c;
  no_scorer.dsa.scorer_loss = 0.0;
  GPT plain(no_scorer);
  randomize(plain, 41);
  GPTActivations plain_acts;
  lm_loss_and_gradients(plain, plain_acts, tok.data(), tgt.data(), B, T);
  double moved = 0.0;
  for (int64_t i = 0; i < m.params().size(); ++i)
    moved = std::max(moved, static_cast<double>(std::fabs(plain.params().grad()[i] - whole[i])));
  ASSERT_GT(moved, 1e-3);
  for (int64_t micro : {2, 4}) {
    SCOPED_TRACE(micro);
    GPTActivations micro_acts;
    const float loss = lm_loss_and_gradients(m, micro_acts, tok.data(), tgt.data(), B / micro, T, 0, micro);
    EXPECT_NEAR(loss, whole_loss, 1e-6);
    for (int64_t i = 0; i < m.params().size(); ++i)
      ASSERT_NEAR(m.params().grad()[i], whole[i], 1e-6 + 1e-5 * std::fabs(whole[i])) << "index " << i;
  }
}

// DSA's exploration noise is drawn per sequence of the whole step: split
// into micro-batches (train.grad_accum) or over data-parallel ranks, a step
// draws the noise it draws in one piece, so the gradients are the same.
TEST(GPT, ExplorationNoiseDoesNotDependOnHowTheStepIsSplit) {
  GPTConfig c = tiny_dsa();
  c.dsa.explore = 2.0;
  GPT m(c);
  randomize(m, 71);
  const int64_t B = 4, T = 64, V = 13;
  const uint64_t seed = 77;
  auto tok = random_tokens(B * T, V, 72), tgt = random_tokens(B * T, V, 73);
  GPTActivations acts;
  const float whole_loss = lm_loss_and_gradients(m, acts, tok.data(), tgt.data(), B, T, seed);
  const std::vector<float> whole(m.params().grad(), m.params().grad() + m.params().size());
  const auto max_diff = [&](const std::vector<double>& g) {
    double d = 0.0;
    for (size_t i = 0; i < g.size(); ++i) d = std::max(d, std::fabs(g[i] - whole[i]) / (1e-4 + std::fabs(whole[i])));
    return d;
  };
  const auto grads = [&]() { return std::vector<double>(m.params().grad(), m.params().grad() + m.params().size()); };
  // The noise changes the selection (else this test proves nothing).
  lm_loss_and_gradients(m, acts, tok.data(), tgt.data(), B, T, 0);
  ASSERT_GT(max_diff(grads()), 1e-2);
  // 4 micro-batches of 1 sequence.
  GPTActivations micro_acts;
  EXPECT_NEAR(lm_loss_and_gradients(m, micro_acts, tok.data(), tgt.data(), 1, T, seed, B), whole_loss, 1e-6);
  EXPECT_LT(max_diff(grads()), 1e-4);
  // 2 ranks, each with 2 micro-batches of 1 sequence: rank r holds
  // sequences r and 2 + r, numbered r + 2m by SelectionNoise{seed, r} and a
  // step batch of 2.
  const int64_t counted = count_targets(tgt.data(), B * T);
  for (bool numbered : {true, false}) {
    std::vector<double> sum(whole.size(), 0.0);
    for (int64_t r = 0; r < 2; ++r) {
      std::vector<int32_t> my_tok, my_tgt;
      for (int64_t mb = 0; mb < 2; ++mb) {
        my_tok.insert(my_tok.end(), tok.begin() + (mb * 2 + r) * T, tok.begin() + (mb * 2 + r + 1) * T);
        my_tgt.insert(my_tgt.end(), tgt.begin() + (mb * 2 + r) * T, tgt.begin() + (mb * 2 + r + 1) * T);
      }
      GPTActivations rank_acts;
      lm_loss_and_gradients(m, rank_acts, my_tok.data(), my_tgt.data(), 1, T, SelectionNoise{seed, numbered ? r : 0},
                            2, 1.0, counted, 0.5, nullptr, numbered ? 2 : 1);
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += m.params().grad()[i];
    }
    if (numbered)
      EXPECT_LT(max_diff(sum), 1e-4);
    else
      EXPECT_GT(max_diff(sum), 1e-2);  // each rank drawing as if alone: other noise
  }
}

TEST(GPT, RankSharesSumToTheWholeStep) {
  // Data parallel: R processes, each with its slice of every micro-batch,
  // the targets counted over the whole step and the scorer loss's share
  // 1/R. The sum of their gradients and losses is the single-process step.
  GPTConfig c = tiny_dsa();
  c.dsa.scorer_loss = 5.0;
  GPT m(c);
  randomize(m, 51);
  const int64_t B = 4, T = 64, V = 13, micro = 2;  // 2 micro-batches of B rows
  auto tok = random_tokens(micro * B * T, V, 52), tgt = random_tokens(micro * B * T, V, 53);
  for (int64_t i = 0; i < micro * B * T; i += 7) tgt[i] = -1;  // ignored targets count nowhere
  GPTActivations acts;
  const float whole_loss = lm_loss_and_gradients(m, acts, tok.data(), tgt.data(), B, T, 0, micro);
  const std::vector<float> whole(m.params().grad(), m.params().grad() + m.params().size());
  const int64_t counted = count_targets(tgt.data(), micro * B * T);
  for (int64_t R : {2, 4}) {
    SCOPED_TRACE(R);
    const int64_t b = B / R;
    std::vector<double> sum(whole.size(), 0.0);
    double loss = 0.0;
    for (int64_t r = 0; r < R; ++r) {
      std::vector<int32_t> my_tok, my_tgt;  // rank r's rows of each micro-batch
      for (int64_t mb = 0; mb < micro; ++mb) {
        const int64_t first = (mb * B + r * b) * T;
        my_tok.insert(my_tok.end(), tok.begin() + first, tok.begin() + first + b * T);
        my_tgt.insert(my_tgt.end(), tgt.begin() + first, tgt.begin() + first + b * T);
      }
      GPTActivations rank_acts;
      loss += lm_loss_and_gradients(m, rank_acts, my_tok.data(), my_tgt.data(), b, T, 0, micro, 1.0, counted,
                                    1.0 / static_cast<double>(R));
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += m.params().grad()[i];
    }
    EXPECT_NEAR(loss, whole_loss, 1e-5);
    for (size_t i = 0; i < sum.size(); ++i)
      ASSERT_NEAR(sum[i], whole[i], 1e-6 + 1e-5 * std::fabs(whole[i])) << "index " << i;
  }
  // Counting the targets of one slice only would scale it wrongly: the test can fail.
  GPTActivations one;
  lm_loss_and_gradients(m, one, tok.data(), tgt.data(), B / 2, T, 0, 1, 1.0, 0, 0.5);
  double off = 0.0;
  for (size_t i = 0; i < whole.size(); ++i) off = std::max(off, std::fabs(m.params().grad()[i] - whole[i] / 2.0));
  EXPECT_GT(off, 1e-4);
  EXPECT_THROW(lm_loss_and_gradients(m, one, tok.data(), tgt.data(), B, T, 0, 1, 1.0, 0, 0.0), Error);
}

// Data parallel exchanges a part of the gradients as soon as backward
// reports it final: nothing that backward does afterwards may change it.
// Reported once per step (in the last micro-batch), in the model's order,
// from the final LayerNorm down to the embedding (tied with the head).
TEST(GPT, BackwardReportsEachPartOfTheGradientsWhenItIsFinal) {
  GPTConfig c = tiny();
  c.n_layer = 3;
  GPT m(c);
  randomize(m, 61);
  const int64_t B = 2, T = 12, V = 13, micro = 2, n = m.params().size();
  auto tok = random_tokens(micro * B * T, V, 62), tgt = random_tokens(micro * B * T, V, 63);
  const std::vector<int64_t> order = m.gradients_final_order();
  ASSERT_EQ(order.size(), static_cast<size_t>(c.n_layer + 2));
  EXPECT_EQ(order.front(), m.params().info("ln_f.weight").offset);
  EXPECT_EQ(order[1], m.params().info("h.2.ln1.weight").offset);
  EXPECT_EQ(order.back(), 0);
  std::vector<int64_t> reported;
  std::vector<std::vector<float>> seen;  // g[from, n) when reported
  const GradientsFinal final = [&](int64_t from) {
    reported.push_back(from);
    seen.emplace_back(m.params().grad() + from, m.params().grad() + n);
  };
  GPTActivations acts;
  lm_loss_and_gradients(m, acts, tok.data(), tgt.data(), B, T, 0, micro, 1.0, 0, 1.0, &final);
  EXPECT_EQ(reported, order);
  const float* g = m.params().grad();
  for (size_t k = 0; k < reported.size(); ++k) {
    SCOPED_TRACE(k);
    // Final: the values reported equal the step's (bit for bit), and they
    // are not still zero (the report did not come before the work).
    bool nonzero = false;
    for (int64_t i = reported[k]; i < n; ++i) {
      ASSERT_EQ(seen[k][static_cast<size_t>(i - reported[k])], g[i]) << "index " << i;
      nonzero = nonzero || g[i] != 0.0f;
    }
    EXPECT_TRUE(nonzero);
  }
  // What is reported next was not final before: the report is not early.
  for (size_t k = 0; k + 1 < reported.size(); ++k) {
    const int64_t from = reported[k + 1];
    bool changed = false;
    for (int64_t i = from; i < reported[k]; ++i) changed = changed || g[i] != 0.0f;
    EXPECT_TRUE(changed) << k;
  }
}

TEST(GPT, ActivationBytesAreKnownBeforeAllocating) {
  const GPTConfig c = tiny();
  GPT m(c);
  for (ActivationMode mode : {ActivationMode::Train, ActivationMode::Infer}) {
    GPTActivations acts;
    const size_t planned = GPTActivations::bytes_for(c, 3, 10, mode);
    acts.reserve(c, 3, 10, mode);
    EXPECT_EQ(acts.bytes(), planned);
  }
  // Forward-only buffers keep one layer: less than training keeps.
  EXPECT_LT(GPTActivations::bytes_for(c, 3, 10, ActivationMode::Infer),
            GPTActivations::bytes_for(c, 3, 10, ActivationMode::Train) / 2);
  GPTActivations acts;
  EXPECT_THROW(acts.reserve(c, 1, c.context + 1, ActivationMode::Train), Error);
  std::vector<int32_t> tok(10, 1);
  m.forward(acts, tok.data(), 1, 10, ActivationMode::Infer);
  EXPECT_THROW(m.backward(acts, tok.data(), 1, 10), Error);  // no Train-mode activations
}

TEST(GPT, KVCacheDecodeMatchesFullForward) {
  for (int64_t rope_dims : {0, 2}) {
  SCOPED_TRACE(rope_dims);
  GPTConfig c = tiny();
  c.rope_dims = rope_dims;
  GPT m(c);
  GPTActivations m_acts, m_decode;
  randomize(m, 8);
  const int64_t T = 12, V = 13;
  auto tok = random_tokens(T, V, 9);
  std::vector<float> full(lm_logits(m, m_acts, tok.data(), 1, T), lm_logits(m, m_acts, tok.data(), 1, T) + T * V);
  KVCache cache = m.make_cache(T);
  const float* lg = m.forward_cached(cache, m_decode, tok.data(), 5);  // prefill 5
  for (int64_t v = 0; v < V; ++v) EXPECT_NEAR(lg[v], full[4 * V + v], 1e-4);
  for (int64_t t = 5; t < T; ++t) {
    lg = m.forward_cached(cache, m_decode, &tok[t], 1);
    for (int64_t v = 0; v < V; ++v) EXPECT_NEAR(lg[v], full[t * V + v], 1e-4) << "position " << t;
  }
  EXPECT_EQ(cache.len(), T);
  EXPECT_THROW(m.forward_cached(cache, m_decode, tok.data(), 1), Error);
  }
}

TEST(GPT, DsaDecodeWithCacheEqualsRecomputingEachPrefix) {
  // DSA with a real budget (key blocks of 4, query blocks of 2, window 4,
  // one top block, the rest summarised): the cached decode of position t
  // must give the logits of a whole forward over tokens [0, t] — what
  // recomputing the sequence at every generation step would give.
  GPTConfig c = tiny();
  c.context = 40;
  c.attention = "dsa";
  c.dsa.block = 4, c.dsa.window = 4, c.dsa.top_k = 1, c.dsa.keep_short = 0.2,
  c.dsa.keep_long = 0.1, c.dsa.short_len = 4, c.dsa.long_len = 8;
  GPT m(c);
  GPTActivations m_acts, m_decode;
  randomize(m, 12);
  const int64_t T = 40, V = 13;
  auto tok = random_tokens(T, V, 13);
  KVCache cache = m.make_cache(T);
  ASSERT_NE(cache.memo(0), nullptr);  // DSA keeps block means between steps
  const float* lg = m.forward_cached(cache, m_decode, tok.data(), 3);  // prefill 3
  for (int64_t t = 2; t < T; ++t) {
    if (t > 2) lg = m.forward_cached(cache, m_decode, &tok[t], 1);
    const std::vector<float> got(lg, lg + V);
    const float* full = lm_logits(m, m_acts, tok.data(), 1, t + 1) + t * V;
    for (int64_t v = 0; v < V; ++v) ASSERT_NEAR(got[v], full[v], 1e-4) << "position " << t;
  }
  // Rewinding the cache (a new continuation) drops the block means past it.
  cache.set_len(20);
  auto other = random_tokens(T, V, 14);
  for (int64_t t = 20; t < T; ++t) {
    lg = m.forward_cached(cache, m_decode, &other[t], 1);
    std::vector<int32_t> seq(tok.begin(), tok.begin() + 20);
    seq.insert(seq.end(), other.begin() + 20, other.begin() + t + 1);
    const std::vector<float> got(lg, lg + V);
    const float* full = lm_logits(m, m_acts, seq.data(), 1, t + 1) + t * V;
    for (int64_t v = 0; v < V; ++v) ASSERT_NEAR(got[v], full[v], 1e-4) << "rewound, position " << t;
  }
}

TEST(GPT, GreedyGenerationWithCacheEqualsRecomputation) {
  auto tokzr = make_byte_tokenizer();
  GPTConfig big = tiny();
  big.vocab_size = 257;
  GPT g(big);
  GPTActivations g_acts;
  randomize(g, 11);
  std::vector<int32_t> prompt = {72, 105};
  SampleOptions o;
  o.temperature = 0.0f;
  o.max_tokens = 9;  // eot + 2 prompt + 9 = 12 = context: no cache rebuild
  o.stop_at_eot = false;
  std::vector<int32_t> cached = generate(g, *tokzr, prompt, o, nullptr);
  std::vector<int32_t> seq = {tokzr->eot_id(), 72, 105};
  std::vector<int32_t> recomputed;
  for (int i = 0; i < 9; ++i) {
    const float* lg = lm_logits(g, g_acts, seq.data(), 1, static_cast<int64_t>(seq.size()));
    const float* last = lg + (seq.size() - 1) * 257;
    int32_t next = static_cast<int32_t>(std::max_element(last, last + 257) - last);
    recomputed.push_back(next);
    seq.push_back(next);
  }
  EXPECT_EQ(cached, recomputed);
}

TEST(GPT, SamplingRespectsTopKAndSeed) {
  std::vector<float> logits = {0.f, 5.f, 4.f, -2.f, 4.5f};
  SampleOptions o;
  o.temperature = 1.0f;
  o.top_k = 2;
  Rng rng(1);
  std::vector<std::pair<float, int32_t>> scratch;
  for (int i = 0; i < 200; ++i) {
    int32_t t = sample_token(logits.data(), 5, o, rng, scratch);
    EXPECT_TRUE(t == 1 || t == 4) << t;
  }
  o.top_k = 0;
  o.top_p = 0.5f;  // token 1 alone has p ~ 0.5 of the mass: nucleus keeps {1} or {1, 4}
  for (int i = 0; i < 200; ++i) {
    int32_t t = sample_token(logits.data(), 5, o, rng, scratch);
    EXPECT_TRUE(t == 1 || t == 4) << t;
  }
  o.temperature = 0.0f;
  EXPECT_EQ(sample_token(logits.data(), 5, o, rng, scratch), 1);
}

TEST(GPT, TrainingStepIsDeterministic) {
  auto run = [] {
    GPT m(tiny());
    GPTActivations m_acts, m_decode;
    m.init_weights(3);
    auto tok = random_tokens(24, 13, 1), tgt = random_tokens(24, 13, 2);
    lm_loss_and_gradients(m, m_acts, tok.data(), tgt.data(), 2, 12);
    return std::vector<float>(m.params().grad(), m.params().grad() + m.params().size());
  };
  EXPECT_EQ(run(), run());
}

TEST(GPT, SparseAttentionWithFullBudgetEqualsDense) {
  // window covers the whole context: "window" and "dsa" must reproduce dense.
  auto tok = random_tokens(24, 13, 21), tgt = random_tokens(24, 13, 22);
  auto grads = [&](const std::string& attention) {
    GPTConfig c = tiny();
    c.attention = attention;
    c.dsa.block = 4;
    c.dsa.window = 12;
    c.dsa.top_k = 4;
    GPT m(c);
    GPTActivations m_acts, m_decode;
    randomize(m, 23);
    float loss = lm_loss_and_gradients(m, m_acts, tok.data(), tgt.data(), 2, 12);
    std::vector<float> g(m.params().grad(), m.params().grad() + m.params().size());
    g.push_back(loss);
    return g;
  };
  std::vector<float> dense = grads("dense");
  for (const char* impl : {"window", "dsa"}) {
    std::vector<float> sparse = grads(impl);
    ASSERT_EQ(sparse.size(), dense.size());
    for (size_t i = 0; i < dense.size(); ++i)
      ASSERT_NEAR(sparse[i], dense[i], 1e-5 + 1e-4 * std::fabs(dense[i])) << impl << " index " << i;
  }
}

TEST(Generate, OptionErrorsNameTheFlags) {
  auto error_of = [](const SampleOptions& o) {
    try {
      check_sample_options(o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  SampleOptions o;
  EXPECT_EQ(error_of(o), "");
  o.max_tokens = -1;
  EXPECT_EQ(error_of(o), "[generate] --max-tokens must be >= 0, got -1");
  o = SampleOptions{};
  o.temperature = -0.5f;
  EXPECT_NE(error_of(o).find("--temperature"), std::string::npos);
  o = SampleOptions{};
  o.top_k = -2;
  EXPECT_NE(error_of(o).find("--top-k must be >= 0"), std::string::npos);
  o = SampleOptions{};
  o.top_p = 1.5f;
  EXPECT_NE(error_of(o).find("--top-p must be in (0, 1]"), std::string::npos);
}

TEST(Generate, ContextNoticesSayWhenTheWindowCutsOrSlides) {
  EXPECT_TRUE(context_notices(10, 20, 32).empty());  // 10 + 20 - 1 = 29 tokens seen at most
  EXPECT_TRUE(context_notices(10, 23, 32).empty());  // the last token is sampled with the context just full
  auto n = context_notices(10, 24, 32);
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0], "the prompt plus --max-tokens 24 run past the model's context of 32 tokens: from there on each "
                  "new token sees only the newest 16 to 32 tokens (a sliding window)");
  n = context_notices(40, 1, 32);
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0], "the prompt is 40 tokens long (with the end-of-text token in front), longer than the model's "
                  "context of 32: only its last 32 tokens are used");
  EXPECT_EQ(context_notices(40, 5, 32).size(), 2u);
  EXPECT_TRUE(context_notices(40, 0, 32).size() == 1u);
}
