// Decoding from a paged KV cache (ops/attention.h KVPages) equals decoding
// from the same keys and values in one contiguous cache, bit for bit, for
// every attention implementation and page size: what lets a server keep each
// sequence's cache in pages from a shared pool without changing any token.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "ops/attention.h"
#include "ops/attention_dsa.h"
#include "op_test_harness.h"

using namespace sparta;

namespace {

// Keys and values of `len` positions copied into pages of page_tokens rows,
// the pages laid out in a scrambled order in one buffer, as a pool hands
// them out.
struct PagedCopy {
  std::vector<float> k_store, v_store;
  std::vector<const float*> k_pages, v_pages;
  KVPages view;

  PagedCopy(const std::vector<float>& k, const std::vector<float>& v, int64_t len, int64_t ld, int64_t page_tokens) {
    const int64_t n_pages = (len + page_tokens - 1) / page_tokens;
    std::vector<int64_t> slot(static_cast<size_t>(n_pages));
    std::iota(slot.begin(), slot.end(), 0);
    std::reverse(slot.begin(), slot.end());  // page i lives in slot n-1-i
    if (n_pages > 2) std::swap(slot[0], slot[1]);
    k_store.assign(static_cast<size_t>(n_pages * page_tokens * ld), -77.0f);  // unused rows: garbage
    v_store.assign(k_store.size(), -77.0f);
    for (int64_t i = 0; i < n_pages; ++i) {
      float* kp = k_store.data() + slot[i] * page_tokens * ld;
      float* vp = v_store.data() + slot[i] * page_tokens * ld;
      const int64_t rows = std::min(page_tokens, len - i * page_tokens);
      std::copy_n(k.data() + i * page_tokens * ld, rows * ld, kp);
      std::copy_n(v.data() + i * page_tokens * ld, rows * ld, vp);
      k_pages.push_back(kp);
      v_pages.push_back(vp);
    }
    view = KVPages{k_pages.data(), v_pages.data(), page_tokens, len};
  }
};

struct Cache {
  int64_t H, D, ld;
  std::vector<float> q, k, v;
  Cache(int64_t T, int64_t H_, int64_t D_, uint64_t seed) : H(H_), D(D_), ld(H_ * D_) {
    Rng rng(seed);
    q = test::random_normal(T * ld, rng);
    k = test::random_normal(T * ld, rng);
    v = test::random_normal(T * ld, rng);
  }
  const float* q_at(int64_t len) const { return q.data() + (len - 1) * ld; }
};

DsaConfig selecting_config(const std::string& rank) {
  DsaConfig c;
  c.block = 16, c.window = 32, c.top_k = 48, c.keep_short = 0.5, c.keep_long = 0.25, c.short_len = 32,
  c.long_len = 64, c.dense_len = 0, c.group = 2, c.group_keep = 2, c.rank = rank;
  return c;
}

}  // namespace

TEST(PagedDecode, DenseAndWindowGiveTheContiguousBitsForAnyPageSize) {
  // H*D*len >= 2^18 at the longest length takes dense decode's threaded path.
  const int64_t H = 4, D = 64, T = 1100;
  const Cache c(T, H, D, 11);
  DsaConfig w = selecting_config("mean");
  for (const char* name : {"dense", "window"}) {
    const auto att = make_attention(name, w);
    for (int64_t page : {1, 5, 16, 64, 100, 2000})
      for (int64_t len : {1, 2, 63, 64, 65, 129, 300, 1100}) {
        std::vector<float> want(H * D), got(H * D);
        att->decode(want.data(), c.q_at(len), c.k.data(), c.v.data(), len, H, D);
        const PagedCopy paged(c.k, c.v, len, H * D, page);
        att->decode_paged(got.data(), c.q_at(len), paged.view, H, D);
        test::expect_bitwise_equal(cat(name, " page=", page, " len=", len), got, want);
      }
  }
}

TEST(PagedDecode, DsaWithItsMemoGivesTheContiguousBitsAsTheCacheGrows) {
  const int64_t H = 2, D = 8, T = 260;
  const Cache c(T, H, D, 12);
  for (const char* rank : {"mean", "bound"})
    for (int64_t page : {16, 32, 48}) {
      DsaAttention att(selecting_config(rank));
      std::unique_ptr<DecodeMemo> memo_paged = att.make_decode_memo(), memo_flat = att.make_decode_memo();
      std::vector<float> want(H * D), got(H * D);
      for (int64_t len = 1; len <= T; ++len) {  // one generation: each memo fills as its cache grows
        att.decode(want.data(), c.q_at(len), c.k.data(), c.v.data(), len, H, D, memo_flat.get());
        const PagedCopy paged(c.k, c.v, len, H * D, page);
        att.decode_paged(got.data(), c.q_at(len), paged.view, H, D, memo_paged.get());
        test::expect_bitwise_equal(cat(rank, " page=", page, " len=", len), got, want);
        if (::testing::Test::HasFailure()) return;
      }
    }
}

TEST(PagedDecode, DsaRejectsPagesThatCutItsKeyBlocks) {
  const int64_t H = 2, D = 8, len = 100;
  const Cache c(len, H, D, 13);
  DsaAttention att(selecting_config("bound"));
  const PagedCopy paged(c.k, c.v, len, H * D, 24);  // block 16
  std::vector<float> out(H * D);
  try {
    att.decode_paged(out.data(), c.q_at(len), paged.view, H, D);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of the key block (16 positions), got pages of 24"),
              std::string::npos)
        << e.what();
  }
  KVPages empty = paged.view;
  empty.page_tokens = 0;
  EXPECT_THROW(att.decode_paged(out.data(), c.q_at(len), empty, H, D), Error);
}
