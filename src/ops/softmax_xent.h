#pragma once
// Softmax cross-entropy over the vocabulary, fused with its gradient, and a
// single-row softmax for sampling.
#include <cstdint>

namespace sparta::ops {

// logits, dlogits: (N, V); targets: (N,), each in [0, V) or -1 = ignored row.
// For every counted row: loss = -log softmax(logits)[target] (max-subtracted,
// exp sums in double) and dlogits = (softmax - onehot(target)) * grad_scale;
// ignored rows get dlogits = 0. dlogits may alias logits (in place).
// Returns the sum of the losses of the counted rows (summed in row order, so
// independent of the thread count); *count = number of counted rows.
// Throws sparta::Error for a target outside [0, V) other than -1.
double softmax_xent_forward_backward(float* dlogits, const float* logits, const int32_t* targets, int64_t N,
                                     int64_t V, float grad_scale, int64_t* count);

// Loss only. row_losses: (N,) or nullptr; ignored rows get 0.
double softmax_xent_forward(float* row_losses, const float* logits, const int32_t* targets, int64_t N,
                            int64_t V, int64_t* count);

// probs: (V,) = softmax(logits / temperature); logits: (V,); temperature > 0.
void softmax_row(float* probs, const float* logits, int64_t V, float temperature);

}  // namespace sparta::ops
