#pragma once
// Rotary position embedding, GPT-NeoX "rotate half" layout. Of each head of
// D floats the first R ("rotary dims", even, 2 <= R <= D; R = D by default)
// are rotated and the other D - R pass through unchanged (partial RoPE, as
// GPT-NeoX's rotary_pct and DeepSeek's position-free q/k dims: content
// matching in the unrotated dims works at any distance). For i in [0, R/2):
// theta_i = base^(-2i/R), angle = pos * theta_i,
//   out[i]       = x[i] cos(angle) - x[i + R/2] sin(angle)
//   out[i + R/2] = x[i + R/2] cos(angle) + x[i] sin(angle)
// Angles are computed in double and stored as float cos/sin tables, cached
// per (D, base) and grown to cover the largest position asked for (T + pos0);
// every entry depends only on (pos, i, D, base), so a longer table gives
// identical values. The cache is thread-safe.
#include <cstdint>

namespace sparta::ops {

// In place on B*T tokens: token (b, t) holds H heads of D floats at
// x + (b*T + t)*ld + h*D (ld >= H*D; the floats after H*D are not touched),
// at position pos0 + t. rotary: R, 0 = D (every dim rotated).
void rope_forward(float* x, int64_t B, int64_t T, int64_t H, int64_t D, int64_t ld, int64_t pos0, float base,
                  int64_t rotary = 0);

// Gradient of rope_forward, in place (rotation by -angle, the transpose).
void rope_backward(float* dx, int64_t B, int64_t T, int64_t H, int64_t D, int64_t ld, int64_t pos0,
                   float base, int64_t rotary = 0);

}  // namespace sparta::ops
