#pragma once
// Paged key/value storage for decoding many sequences at once (the server's
// decode loop): one pool of fixed-size pages shared by every sequence, each
// page holding the keys and values of `page_tokens` consecutive positions
// for every layer. A sequence's cache is the list of pages it took (its page
// table) and its length; position p of it lives in page table[p /
// page_tokens], row p % page_tokens. Sequences take pages as they grow and
// give them all back when they end, are cancelled or fail, so memory per
// sequence follows its length instead of the model's context.
//
// Layout of one page: for each layer, K rows then V rows, each
// (page_tokens, H*D) contiguous. One page is one allocation-free unit: the
// pool allocates everything once at construction.
//
// Not thread-safe: one thread (the decode loop) owns a pool and the
// sequences that take pages from it.
#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"
#include "ops/attention.h"

namespace sparta {

struct KVPageShape {
  int64_t n_layer = 0;
  int64_t page_tokens = 0;  // positions per page
  int64_t H = 0, D = 0;     // heads, head dim: a key or value row is H*D floats
};

class KVPagePool {
 public:
  // n_pages >= 0 pages of `shape` (every field >= 1); sparta::Error naming
  // the field otherwise, or when the bytes do not fit in int64.
  KVPagePool(const KVPageShape& shape, int64_t n_pages);
  KVPagePool(const KVPagePool&) = delete;
  KVPagePool& operator=(const KVPagePool&) = delete;

  // Bytes of one page (keys and values of every layer).
  static int64_t page_bytes(const KVPageShape& shape);
  // How many whole pages fit in `bytes` (>= 0).
  static int64_t pages_in(const KVPageShape& shape, int64_t bytes);

  const KVPageShape& shape() const { return shape_; }
  int64_t total_pages() const { return static_cast<int64_t>(taken_.size()); }
  int64_t free_pages() const { return static_cast<int64_t>(free_.size()); }
  int64_t used_pages() const { return total_pages() - free_pages(); }

  // Appends n page ids to `out` and returns true, or takes nothing and
  // returns false when fewer than n pages are free (all or none, so a
  // sequence never holds half of what it asked for).
  bool take(int64_t n, std::vector<int32_t>& out);
  // Gives pages back. sparta::Error (and nothing given back) if any id is
  // not a page of this pool that is currently taken, or appears twice.
  void give_back(const int32_t* pages, int64_t n);

  // Rows of layer `layer` in page `page`: (page_tokens, H*D).
  float* k(int32_t page, int64_t layer);
  float* v(int32_t page, int64_t layer);

 private:
  int64_t row_floats() const { return shape_.H * shape_.D; }
  float* rows(int32_t page, int64_t layer, int64_t which);

  KVPageShape shape_;
  Tensor storage_;               // (n_pages, n_layer, 2, page_tokens, H*D)
  std::vector<int32_t> free_;    // ids of free pages; taken from the back
  std::vector<uint8_t> taken_;   // per page: 1 while a sequence holds it
};

// One sequence's cache in a KVPagePool: its page table, length and the
// attention's per-layer decode memos (see DecodeMemo).
class PagedSequence {
 public:
  PagedSequence() = default;
  PagedSequence(const PagedSequence&) = delete;
  PagedSequence& operator=(const PagedSequence&) = delete;
  PagedSequence(PagedSequence&&) = default;
  PagedSequence& operator=(PagedSequence&&) = default;

  int64_t len() const { return len_; }
  // Positions the pages taken so far can hold.
  int64_t capacity(const KVPagePool& pool) const {
    return static_cast<int64_t>(pages_.size()) * pool.shape().page_tokens;
  }
  const std::vector<int32_t>& pages() const { return pages_; }

  // Makes room for `len` positions: takes the missing pages, all or none.
  // Returns false (nothing taken) when the pool has too few free pages.
  bool reserve(KVPagePool& pool, int64_t len);
  // The cache now holds positions [0, n), n <= capacity; memos forget later
  // positions. Pages are kept (reserve decides what is taken).
  void set_len(const KVPagePool& pool, int64_t n);
  // Gives every page back; length 0, memos dropped. Safe to call twice.
  void release(KVPagePool& pool);

  void set_memo(int64_t layer, std::unique_ptr<DecodeMemo> memo);
  DecodeMemo* memo(int64_t layer) const;

 private:
  std::vector<int32_t> pages_;
  std::vector<std::unique_ptr<DecodeMemo>> memos_;
  int64_t len_ = 0;
};

}  // namespace sparta
