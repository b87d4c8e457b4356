#include "nn/kv_pages.h"

#include <limits>

#include "core/error.h"

namespace sparta {

namespace {

void check_shape(const KVPageShape& s) {
  SPARTA_CHECK(s.n_layer >= 1, "[kv_pages] n_layer must be >= 1, got ", s.n_layer);
  SPARTA_CHECK(s.page_tokens >= 1, "[kv_pages] page_tokens must be >= 1, got ", s.page_tokens);
  SPARTA_CHECK(s.H >= 1 && s.D >= 1, "[kv_pages] H and D must be >= 1, got H=", s.H, " D=", s.D);
}

}  // namespace

int64_t KVPagePool::page_bytes(const KVPageShape& s) {
  check_shape(s);
  // shape_numel checks the product for overflow.
  return shape_numel({s.n_layer, 2, s.page_tokens, s.H, s.D, static_cast<int64_t>(sizeof(float))});
}

int64_t KVPagePool::pages_in(const KVPageShape& s, int64_t bytes) {
  const int64_t page = page_bytes(s);
  return bytes <= 0 ? 0 : bytes / page;
}

KVPagePool::KVPagePool(const KVPageShape& shape, int64_t n_pages) : shape_(shape) {
  check_shape(shape);
  SPARTA_CHECK(n_pages >= 0 && n_pages <= std::numeric_limits<int32_t>::max(), "[kv_pages] page count ", n_pages,
               " outside [0, 2^31)");
  const int64_t per_page = page_bytes(shape) / static_cast<int64_t>(sizeof(float));
  SPARTA_CHECK(n_pages == 0 || per_page <= std::numeric_limits<int64_t>::max() / n_pages, "[kv_pages] ", n_pages,
               " pages of ", per_page, " floats overflow int64");
  storage_ = Tensor::empty({n_pages * per_page});
  taken_.assign(static_cast<size_t>(n_pages), 0);
  free_.reserve(static_cast<size_t>(n_pages));
  // Highest id first, so take() hands out 0, 1, 2, ... from the back.
  for (int64_t p = n_pages - 1; p >= 0; --p) free_.push_back(static_cast<int32_t>(p));
}

bool KVPagePool::take(int64_t n, std::vector<int32_t>& out) {
  SPARTA_CHECK(n >= 0, "[kv_pages] cannot take ", n, " pages");
  if (n > free_pages()) return false;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t p = free_.back();
    free_.pop_back();
    taken_[static_cast<size_t>(p)] = 1;
    out.push_back(p);
  }
  return true;
}

void KVPagePool::give_back(const int32_t* pages, int64_t n) {
  SPARTA_CHECK(n >= 0, "[kv_pages] cannot give back ", n, " pages");
  // Validate everything first (marking as we go, to catch duplicates), so a
  // bad list leaves the pool as it was.
  int64_t i = 0;
  for (; i < n; ++i) {
    const int32_t p = pages[i];
    if (p < 0 || p >= total_pages() || taken_[static_cast<size_t>(p)] != 1) break;
    taken_[static_cast<size_t>(p)] = 2;
  }
  if (i < n) {
    for (int64_t j = 0; j < i; ++j) taken_[static_cast<size_t>(pages[j])] = 1;
    const int32_t p = pages[i];
    SPARTA_CHECK(false, "[kv_pages] page ", p,
                 (p < 0 || p >= total_pages()) ? " is not a page of this pool"
                                               : " is not taken (given back twice?)");
  }
  for (int64_t j = 0; j < n; ++j) {
    taken_[static_cast<size_t>(pages[j])] = 0;
    free_.push_back(pages[j]);
  }
}

float* KVPagePool::rows(int32_t page, int64_t layer, int64_t which) {
  SPARTA_CHECK(page >= 0 && page < total_pages() && layer >= 0 && layer < shape_.n_layer, "[kv_pages] page ", page,
               " layer ", layer, " outside the pool (", total_pages(), " pages, ", shape_.n_layer, " layers)");
  const int64_t block = shape_.page_tokens * row_floats();
  return storage_.data<float>() + ((static_cast<int64_t>(page) * shape_.n_layer + layer) * 2 + which) * block;
}

float* KVPagePool::k(int32_t page, int64_t layer) { return rows(page, layer, 0); }
float* KVPagePool::v(int32_t page, int64_t layer) { return rows(page, layer, 1); }

bool PagedSequence::reserve(KVPagePool& pool, int64_t len) {
  SPARTA_CHECK(len >= 0, "[kv_pages] cannot reserve ", len, " positions");
  const int64_t P = pool.shape().page_tokens;
  const int64_t need = (len + P - 1) / P - static_cast<int64_t>(pages_.size());
  return need <= 0 || pool.take(need, pages_);
}

void PagedSequence::set_len(const KVPagePool& pool, int64_t n) {
  SPARTA_CHECK(n >= 0 && n <= capacity(pool), "[kv_pages] length ", n, " outside [0, ", capacity(pool), "]");
  if (n < len_)
    for (auto& m : memos_)
      if (m) m->truncate(n);
  len_ = n;
}

void PagedSequence::release(KVPagePool& pool) {
  pool.give_back(pages_.data(), static_cast<int64_t>(pages_.size()));
  pages_.clear();
  memos_.clear();
  len_ = 0;
}

void PagedSequence::set_memo(int64_t layer, std::unique_ptr<DecodeMemo> memo) {
  SPARTA_CHECK(layer >= 0, "[kv_pages] negative layer ", layer);
  if (static_cast<size_t>(layer) >= memos_.size()) memos_.resize(static_cast<size_t>(layer) + 1);
  memos_[static_cast<size_t>(layer)] = std::move(memo);
}

DecodeMemo* PagedSequence::memo(int64_t layer) const {
  return layer >= 0 && static_cast<size_t>(layer) < memos_.size() ? memos_[static_cast<size_t>(layer)].get()
                                                                  : nullptr;
}

}  // namespace sparta
