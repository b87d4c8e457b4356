#pragma once
// Scaled dot-product attention: one interface, several implementations
// (dense, sliding window, dynamic sparse attention), two call
// shapes:
//   - whole sequence (training, prefill): forward + backward over (B, T);
//   - one token at a time against a KV cache (decoding): decode.
// Every implementation computes softmax(scale * q·kᵀ + mask) · v with
// scale = 1/sqrt(D) and keeps only the per-row log-sum-exp for backward (no
// T×T matrix is ever saved).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>

#include "core/error.h"
#include "ops/dsa_budget.h"

namespace sparta {

// What seeds a training step's exploration noise (AttnDims::selection_seed
// and first_sequence) as the model passes it to every layer: the step's seed
// (0 = no noise) and the index of the first sequence of the rows at hand
// among the step's sequences. A bare seed converts to the first rows.
struct SelectionNoise {
  SelectionNoise(uint64_t s = 0, int64_t first = 0) : seed(s), first_sequence(first) {}  // NOLINT: implicit
  uint64_t seed;
  int64_t first_sequence;
};

struct AttnDims {
  int64_t B = 0, T = 0, H = 0, D = 0;
  // Elements between consecutive tokens in q, k, v (and dq, dk, dv), e.g.
  // 3*H*D for a fused [q|k|v] buffer of shape (B, T, 3, H, D). Must be >= H*D.
  int64_t ld = 0;
  bool causal = true;  // false = bidirectional (encoder)
  // Non-zero in training steps only: seeds DSA's exploration noise on its
  // block scores (DsaConfig::explore); forward and backward of one step get
  // the same value. 0 = no noise (evaluation, decoding).
  uint64_t selection_seed = 0;
  // The index of this call's first sequence among the training step's
  // sequences (a data-parallel rank's slice, a micro-batch of
  // train.grad_accum): the exploration noise is drawn per (sequence of the
  // step, head, position), so how a step's rows are split between calls
  // does not change it.
  int64_t first_sequence = 0;
  // Backward only: the factor on gradients an implementation forms on its
  // own, outside dout (DSA's scorer loss). The trainer sets it to the fp16
  // loss scale that dout carries (train/loss_scaler.h), so these gradients
  // leave backward at the same scale as the rest and are unscaled with them,
  // divided by the number of micro-batches one optimizer step adds up, so an
  // auxiliary loss is a mean over the step's rows as the main loss is.
  // 1 = neither; must be finite and > 0.
  double aux_grad_scale = 1.0;
  // Mixed precision: forward and backward products (q·kᵀ, p·v and the four
  // products of backward) take BF16 operands (q, k, v, dout, probabilities
  // and score gradients rounded to nearest even) with FP32 accumulation
  // (ops/tile_gemm_bf16.h); softmax statistics, outputs and gradients stay
  // FP32. false = FP32 products. Decode ignores it.
  bool bf16_products = false;
};

// Throws sparta::Error naming `op` when d is not a valid problem
// (B, T >= 0; H, D >= 1; ld >= H*D).
void check_attn_dims(const AttnDims& d, const char* op);

// State an implementation may keep between the decode calls of one
// sequence's KV cache for one layer (DSA: the mean key and value of every
// complete block, so a step costs O(len/block) instead of O(len)). Owned by
// the cache; opaque to everyone else.
class DecodeMemo {
 public:
  virtual ~DecodeMemo() = default;
  // The cache now holds only positions [0, len): forget anything derived
  // from later positions (they will be overwritten).
  virtual void truncate(int64_t len) = 0;
};

// The keys and values of one sequence's positions [0, len) for decoding,
// stored in pages: page i holds positions [i*page_tokens, (i+1)*page_tokens)
// as rows of H*D floats (row stride H*D), k[i] its keys, v[i] its values
// (a paged KV cache). A contiguous (len, H, D) cache is one page.
struct KVPages {
  const float* const* k = nullptr;
  const float* const* v = nullptr;
  int64_t page_tokens = 0;
  int64_t len = 0;

  // Key / value row of position j (ld = H*D floats a row).
  const float* key(int64_t j, int64_t ld) const { return k[j / page_tokens] + (j % page_tokens) * ld; }
  const float* value(int64_t j, int64_t ld) const { return v[j / page_tokens] + (j % page_tokens) * ld; }
  // Calls fn(keys, values, j, n) for each run of positions [j, j + n) of
  // [a, b) that lies in one page, in increasing order; keys and values point
  // at position j's rows (ld = H*D floats a row).
  template <typename Fn>
  void for_each_run(int64_t a, int64_t b, int64_t ld, Fn&& fn) const {
    while (a < b) {
      const int64_t n = std::min(b, (a / page_tokens + 1) * page_tokens) - a;
      fn(key(a, ld), value(a, ld), a, n);
      a += n;
    }
  }
};

// What an implementation keeps from a forward call for the backward call on
// the same inputs (DSA: its selection plan, which backward would otherwise
// recompute). Owned by the caller; opaque to everyone else.
class AttnSaved {
 public:
  virtual ~AttnSaved() = default;
};

class Attention {
 public:
  virtual ~Attention() = default;
  virtual std::string name() const = 0;

