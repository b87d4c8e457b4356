#pragma once
// Key/value cache of one sequence for decoding: per layer, keys and values
// of every position so far, (max_len, H, D) contiguous — the layout
// Attention::decode reads. Queries are not kept: decode takes only the new
// token's query (no implementation reads earlier ones).
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "ops/attention.h"

namespace sparta {

class KVCache {
 public:
  KVCache() = default;
  KVCache(int64_t n_layer, int64_t max_len, int64_t H, int64_t D) : max_len_(max_len), H_(H), D_(D) {
    for (int64_t l = 0; l < n_layer; ++l) {
      k_.push_back(Tensor::empty({max_len, H, D}));
      v_.push_back(Tensor::empty({max_len, H, D}));
    }
    memos_.resize(static_cast<size_t>(n_layer));
  }
  int64_t len() const { return len_; }
  int64_t max_len() const { return max_len_; }
  void set_len(int64_t n) {
    SPARTA_CHECK(n >= 0 && n <= max_len_, "[kv_cache] length ", n, " outside [0, ", max_len_, "]");
    if (n < len_)
      for (auto& m : memos_)
        if (m) m->truncate(n);
    len_ = n;
  }
  void clear() { set_len(0); }
  // The attention's per-layer decode state (may be null), see DecodeMemo.
  void set_memo(int64_t layer, std::unique_ptr<DecodeMemo> memo) { memos_[layer] = std::move(memo); }
  DecodeMemo* memo(int64_t layer) { return memos_[layer].get(); }
  float* k(int64_t layer) { return k_[layer].data<float>(); }
  float* v(int64_t layer) { return v_[layer].data<float>(); }
  int64_t row() const { return H_ * D_; }

 private:
  std::vector<Tensor> k_, v_;
  std::vector<std::unique_ptr<DecodeMemo>> memos_;
  int64_t len_ = 0, max_len_ = 0, H_ = 0, D_ = 0;
};

}  // namespace sparta
