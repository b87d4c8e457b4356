// WindowAttention (attention_dsa.h): local attention as a block selection
// on the block-sparse kernel, and local_window_selection, the window that
// DsaAttention also runs on. Decode reuses DSA's decode_head over the one
// range of keys the window covers.
#include <algorithm>
#include <vector>

#include "core/error.h"
#include "ops/attention_dsa_internal.h"

namespace sparta {

using namespace dsa_internal;
using ops::BlockSelection;

BlockSelection local_window_selection(const AttnDims& d, int64_t block, int64_t window_blocks) {
  if (d.causal) return ops::window_selection(d, block, window_blocks);
  SPARTA_CHECK(block >= 1, "[attention.window] block size must be >= 1, got ", block);
  SPARTA_CHECK(window_blocks >= 1, "[attention.window] window_blocks must be >= 1, got ", window_blocks);
  BlockSelection sel;
  sel.block = block;
  sel.nqb = (d.T + block - 1) / block;
  sel.offsets.push_back(0);
  for (int64_t bh = 0; bh < d.B * d.H; ++bh)
    for (int64_t qb = 0; qb < sel.nqb; ++qb) {
      const int64_t last = std::min(sel.nqb - 1, qb + window_blocks - 1);
      for (int64_t kb = std::max<int64_t>(0, qb - window_blocks + 1); kb <= last; ++kb)
        sel.keys.push_back(static_cast<int32_t>(kb));
      sel.offsets.push_back(static_cast<int64_t>(sel.keys.size()));
    }
  return sel;
}

WindowAttention::WindowAttention(const DsaConfig& cfg) : cfg_(cfg) { check_dsa_config(cfg_); }

void WindowAttention::forward(float* out, float* lse, const float* q, const float* k, const float* v,
                              const AttnDims& d, std::unique_ptr<AttnSaved>* saved) {
  check_attn_dims(d, "attention.window");
  if (saved) saved->reset();
  ops::block_sparse_attention_forward(out, lse, q, k, v, d,
                                      local_window_selection(d, cfg_.block, dsa_window_blocks(cfg_)));
}

void WindowAttention::backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                               const float* lse, const float* q, const float* k, const float* v,
                               const AttnDims& d, const AttnSaved*) {
  check_attn_dims(d, "attention.window");
  ops::block_sparse_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, d,
                                       local_window_selection(d, cfg_.block, dsa_window_blocks(cfg_)));
}

void WindowAttention::decode_paged(float* out, const float* q, const KVPages& kv, int64_t H, int64_t D,
                                   DecodeMemo*) {
  check_decode_args(kv, H, D, "attention.window");
  const int64_t len = kv.len;
  const int64_t qb = (len - 1) / cfg_.block;
  const int64_t k0 = std::max<int64_t>(0, qb - dsa_window_blocks(cfg_) + 1) * cfg_.block;
  const std::vector<KeyRange> ranges{{k0, len}};
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < H; ++h) {
    std::vector<float> s;
    decode_head(out + h * D, q + h * D, kv, h, H * D, D, ranges, s);
  }
}

}  // namespace sparta
