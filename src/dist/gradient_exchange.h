#pragma once
// Averaging a gradient over the ranks of a process group, in full precision
// or compressed (dist.compress):
//
//   none  all-reduce of the FP32 values, divided by the number of ranks.
//   bf16  the values rounded to BF16 (2 bytes each) in the two-phase scheme
//         below, summed in FP32.
//   q4    the values in the 4-bit codec of dist/q4_codec.h, with error
//         feedback at both phases.
//
// Quantized values cannot be summed hop by hop without re-quantizing at
// every hop, so the compressed modes use the scheme 1-bit Adam and ZeRO++'s
// qgZ converge on. The vector is cut into R equal chunks (R ranks; each a
// whole number of codec blocks, the tail zero-padded), and
//   1. every rank encodes its chunk j (x + its send residual) for rank j:
//      one all-to-all;
//   2. rank j decodes the R chunks it received, sums them in FP32, divides
//      by R, and encodes the result (+ its own receive residual): the
//      average of chunk j, compressed once more;
//   3. one all-gather hands every rank every averaged chunk, decoded into
//      the output.
// Each rank sends (R−1)/R of the encoded vector in each phase: 2·(R−1)/R ·
// bytes per value · n bytes, against 2·(R−1)/R · 4 · n for the ring
// all-reduce of FP32 (which MPI's all-reduce is, for large vectors). At
// q4 with 128-value blocks that is 7.5× less. Every rank ends with the same
// values (they decode the same bytes), so weights stay identical.
#include <cstdint>
#include <string>
#include <vector>

#include "dist/process_group.h"

namespace sparta::dist {

enum class Compression { None, BF16, Q4 };
// "none", "bf16", "q4"; sparta::Error naming the choices otherwise.
Compression parse_compression(const std::string& name);
const char* compression_name(Compression c);

class GradientExchange {
 public:
  // n: values per exchange; q4_block: the codec's block (dist/q4_codec.h);
  // error_feedback: q4 carries what quantization dropped into the next
  // exchange (off only to measure what error feedback buys).
  GradientExchange(ProcessGroup& group, int64_t n, int64_t q4_block = 128, bool error_feedback = true);

  // g (n) ← the average of every rank's g (n), exchanged as `mode`. Returns
  // false, with g and the residuals unchanged, when q4 meets a NaN or an
  // infinity on this rank (the caller skips the step on every rank: all of
  // them get false, since they agree through one all-reduce first).
  bool average(float* g, Compression mode) { return reduce(g, mode, true); }
  // The same with the sum instead of the average (a trainer whose ranks
  // scale their gradients by the whole step's target count).
  bool sum(float* g, Compression mode) { return reduce(g, mode, false); }

  // Bytes this rank sent in the last exchange (what the chosen scheme
  // sends; MPI's own headers aside).
  int64_t last_bytes_sent() const { return last_bytes_; }

  // The error-feedback residuals (send: n values rounded up to R chunks;
  // receive: one chunk): checkpointed so that a resume is bit-exact.
  std::vector<float>& send_residual() { return send_residual_; }
  std::vector<float>& receive_residual() { return receive_residual_; }
  int64_t chunk() const { return chunk_; }
  bool error_feedback() const { return feedback_; }

 private:
  bool reduce(float* g, Compression mode, bool average);
  bool reduce_compressed(float* g, Compression mode, float factor);

  ProcessGroup& group_;
  int64_t n_, block_, chunk_;
  bool feedback_;  // chunk_: values per rank's chunk (whole blocks)
  std::vector<float> padded_, reduced_, send_residual_, receive_residual_;
  std::vector<uint8_t> send_, recv_, mine_, gathered_;
  int64_t last_bytes_ = 0;
};

}  // namespace sparta::dist
