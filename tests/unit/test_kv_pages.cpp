#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "nn/kv_pages.h"

using namespace sparta;

namespace {

KVPageShape small_shape() { return KVPageShape{2, 4, 3, 5}; }  // 2 layers, 4 tokens a page, H 3, D 5

// A memo that records the lengths it was truncated to.
class RecordingMemo : public DecodeMemo {
 public:
  explicit RecordingMemo(std::vector<int64_t>* log) : log_(log) {}
  void truncate(int64_t len) override { log_->push_back(len); }

 private:
  std::vector<int64_t>* log_;
};

}  // namespace

TEST(KVPages, PageBytesCountKeysAndValuesOfEveryLayer) {
  const KVPageShape s = small_shape();
  EXPECT_EQ(KVPagePool::page_bytes(s), 2 * 2 * 4 * 3 * 5 * 4);
  EXPECT_EQ(KVPagePool::pages_in(s, 10 * KVPagePool::page_bytes(s) + 7), 10);
  EXPECT_EQ(KVPagePool::pages_in(s, KVPagePool::page_bytes(s) - 1), 0);
  EXPECT_EQ(KVPagePool::pages_in(s, -5), 0);
}

TEST(KVPages, BadShapesAndCountsAreErrorsNamingTheField) {
  KVPageShape s = small_shape();
  s.page_tokens = 0;
  try {
    KVPagePool pool(s, 4);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("page_tokens must be >= 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(KVPagePool(small_shape(), -1), Error);
  EXPECT_THROW(KVPagePool::page_bytes(KVPageShape{1, int64_t{1} << 40, 1 << 20, 1 << 20}), Error);
}

TEST(KVPages, TakeIsAllOrNoneAndExhaustionTakesNothing) {
  KVPagePool pool(small_shape(), 5);
  std::vector<int32_t> a, b;
  EXPECT_TRUE(pool.take(3, a));
  EXPECT_EQ(a, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(pool.free_pages(), 2);
  EXPECT_FALSE(pool.take(3, b));  // only 2 free
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(pool.free_pages(), 2);
  EXPECT_TRUE(pool.take(2, b));
  EXPECT_EQ(pool.free_pages(), 0);
  EXPECT_EQ(pool.used_pages(), 5);
  EXPECT_FALSE(pool.take(1, b));
  EXPECT_TRUE(pool.take(0, b));
  pool.give_back(a.data(), static_cast<int64_t>(a.size()));
  EXPECT_EQ(pool.free_pages(), 3);
}

TEST(KVPages, GivingBackAForeignOrFreePageIsAnErrorAndChangesNothing) {
  KVPagePool pool(small_shape(), 4);
  std::vector<int32_t> a;
  ASSERT_TRUE(pool.take(2, a));
  const std::vector<int32_t> twice = {a[0], a[1], a[0]};
  EXPECT_THROW(pool.give_back(twice.data(), 3), Error);
  EXPECT_EQ(pool.used_pages(), 2);  // nothing given back
  const std::vector<int32_t> foreign = {a[0], 99};
  try {
    pool.give_back(foreign.data(), 2);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("page 99 is not a page of this pool"), std::string::npos) << e.what();
  }
  EXPECT_EQ(pool.used_pages(), 2);
  const std::vector<int32_t> never_taken = {3};
  EXPECT_THROW(pool.give_back(never_taken.data(), 1), Error);
  pool.give_back(a.data(), 2);
  EXPECT_EQ(pool.free_pages(), 4);
  EXPECT_THROW(pool.give_back(a.data(), 2), Error);  // twice
  EXPECT_EQ(pool.free_pages(), 4);
}

TEST(KVPages, EveryPageAndLayerHasItsOwnRows) {
  const KVPageShape s = small_shape();
  KVPagePool pool(s, 3);
  const int64_t n = s.page_tokens * s.H * s.D;
  for (int32_t p = 0; p < 3; ++p)
    for (int64_t l = 0; l < s.n_layer; ++l) {
      std::fill(pool.k(p, l), pool.k(p, l) + n, static_cast<float>(100 * p + 10 * l + 1));
      std::fill(pool.v(p, l), pool.v(p, l) + n, static_cast<float>(100 * p + 10 * l + 2));
    }
  for (int32_t p = 0; p < 3; ++p)
    for (int64_t l = 0; l < s.n_layer; ++l)
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(pool.k(p, l)[i], static_cast<float>(100 * p + 10 * l + 1));
        ASSERT_EQ(pool.v(p, l)[i], static_cast<float>(100 * p + 10 * l + 2));
      }
  EXPECT_THROW(pool.k(3, 0), Error);
  EXPECT_THROW(pool.v(0, 2), Error);
}

TEST(KVPages, SequenceTakesPagesAsItGrowsAndReleaseReturnsThem) {
  KVPagePool pool(small_shape(), 4);  // 16 positions in all
  PagedSequence seq;
  std::vector<int64_t> truncations;
  seq.set_memo(1, std::make_unique<RecordingMemo>(&truncations));
  EXPECT_TRUE(seq.reserve(pool, 1));
  EXPECT_EQ(seq.pages().size(), 1u);
  EXPECT_TRUE(seq.reserve(pool, 4));  // still one page
  EXPECT_EQ(seq.pages().size(), 1u);
  EXPECT_TRUE(seq.reserve(pool, 9));  // three pages
  EXPECT_EQ(seq.pages().size(), 3u);
  EXPECT_EQ(seq.capacity(pool), 12);
  seq.set_len(pool, 9);
  EXPECT_THROW(seq.set_len(pool, 13), Error);
  EXPECT_FALSE(seq.reserve(pool, 17));  // needs 5 pages, the pool has 4
  EXPECT_EQ(seq.pages().size(), 3u);    // all or none
  seq.set_len(pool, 5);
  EXPECT_EQ(truncations, (std::vector<int64_t>{5}));
  EXPECT_NE(seq.memo(1), nullptr);
  EXPECT_EQ(seq.memo(0), nullptr);
  EXPECT_EQ(seq.memo(7), nullptr);
  seq.release(pool);  // a finished or cancelled sequence
  EXPECT_EQ(pool.free_pages(), 4);
  EXPECT_EQ(seq.len(), 0);
  EXPECT_EQ(seq.memo(1), nullptr);
  seq.release(pool);  // twice is harmless
  EXPECT_EQ(pool.free_pages(), 4);
}

TEST(KVPages, TenThousandRandomGrowsAndReleasesLeakNothing) {
  KVPagePool pool(small_shape(), 64);
  std::vector<PagedSequence> seqs(12);
  Rng rng(7);
  int64_t refused = 0;
  for (int step = 0; step < 10000; ++step) {
    PagedSequence& s = seqs[rng.next_u64() % seqs.size()];
    if (rng.next_u64() % 4 == 0) {
      s.release(pool);
    } else {
      const int64_t want = s.len() + 1 + static_cast<int64_t>(rng.next_u64() % 20);
      if (s.reserve(pool, want))
        s.set_len(pool, want);
      else
        ++refused;
    }
    // Invariants: no page held by two sequences; held + free = total.
    std::set<int32_t> held;
    int64_t count = 0;
    for (const auto& q : seqs) {
      held.insert(q.pages().begin(), q.pages().end());
      count += static_cast<int64_t>(q.pages().size());
      ASSERT_LE(q.len(), q.capacity(pool));
    }
    ASSERT_EQ(static_cast<int64_t>(held.size()), count) << "a page is held twice at step " << step;
    ASSERT_EQ(count + pool.free_pages(), pool.total_pages()) << "step " << step;
  }
  EXPECT_GT(refused, 0);  // the pool did run out along the way
  for (auto& s : seqs) s.release(pool);
  EXPECT_EQ(pool.free_pages(), pool.total_pages());
  EXPECT_EQ(pool.used_pages(), 0);
}
