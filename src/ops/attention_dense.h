#pragma once
// Dense (full causal or bidirectional) attention, flash-style on CPU:
// scores are produced a (64 queries × 512 keys) tile at a time with sgemm,
// softmaxed online and consumed immediately, so memory beyond inputs and
// outputs is O(T) (per-thread tiles, a (B, H, T) row statistic and, for
// inputs with few heads, a few dQ partial sums). The only saved statistic
// is lse.
//
// With AttnDims::bf16_products, forward and backward run the block-sparse
// kernel (block_sparse_attention.h) with every permitted 64-token block
// selected, which computes the same attention with BF16 products; decode is
// FP32 either way.
//
// Determinism: forward, backward and decode give bit-identical results for
// any OpenMP thread count on a given machine (work is split by shape only,
// and every sum is taken in a fixed order). Results can differ in the last
// bits between CPUs with different vector units (AVX-512 vs AVX2 kernels).
//
// Threading: forward splits over (batch, head, 64-query block); backward
// over (batch, head, key range), with at least 16 key ranges in all so a
// single long sequence still uses every core; decode over heads. Instances
// hold no state: concurrent calls on one instance are safe.
#include "ops/attention.h"

namespace sparta {

class DenseAttention final : public Attention {
 public:
  std::string name() const override { return "dense"; }
  void forward(float* out, float* lse, const float* q, const float* k, const float* v, const AttnDims& d,
               std::unique_ptr<AttnSaved>* saved = nullptr) override;
  void backward(float* dq, float* dk, float* dv, const float* dout, const float* out, const float* lse,
                const float* q, const float* k, const float* v, const AttnDims& d,
                const AttnSaved* saved = nullptr) override;
  // Allocates nothing: a fixed stack tile of scores per head.
  void decode_paged(float* out, const float* q, const KVPages& kv, int64_t H, int64_t D,
                    DecodeMemo* memo = nullptr) override;
};

}  // namespace sparta
