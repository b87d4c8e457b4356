#include "nn/lm_objective.h"

#include <algorithm>

#include "core/error.h"
#include "ops/softmax_xent.h"

namespace sparta {

int64_t count_targets(const int32_t* targets, int64_t n) {
  int64_t counted = 0;
  for (int64_t i = 0; i < n; ++i) counted += targets[i] >= 0;
  return counted;
}

double lm_forward_backward(GPT& model, GPTActivations& acts, const int32_t* tokens, const int32_t* targets,
                           int64_t B, int64_t T, float grad_scale, SelectionNoise selection_seed, int64_t* count,
                           double aux_grad_scale, int64_t chunk_rows, const GradientsFinal* final) {
  const int64_t N = B * T, V = model.config().vocab_size;
  const int64_t chunk = chunk_rows > 0 ? std::min(chunk_rows, N) : logit_chunk_rows(V, N);
  model.forward_features(acts, tokens, B, T, ActivationMode::Train, selection_seed, chunk);
  int64_t counted = 0;
  double sum = 0.0;
  for (int64_t row0 = 0; row0 < N; row0 += chunk) {
    const int64_t rows = std::min(chunk, N - row0);
    float* logits = model.head_logits(acts, row0, rows);
    int64_t c = 0;
    // dL/dlogits overwrites the logits in place: they are not needed after.
    sum += ops::softmax_xent_forward_backward(logits, logits, targets + row0, rows, V, grad_scale, &c);
    counted += c;
    model.head_backward(acts, row0, rows);
  }
  model.backward_features(acts, tokens, B, T, selection_seed, aux_grad_scale, final);
  if (count) *count = counted;
  return sum;
}

float lm_loss_and_gradients(GPT& model, GPTActivations& acts, const int32_t* tokens, const int32_t* targets,
                            int64_t B, int64_t T, SelectionNoise selection_seed, int64_t micro_batches, double loss_scale,
                            int64_t step_targets, double aux_share, const GradientsFinal* final,
                            int64_t step_batch) {
  const int64_t rows = B * T;
  const int64_t counted = step_targets > 0 ? step_targets : count_targets(targets, micro_batches * rows);
  SPARTA_CHECK(counted > 0, "[gpt] the batch has no target tokens (all targets are ignored)");
  SPARTA_CHECK(aux_share > 0.0 && aux_share <= 1.0, "[gpt] aux_share must be in (0, 1], got ", aux_share);
  model.params().zero_grad();
  const float scale = static_cast<float>(loss_scale / static_cast<double>(counted));
  double sum = 0.0;
  for (int64_t m = 0; m < micro_batches; ++m)
    sum += lm_forward_backward(model, acts, tokens + m * rows, targets + m * rows, B, T, scale,
                               SelectionNoise{selection_seed.seed,
                                              selection_seed.first_sequence + m * (step_batch > 0 ? step_batch : B)},
                               nullptr, loss_scale * aux_share / static_cast<double>(micro_batches), 0,
                               m + 1 == micro_batches ? final : nullptr);
  return static_cast<float>(sum / static_cast<double>(counted));
}

double lm_forward_loss(GPT& model, GPTActivations& acts, const int32_t* tokens, const int32_t* targets, int64_t B,
                       int64_t T, int64_t* count, int64_t chunk_rows) {
  const int64_t N = B * T, V = model.config().vocab_size;
  const int64_t chunk = chunk_rows > 0 ? std::min(chunk_rows, N) : logit_chunk_rows(V, N);
  model.forward_features(acts, tokens, B, T, ActivationMode::Infer, 0, chunk);
  int64_t counted = 0;
  double sum = 0.0;
  for (int64_t row0 = 0; row0 < N; row0 += chunk) {
    const int64_t rows = std::min(chunk, N - row0);
    int64_t c = 0;
    sum += ops::softmax_xent_forward(nullptr, model.head_logits(acts, row0, rows), targets + row0, rows, V, &c);
    counted += c;
  }
  if (count) *count = counted;
  return sum;
}

const float* lm_logits(GPT& model, GPTActivations& acts, const int32_t* tokens, int64_t B, int64_t T) {
  model.forward(acts, tokens, B, T, ActivationMode::Infer);
  return acts.logits();
}

}  // namespace sparta
