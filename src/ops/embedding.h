#pragma once
// Token embedding lookup.
#include <cstdint>

namespace sparta::ops {

// x: (N, C) = wte[tokens] (overwritten); tokens: (N,) in [0, V); wte: (V, C).
// Throws sparta::Error naming the first out-of-range token and its position.
void embedding_forward(float* x, const int32_t* tokens, const float* wte, int64_t N, int64_t V, int64_t C);

// dwte[tokens[n]] += dx[n] for every n; dwte: (V, C); dx: (N, C).
// Each thread owns a column range of dwte and walks the tokens in order, so
// repeated tokens are summed race-free in the same order for any thread count.
// Validates the tokens like the forward (before touching dwte).
void embedding_backward(float* dwte, const float* dx, const int32_t* tokens, int64_t N, int64_t V, int64_t C);

}  // namespace sparta::ops
