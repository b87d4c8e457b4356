#pragma once
// Memory a training run will need, known from its config before anything
// is allocated, so that a config far too large for the machine (a typo such
// as n_layer = 1000000 within the per-key limits' reach, a huge d_model or
// batch) fails at once with the keys to change instead of swapping or being
// killed half-way through allocation.
#include <cstdint>

#include "run/config.h"

namespace sparta {

struct TrainMemoryEstimate {
  // Weights, gradients and the two AdamW moments: 16 bytes per parameter.
  double param_bytes = 0;
  // Activations of one micro-batch (batch_size * context rows) in Train
  // mode: exactly GPTActivations::bytes_for.
  double activation_bytes = 0;
  double total() const { return param_bytes + activation_bytes; }
};

// A lower bound (attention's own working set comes on top).
TrainMemoryEstimate estimate_train_memory(const Config& cfg);

// Throws sparta::Error when the estimate exceeds available_bytes, naming the
// keys that set each part and their values. available_bytes < 0 (unknown)
// skips the check. Data parallel: `ranks` processes each hold every
// parameter and the activations of batch_size / ranks rows, and
// `local_ranks` of them share this machine's memory.
void check_train_memory(const Config& cfg, int64_t available_bytes, int64_t ranks = 1, int64_t local_ranks = 1);

}  // namespace sparta