  // q, k, v: token (b, t), head h starts at ptr + (b*T + t)*ld + h*D (D floats).
  // out: (B, T, H, D) contiguous, i.e. (B, T, H*D).
  // lse: (B, H, T), log-sum-exp of the scaled scores of each query row.
  // saved: null, or where to keep what backward may reuse (reset to null by
  //        implementations that keep nothing beyond out and lse).
  virtual void forward(float* out, float* lse, const float* q, const float* k, const float* v, const AttnDims& d,
                       std::unique_ptr<AttnSaved>* saved = nullptr) = 0;

  // dq, dk, dv: same strided layout as q, k, v; OVERWRITTEN (every element of
  // the q/k/v head slices is written, nothing else). dout, out: (B, T, H, D);
  // lse: (B, H, T) as produced by forward. saved: null, or what the forward
  // call on these same q, k, v and d stored (results are the same either
  // way; it only saves work).
  virtual void backward(float* dq, float* dk, float* dv, const float* dout, const float* out, const float* lse,
                        const float* q, const float* k, const float* v, const AttnDims& d,
                        const AttnSaved* saved = nullptr) = 0;

  // Decoding: one new query per head for ONE sequence, against cached keys
  // and values of positions [0, kv.len) (kv.len >= 1 includes the new token,
  // already appended), stored in pages (KVPages). q: the new token's query,
  // (H, D) contiguous. No implementation reads earlier queries (DSA scores
  // blocks with the new query alone), so caches keep keys and values only.
  // out: (H, D). memo: null, or this implementation's make_decode_memo()
  // kept with the cache of this sequence and layer (results are the same
  // either way; the memo only saves work). The result does not depend on
  // how the cache is cut into pages: a paged cache decodes bit for bit as
  // the same keys and values in one contiguous page. DSA needs page_tokens
  // to be a multiple of its block (or one page holding everything).
  virtual void decode_paged(float* out, const float* q, const KVPages& kv, int64_t H, int64_t D,
                            DecodeMemo* memo = nullptr) = 0;

  // decode_paged over a contiguous cache: k_cache, v_cache (len, H, D).
  void decode(float* out, const float* q, const float* k_cache, const float* v_cache, int64_t len, int64_t H,
              int64_t D, DecodeMemo* memo = nullptr) {
    const float* k_page[1] = {k_cache};
    const float* v_page[1] = {v_cache};
    decode_paged(out, q, KVPages{k_page, v_page, std::max<int64_t>(len, 1), len}, H, D, memo);
  }

  // A fresh memo for decoding one sequence, or null when the implementation
  // keeps no state between decode calls.
  virtual std::unique_ptr<DecodeMemo> make_decode_memo() const { return nullptr; }
};

// The implementation registered as `name` (ops/attention_registry.h lists
// them: "dense", "window" and "dsa", the last two configured by dsa).
// Unknown name -> sparta::Error
// "[attention] unknown implementation 'x' (available: dense, window, dsa)".
std::unique_ptr<Attention> make_attention(const std::string& name, const DsaConfig& dsa);
std::unique_ptr<Attention> make_attention(const std::string& name);

// Throws sparta::Error naming `op` unless H, D >= 1, kv.len >= 1,
// kv.page_tokens >= 1 and kv has pages.
inline void check_decode_args(const KVPages& kv, int64_t H, int64_t D, const char* op) {
  SPARTA_CHECK(H >= 1 && D >= 1, "[", op, "] decode needs H, D >= 1, got H=", H, " D=", D);
  SPARTA_CHECK(kv.len >= 1, "[", op, "] decode needs at least one cached position, got len=", kv.len);
  SPARTA_CHECK(kv.page_tokens >= 1 && kv.k != nullptr && kv.v != nullptr, "[", op,
               "] decode needs cache pages of >= 1 positions, got page_tokens=", kv.page_tokens);
}

inline void check_attn_dims(const AttnDims& d, const char* op) {
  SPARTA_CHECK(d.B >= 0 && d.T >= 0, "[", op, "] B and T must be >= 0, got B=", d.B, " T=", d.T);
  SPARTA_CHECK(d.H >= 1 && d.D >= 1, "[", op, "] H and D must be >= 1, got H=", d.H, " D=", d.D);
  SPARTA_CHECK(d.ld >= d.H * d.D, "[", op, "] token stride ld=", d.ld, " is smaller than H*D=", d.H * d.D);
  SPARTA_CHECK(std::isfinite(d.aux_grad_scale) && d.aux_grad_scale > 0.0, "[", op,
               "] aux_grad_scale must be finite and > 0, got ", d.aux_grad_scale);
}

}  // namespace sparta
