// The trainer's data-parallel step helpers with stand-in groups: which rows
// a rank takes, the exchange schedule, the thread split, and the checks
// that refuse a run. Real multi-process training: tests/mpi/test_train_dp.py.
#include <gtest/gtest.h>

#include <numeric>
#include <string>
#include <vector>

#include "core/error.h"
#include "dist/process_group.h"
#include "run/config.h"
#include "train/data_parallel.h"

using namespace sparta;

namespace {

// Rank `rank` of `size` processes whose collectives do nothing: enough for
// what a rank decides alone.
class StandInGroup final : public dist::ProcessGroup {
 public:
  StandInGroup(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "stand-in"; }
  void all_reduce_sum(void*, int64_t, dist::Elem) override {}
  void reduce_scatter_sum(float*, const float*, int64_t) override {}
  void all_gather(void*, const void*, int64_t) override {}
  void all_to_all(void*, const void*, int64_t) override {}
  void broadcast(void*, int64_t, int) override {}
  void barrier() override {}
  void abort(int) override {}

 private:
  int rank_, size_;
};

Config config_with(int64_t batch, const std::string& compress, int64_t after, int64_t every) {
  Config c;
  c.train.batch_size = batch;
  c.dist.compress = compress;
  c.dist.compress_after = after;
  c.dist.full_precision_every = every;
  return c;
}

}  // namespace

TEST(DataParallel, EachRankTakesItsSliceOfEveryMicroBatch) {
  const int64_t B = 6, T = 2, micro = 2;
  std::vector<int32_t> all(micro * B * T);
  std::iota(all.begin(), all.end(), 0);  // token = its index: row r of the step holds 2r, 2r+1
  for (int rank = 0; rank < 3; ++rank) {
    StandInGroup g(rank, 3);
    DataParallel dp(g, config_with(B, "none", 0, 0), 10);
    ASSERT_EQ(dp.local_rows(), 2);
    std::vector<int32_t> mine(micro * dp.local_rows() * T, -1);
    dp.take_slice(all.data(), mine.data(), micro, T);
    std::vector<int32_t> expect;
    for (int64_t m = 0; m < micro; ++m)
      for (int64_t row = m * B + rank * 2; row < m * B + rank * 2 + 2; ++row)
        expect.insert(expect.end(), {static_cast<int32_t>(2 * row), static_cast<int32_t>(2 * row + 1)});
    EXPECT_EQ(mine, expect) << "rank " << rank;
  }
}

TEST(DataParallel, BatchMustSplitEvenly) {
  StandInGroup g(0, 4);
  try {
    DataParallel dp(g, config_with(6, "none", 0, 0), 10);
    FAIL() << "batch 6 over 4 ranks was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("train.batch_size = 6 does not split over 4 processes"), std::string::npos)
        << e.what();
  }
}

TEST(DataParallel, FullPrecisionStepsFollowTheSchedule) {
  StandInGroup g(0, 2);
  DataParallel dp(g, config_with(4, "q4", 3, 4), 100);
  std::string modes;
  for (int64_t step = 0; step < 12; ++step) modes += dp.mode_at(step) == dist::Compression::Q4 ? 'q' : 'f';
  // Steps 1-3 (counted from 1): warm-up; every 4th step (4, 8, 12) in FP32.
  EXPECT_EQ(modes, "ffffqqqfqqqf");
  DataParallel plain(g, config_with(4, "bf16", 0, 0), 100);
  for (int64_t step = 0; step < 5; ++step) EXPECT_EQ(plain.mode_at(step), dist::Compression::BF16);
}

TEST(DataParallel, ThreadsShareTheMachineUnlessBound) {
  EXPECT_EQ(data_parallel_threads(16, 16, 1), 16);  // alone
  EXPECT_EQ(data_parallel_threads(16, 16, 4), 4);   // 4 unbound ranks share 16 cores
  EXPECT_EQ(data_parallel_threads(2, 2, 3), 1);     // more ranks than cores: one thread each
  EXPECT_EQ(data_parallel_threads(1, 16, 4), 1);    // bound to one core
  EXPECT_EQ(data_parallel_threads(8, 16, 2), 8);    // bound to a socket of its own
}

TEST(DataParallel, BucketsAreWholePartsOfAtLeastTheBucketSize) {
  // Parts finished at 90, 70, 40, 30, 0 of 100 values (as backward reports).
  const std::vector<int64_t> cuts = {90, 70, 40, 30, 0};
  const auto ranges = [](const std::vector<GradientBucket>& plan) {
    std::vector<std::pair<int64_t, int64_t>> r;
    for (const GradientBucket& b : plan) r.emplace_back(b.lo, b.hi);
    return r;
  };
  using V = std::vector<std::pair<int64_t, int64_t>>;
  EXPECT_EQ(ranges(plan_buckets(cuts, 100, 0)), (V{{0, 100}}));  // 0: one bucket
  EXPECT_EQ(ranges(plan_buckets(cuts, 100, 1)), (V{{90, 100}, {70, 90}, {40, 70}, {30, 40}, {0, 30}}));
  EXPECT_EQ(ranges(plan_buckets(cuts, 100, 25)), (V{{70, 100}, {40, 70}, {0, 40}}));
  EXPECT_EQ(ranges(plan_buckets(cuts, 100, 50)), (V{{40, 100}, {0, 40}}));  // the last may be smaller
  EXPECT_EQ(ranges(plan_buckets(cuts, 100, 1000)), (V{{0, 100}}));
  EXPECT_EQ(ranges(plan_buckets({}, 100, 10)), (V{{0, 100}}));
  EXPECT_THROW(plan_buckets({120, 0}, 100, 10), Error);
}

TEST(DataParallel, OneProcessExchangesNothingWhateverTheBuckets) {
  StandInGroup g(0, 1);
  Config c = config_with(4, "q4", 0, 0);
  c.dist.bucket_mb = 1e-4;  // 26 values: buckets [70, 100), [40, 70), [0, 40)
  DataParallel dp(g, c, 100, {90, 70, 40, 30, 0});
  EXPECT_EQ(dp.buckets().size(), 3u);
  EXPECT_FALSE(dp.overlapped());
  std::vector<float> grad(100, 1.5f);
  dp.begin_step(grad.data(), 0);
  dp.gradients_final_from(40);
  EXPECT_TRUE(dp.finish_step());
  EXPECT_EQ(grad, std::vector<float>(100, 1.5f));
  EXPECT_EQ(dp.last_bytes(), 0);
  // However small, a size above 0 asks for buckets: one per part here.
  c.dist.bucket_mb = 1e-9;
  EXPECT_EQ(DataParallel(g, c, 100, {90, 70, 40, 30, 0}).buckets().size(), 5u);
  c.dist.bucket_mb = 0;
  EXPECT_EQ(DataParallel(g, c, 100, {90, 70, 40, 30, 0}).buckets().size(), 1u);
}
