#include "dist/gradient_exchange.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/convert.h"
#include "core/error.h"
#include "dist/q4_codec.h"

namespace sparta::dist {

Compression parse_compression(const std::string& name) {
  if (name == "none") return Compression::None;
  if (name == "bf16") return Compression::BF16;
  if (name == "q4") return Compression::Q4;
  throw Error("[dist] unknown compress \"" + name + "\": choose none, bf16 or q4");
}

const char* compression_name(Compression c) {
  switch (c) {
    case Compression::None: return "none";
    case Compression::BF16: return "bf16";
    case Compression::Q4: return "q4";
  }
  return "none";
}

GradientExchange::GradientExchange(ProcessGroup& group, int64_t n, int64_t q4_block, bool error_feedback)
    : group_(group), n_(n), block_(q4_layout(0, q4_block).block), feedback_(error_feedback) {
  SPARTA_CHECK(n >= 0, "[dist] negative gradient size ", n);
  const int64_t R = group.size();
  const int64_t per_rank = (n + R - 1) / R;
  chunk_ = (per_rank + block_ - 1) / block_ * block_;
  padded_.assign(static_cast<size_t>(R * chunk_), 0.0f);
  send_residual_.assign(padded_.size(), 0.0f);
  receive_residual_.assign(static_cast<size_t>(chunk_), 0.0f);
  reduced_.assign(static_cast<size_t>(chunk_), 0.0f);
}

bool GradientExchange::reduce(float* g, Compression mode, bool average) {
  last_bytes_ = 0;
  const int64_t R = group_.size();
  if (R == 1) return true;  // the sum or average of one gradient is itself
  const float factor = average ? 1.0f / static_cast<float>(R) : 1.0f;
  if (mode != Compression::None) return reduce_compressed(g, mode, factor);
  group_.all_reduce_sum(g, n_);
  if (average)
    for (int64_t i = 0; i < n_; ++i) g[i] *= factor;
  // A ring all-reduce (MPI's choice for large vectors) sends 2·(R−1)/R of the vector.
  last_bytes_ = 2 * (R - 1) * n_ * static_cast<int64_t>(sizeof(float)) / R;
  return true;
}

bool GradientExchange::reduce_compressed(float* g, Compression mode, float factor) {
  const int64_t R = group_.size(), me = group_.rank();
  const bool q4 = mode == Compression::Q4;
  if (q4) {
    // Every rank must take the same branch before the all-to-all: one rank
    // refusing a non-finite gradient while the others wait would hang. (The
    // padding past n is zero, in the gradient and in its residual.)
    int64_t bad = q4_all_finite(g, feedback_ ? send_residual_.data() : nullptr, n_) ? 0 : 1;
    group_.all_reduce_sum(&bad, 1);
    if (bad > 0) return false;
  }
  // The chunks are cut from a padded copy; only its tail past n stays zero.
  std::copy(g, g + n_, padded_.begin());
  const Q4Layout layout = q4_layout(chunk_, block_);
  const int64_t eb = q4 ? layout.bytes() : chunk_ * 2;  // encoded bytes of one chunk
  send_.resize(static_cast<size_t>(R * eb));
  recv_.resize(send_.size());
  mine_.resize(static_cast<size_t>(eb));
  gathered_.resize(send_.size());
  const auto encode = [&](uint8_t* out, const float* x, float* residual) {
    if (!q4) {
      round_to_16bit(DType::BF16, reinterpret_cast<uint16_t*>(out), x, chunk_);
      return true;
    }
    return q4_encode(out, x, residual, layout);
  };
  const auto decode = [&](float* y, const uint8_t* in, bool accumulate) {
    if (q4) {
      q4_decode(y, in, layout, accumulate);
      return;
    }
    for (int64_t i = 0; i < chunk_; ++i) {
      uint16_t bits;
      std::memcpy(&bits, in + 2 * i, sizeof bits);
      const float v = bf16_bits_to_f32(bits);
      y[i] = accumulate ? y[i] + v : v;
    }
  };
  // 1. Chunk j of every rank goes to rank j.
  for (int64_t j = 0; j < R; ++j)
    encode(send_.data() + j * eb, padded_.data() + j * chunk_, feedback_ ? send_residual_.data() + j * chunk_ : nullptr);
  group_.all_to_all(recv_.data(), send_.data(), eb);
  // 2. This rank's chunk: summed in rank order (the same on every run),
  //    averaged if asked, encoded once more.
  decode(reduced_.data(), recv_.data(), false);
  for (int64_t i = 1; i < R; ++i) decode(reduced_.data(), recv_.data() + i * eb, true);
  if (factor != 1.0f)
    for (float& v : reduced_) v *= factor;
  SPARTA_CHECK(encode(mine_.data(), reduced_.data(), feedback_ ? receive_residual_.data() : nullptr), "[dist] rank ", me,
               ": the summed gradient of its chunk overflowed to infinity");
  // 3. Every rank decodes every averaged chunk: identical results everywhere.
  group_.all_gather(gathered_.data(), mine_.data(), eb);
  for (int64_t j = 0; j < R; ++j) decode(padded_.data() + j * chunk_, gathered_.data() + j * eb, false);
  std::copy(padded_.begin(), padded_.begin() + n_, g);
  last_bytes_ = 2 * (R - 1) * eb;
  return true;
}

}  // namespace sparta::dist
