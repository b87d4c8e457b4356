#include "eval/evaluate.h"

#include <algorithm>

#include "core/error.h"
#include "core/interrupt.h"
#include "data/token_dataset.h"
#include "nn/lm_objective.h"
#include "ops/attention_dsa.h"
#include "ops/softmax_xent.h"

namespace sparta {

namespace {

void check_shard(const EvalShard& shard) {
  SPARTA_CHECK(shard.count >= 1 && shard.index >= 0 && shard.index < shard.count, "[eval] shard ", shard.index,
               " of ", shard.count, " does not exist");
  SPARTA_CHECK(shard.count == 1 || shard.sum_over_shards, "[eval] a sharded evaluation needs sum_over_shards");
}

// Sums the shards' values (in place) and says whether any was cut short.
bool combine(const EvalShard& shard, std::vector<double>& values) {
  values.push_back(interrupt_requested() ? 1.0 : 0.0);
  if (shard.count > 1) shard.sum_over_shards(values.data(), static_cast<int64_t>(values.size()));
  const bool partial = values.back() > 0.0;
  values.pop_back();
  return partial;
}

}  // namespace

EvalResult evaluate_tokens(GPT& model, GPTActivations& acts, const std::vector<int32_t>& tokens, int64_t batch,
                           int64_t max_batches, const EvalShard& shard) {
  check_shard(shard);
  // Windows are no longer than the data: padding a short stream to the full
  // context would cost a whole-context forward pass for a handful of targets.
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t T = std::clamp<int64_t>(n - 1, 1, model.config().context);
  const int64_t windows = eval_windows(static_cast<int64_t>(tokens.size()), T);
  int64_t batches = (windows + batch - 1) / batch;
  if (max_batches > 0) batches = std::min(batches, max_batches);
  std::vector<int32_t> in(batch * T), tg(batch * T);
  double sum = 0.0;
  int64_t count = 0;
  for (int64_t b = shard.index; b < batches && !interrupt_requested(); b += shard.count) {  // Ctrl-C: partial
    int64_t rows = std::min(batch, windows - b * batch);
    for (int64_t r = 0; r < rows; ++r) eval_window(tokens, T, b * batch + r, in.data() + r * T, tg.data() + r * T);
    int64_t c = 0;
    sum += lm_forward_loss(model, acts, in.data(), tg.data(), rows, T, &c);
    count += c;
  }
  // Integer counts stay exact in a double up to 2^53.
  std::vector<double> totals = {sum, static_cast<double>(count)};
  EvalResult r;
  r.partial = combine(shard, totals);
  r.tokens = static_cast<int64_t>(totals[1]);
  r.loss = r.tokens ? totals[0] / totals[1] : 0.0;
  return r;
}

uint64_t task_validation_seed(uint64_t train_seed) { return train_seed ^ 0x9e3779b97f4a7c15ULL; }

namespace {

// The key blocks each query block attends, as the model's attention chose
// them for the q, k of one layer (window or dsa).
ops::BlockSelection attended_blocks(const GPTConfig& m, const float* qkv, int64_t B, int64_t T) {
  const int64_t d = m.d_model, H = m.n_head;
  const AttnDims dims{B, T, H, d / H, 3 * d, true};
  if (m.attention == "window") return local_window_selection(dims, m.dsa.block, dsa_window_blocks(m.dsa));
  return dsa_select(qkv, qkv + d, dims, m.dsa);
}

// Adds, per layer, the (answer, head) pairs whose source block is attended
// (hits) and the answers attended by at least one head (any).
void count_source_hits(const GPT& model, const GPTActivations& acts, const std::vector<TaskExample>& ex, int64_t rows,
                       int64_t T, std::vector<int64_t>& hits, std::vector<int64_t>& any) {
  const GPTConfig& m = model.config();
  const int64_t H = m.n_head;
  for (int64_t l = 0; l < m.n_layer; ++l) {
    const ops::BlockSelection sel = attended_blocks(m, acts.layer_qkv(l).data(), rows, T);
    const int64_t qblock = ops::query_block(sel);
    for (int64_t i = 0; i < rows; ++i) {
      const TaskExample& e = ex[static_cast<size_t>(i)];
      for (size_t a = 0; a < e.answer_positions.size(); ++a) {
        const int64_t qb = e.answer_positions[a] / qblock;
        const auto kb = static_cast<int32_t>(e.source_positions[a] / sel.block);
        bool seen = false;
        for (int64_t h = 0; h < H; ++h) {
          const int64_t row = (i * H + h) * sel.nqb + qb;
          const auto first = sel.keys.begin() + sel.offsets[row], last = sel.keys.begin() + sel.offsets[row + 1];
          const bool hit = std::binary_search(first, last, kb);  // lists are sorted
          hits[l] += hit;
          seen = seen || hit;
        }
        any[l] += seen;
      }
    }
  }
}

}  // namespace

TaskEvalResult evaluate_task(GPT& model, GPTActivations& acts, const TaskConfig& task, const Tokenizer& tok,
                             uint64_t seed, int64_t n, int64_t batch, const EvalShard& shard) {
  SPARTA_CHECK(n >= 1 && batch >= 1, "[eval] need at least one example and batch >= 1");
  check_shard(shard);
  check_task_config(task, tok);
  const int64_t T = task.length, V = model.config().vocab_size;
  std::vector<int32_t> in(batch * T), tg(batch * T);
  std::vector<TaskExample> ex(batch);
  TaskEvalResult r;
  double sum = 0.0;
  int64_t correct = 0;
  const bool sparse = model.config().attention != "dense";
  std::vector<int64_t> hits(static_cast<size_t>(model.config().n_layer)), any(hits.size());
  for (int64_t first = shard.index * batch; first < n && !interrupt_requested();
       first += shard.count * batch) {  // Ctrl-C: partial result
    const int64_t rows = std::min(batch, n - first);
    for (int64_t i = 0; i < rows; ++i) {
      ex[i] = make_task_example(task, tok, seed, first + i);
      std::copy(ex[i].inputs.begin(), ex[i].inputs.end(), in.begin() + i * T);
      std::copy(ex[i].targets.begin(), ex[i].targets.end(), tg.begin() + i * T);
    }
    // The source-recall diagnostic reads every layer's q|k: Train-mode
    // buffers. The logits come a few whole examples at a time, as the
    // training loss takes them (the trainer's activations serve both).
    const int64_t per_chunk = std::max<int64_t>(1, logit_chunk_rows(V, rows * T) / T);
    model.forward_features(acts, in.data(), rows, T, sparse ? ActivationMode::Train : ActivationMode::Infer, 0,
                           per_chunk * T);
    for (int64_t e0 = 0; e0 < rows; e0 += per_chunk) {
      const int64_t examples = std::min(per_chunk, rows - e0);
      const float* logits = model.head_logits(acts, e0 * T, examples * T);
      int64_t c = 0;
      sum += ops::softmax_xent_forward(nullptr, logits, tg.data() + e0 * T, examples * T, V, &c);
      r.tokens += c;
      for (int64_t i = 0; i < examples; ++i) correct += task_example_correct(ex[e0 + i], logits + i * T * V, V);
    }
    if (sparse) count_source_hits(model, acts, ex, rows, T, hits, any);
  }
  // Every process's sums: loss, tokens, correct examples, then hits and
  // any per layer (counts exact in a double up to 2^53).
  const int64_t L = model.config().n_layer;
  std::vector<double> totals = {sum, static_cast<double>(r.tokens), static_cast<double>(correct)};
  for (int64_t l = 0; l < L; ++l) totals.push_back(static_cast<double>(hits[l]));
  for (int64_t l = 0; l < L; ++l) totals.push_back(static_cast<double>(any[l]));
  r.partial = combine(shard, totals);
  const double tokens = totals[1];
  r.tokens = static_cast<int64_t>(tokens);
  if (sparse && r.tokens > 0) {
    for (int64_t l = 0; l < L; ++l) {
      r.source_recall.push_back(totals[3 + l] / (tokens * static_cast<double>(model.config().n_head)));
      r.source_recall_any.push_back(totals[3 + L + l] / tokens);
    }
  }
  r.examples = n;
  r.loss = r.tokens ? totals[0] / tokens : 0.0;
  r.accuracy = totals[2] / static_cast<double>(n);
  return r;
}

}  // namespace sparta
