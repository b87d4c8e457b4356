#pragma once
// 4-bit gradient compression with error feedback, the codec the q4 gradient
// exchange sends (dist.compress = "q4").
//
// Values go in blocks of `block` (the last one may be shorter). Each block
// keeps one FP32 scale s = max|x| / 7 (rounded up to 21 significant bits, so
// that q · s is exact) and each value one 4-bit signed
// integer q = round(x / s) in [-7, 7] (two's complement nibbles, two per
// byte, the first value of a pair in the low nibble), so x ≈ q · s with an
// error of at most s / 2. Bytes per value: 1/2 + 4 / block (0.5625 at block
// 64, 0.53125 at 128): 7.1× and 7.5× fewer than FP32.
//
// Error feedback: what rounding drops is not lost but carried into the next
// step. With a residual e (zero at the start), each step sends
// Q(g + e) and keeps e ← (g + e) − D(Q(g + e)), so the sum of what was sent
// over T steps equals the sum of the true gradients minus e_T: the error
// stays bounded by half a scale instead of growing with T (a small gradient
// component under half a scale, which plain rounding drops every step, is
// sent once its residual has grown large enough).
#include <cstddef>
#include <cstdint>

namespace sparta::dist {

struct Q4Layout {
  int64_t n = 0;      // values
  int64_t block = 0;  // values per scale
  int64_t blocks() const { return (n + block - 1) / block; }
  int64_t code_bytes() const { return (n + 1) / 2; }
  // Bytes of the encoded form: the scales (FP32) then the codes.
  int64_t bytes() const { return blocks() * 4 + code_bytes(); }
};

// Checks n >= 0 and block: an even number in [2, 65536] (sparta::Error).
Q4Layout q4_layout(int64_t n, int64_t block);

// Whether every x[i] (+ residual[i], when residual is not null) is finite:
// what q4_encode checks before writing anything.
bool q4_all_finite(const float* x, const float* residual, int64_t n);

// Encodes x (n) into out (layout.bytes()). With `residual` (n, may be null):
// encodes x + residual and leaves in residual what the encoding dropped
// (error feedback, see above). Returns false, writing nothing (residual
// untouched), when x or x + residual holds a NaN or an infinity: such a
// gradient is not sent (the step is skipped) and must not poison the
// residual.
bool q4_encode(uint8_t* out, const float* x, float* residual, const Q4Layout& layout);

// y (n) = the values out encodes; with accumulate, y += them.
void q4_decode(float* y, const uint8_t* in, const Q4Layout& layout, bool accumulate = false);

}  // namespace sparta::dist
