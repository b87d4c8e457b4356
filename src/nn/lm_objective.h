#pragma once
// The next-token objective of a language model, outside the model: the
// model produces logits, this turns them into a loss and writes dL/dlogits
// back for the model's backward. Gradients are added, never zeroed here, so
// several micro-batches can share one optimizer step (train.grad_accum):
// each scales its gradient by 1 / (targets counted over the whole step), so N
// micro-batches of B rows add up to one batch of N·B rows.
#include <cstdint>

#include "nn/gpt.h"

namespace sparta {

// Targets that count (>= 0) among n.
int64_t count_targets(const int32_t* targets, int64_t n);

// Forward, cross-entropy and backward of one micro-batch (B, T) in Train
// mode: params().grad() += grad_scale · d(sum of token losses)/dθ. Returns
// the sum of the token losses; *count = targets counted (may be null).
// aux_grad_scale: the factor on gradients of auxiliary losses the model
// adds in its backward (DSA's scorer loss, a mean over this micro-batch's
// rows): the fp16 loss scale included in grad_scale, divided by the number
// of micro-batches whose gradients one step adds up. The logits are made,
// turned into dL/dlogits and run back through the head chunk_rows rows at a
// time (0 = logit_chunk_rows, nn/activations.h), so the (B·T, V) logits
// never exist at once.
double lm_forward_backward(GPT& model, GPTActivations& acts, const int32_t* tokens, const int32_t* targets,
                           int64_t B, int64_t T, float grad_scale, SelectionNoise selection_seed, int64_t* count,
                           double aux_grad_scale = 1.0, int64_t chunk_rows = 0,
                           const GradientsFinal* final = nullptr);

// One optimizer step's gradients from `micro_batches` micro-batches of B
// rows (tokens/targets hold micro_batches·B rows): zeroes the gradients once,
// then each micro-batch adds its share scaled by 1 / (targets counted over
// the whole step), times loss_scale (fp16 loss scaling: the gradients come
// out multiplied by it, the DSA scorer loss's included; train/loss_scaler.h
// divides them again). The DSA scorer loss is a mean over the whole step's
// rows, as if the micro-batches were one batch. Returns the mean loss over the step (unscaled).
// sparta::Error if no target counts.
//
// Data parallel (R processes, each with its share of the step's rows):
// step_targets = the targets counted over every process's rows (0 = count
// these rows) and aux_share = 1/R. Each process then returns its part of the
// step's mean loss, and the SUM of every process's gradients (and returned
// losses) is what one process with all the rows would have computed.
//
// selection_seed: the step's exploration noise; micro-batch m's sequences
// are numbered from selection_seed.first_sequence + m · step_batch
// (step_batch: sequences per micro-batch over all processes; 0 = B), so the
// noise does not depend on how the step is split.
//
// `final` (optional) hears, during the last micro-batch's backward, as each
// part of the step's gradients becomes final (GPT::backward_features).
float lm_loss_and_gradients(GPT& model, GPTActivations& acts, const int32_t* tokens, const int32_t* targets,
                            int64_t B, int64_t T, SelectionNoise selection_seed = {}, int64_t micro_batches = 1,
                            double loss_scale = 1.0, int64_t step_targets = 0, double aux_share = 1.0,
                            const GradientsFinal* final = nullptr, int64_t step_batch = 0);

// Evaluation (Infer mode unless acts already hold Train-mode buffers that
// fit): the SUM of token losses; *count = targets counted. Logits in chunks
// of chunk_rows rows, as lm_forward_backward.
double lm_forward_loss(GPT& model, GPTActivations& acts, const int32_t* tokens, const int32_t* targets, int64_t B,
                       int64_t T, int64_t* count, int64_t chunk_rows = 0);

// Logits of every position, (B, T, V), in acts (Infer mode unless Train-mode
// buffers fit); valid until acts is used again.
const float* lm_logits(GPT& model, GPTActivations& acts, const int32_t* tokens, int64_t B, int64_t T);

}  // namespace sparta
