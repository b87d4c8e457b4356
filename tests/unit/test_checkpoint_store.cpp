#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "io/atomic_file.h"
#include "io/checkpoint_store.h"
#include "io/safetensors.h"

using namespace sparta;
namespace fs = std::filesystem;

namespace {

class CheckpointStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = fs::temp_directory_path() / cat("sparta_ckpt_", ::getpid(), "_", info->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    out_ = root_ / "run";
  }
  void TearDown() override { fs::remove_all(root_); }
  fs::path root_, out_;
};

// Payload whose every element depends on the step and its index, so a file
// from another step, a torn write or a mix of two steps is detected.
int64_t payload_value(int64_t step, int64_t i) { return step * 1000003 + i * 7919 + (i >> 5); }

void write_step_file(const fs::path& file, int64_t step, int64_t n) {
  Tensor payload = Tensor::empty({n}, DType::I64);
  int64_t sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    payload.data<int64_t>()[i] = payload_value(step, i);
    sum += payload.data<int64_t>()[i];
  }
  Tensor check = Tensor::empty({2}, DType::I64);
  check.data<int64_t>()[0] = step;
  check.data<int64_t>()[1] = sum;
  write_safetensors(file, {{"payload", payload}, {"checksum", check}}, {{"step", std::to_string(step)}});
}

// Returns the step stored in `file` after verifying every element.
int64_t verify_step_file(const fs::path& file) {
  SafetensorsFile f = SafetensorsFile::read(file);
  const int64_t step = std::stoll(f.metadata().at("step"));
  const Tensor& check = f.get("checksum", {2}, DType::I64);
  const Tensor& payload = f.get("payload");
  EXPECT_EQ(check.data<int64_t>()[0], step) << file;
  int64_t sum = 0, bad = 0;
  for (int64_t i = 0; i < payload.numel(); ++i) {
    sum += payload.data<int64_t>()[i];
    bad += payload.data<int64_t>()[i] != payload_value(step, i);
  }
  EXPECT_EQ(bad, 0) << file;
  EXPECT_EQ(sum, check.data<int64_t>()[1]) << file;
  return step;
}

// A checkpoint of a few MB in two files, as a trainer would write.
void fill_step(const fs::path& dir, int64_t step) {
  write_step_file(dir / "model.safetensors", step, 256 * 1024);      // 2 MB
  write_step_file(dir / "optimizer.safetensors", step, 128 * 1024);  // 1 MB
}

int64_t verify_checkpoint(const fs::path& dir) {
  const int64_t a = verify_step_file(dir / "model.safetensors");
  const int64_t b = verify_step_file(dir / "optimizer.safetensors");
  EXPECT_EQ(a, b) << dir;
  EXPECT_EQ(dir.filename().string(), checkpoint_folder_name(a));
  return a;
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

void small_fill(const fs::path& dir, int64_t value) {
  std::vector<int64_t> v = {value};
  write_safetensors(dir / "model.safetensors", {{"v", Tensor::view(v.data(), {1}, DType::I64)}});
}

int64_t small_value(const fs::path& dir) {
  return SafetensorsFile::read(dir / "model.safetensors").get("v", {1}, DType::I64).data<int64_t>()[0];
}

}  // namespace

TEST(CheckpointStore, FolderNamesAreZeroPadded) {
  EXPECT_EQ(checkpoint_folder_name(0), "ckpt-00000000");
  EXPECT_EQ(checkpoint_folder_name(100), "ckpt-00000100");
  EXPECT_EQ(checkpoint_folder_name(123456789), "ckpt-123456789");
  EXPECT_THROW(checkpoint_folder_name(-1), Error);
}

TEST_F(CheckpointStoreTest, CommitsKeepsNewestAndPointsLatest) {
  EXPECT_EQ(latest_checkpoint(out_), std::nullopt);
  for (int64_t s = 1; s <= 5; ++s) {
    const fs::path p = commit_checkpoint(
        out_, s * 100, [&](const fs::path& d) { small_fill(d, s); }, 3);
    EXPECT_EQ(p, out_ / checkpoint_folder_name(s * 100));
    EXPECT_EQ(read_file(out_ / "LATEST"), checkpoint_folder_name(s * 100) + "\n");
  }
  EXPECT_EQ(entries(out_),
            (std::vector<std::string>{"LATEST", "ckpt-00000300", "ckpt-00000400", "ckpt-00000500"}));
  ASSERT_TRUE(latest_checkpoint(out_).has_value());
  EXPECT_EQ(*latest_checkpoint(out_), out_ / "ckpt-00000500");
  EXPECT_EQ(small_value(*latest_checkpoint(out_)), 5);
  EXPECT_EQ(small_value(out_ / "ckpt-00000300"), 3);

  commit_checkpoint(
      out_, 600, [&](const fs::path& d) { small_fill(d, 6); }, 1);
  EXPECT_EQ(entries(out_), (std::vector<std::string>{"LATEST", "ckpt-00000600"}));
}

TEST_F(CheckpointStoreTest, RecommittingAStepReplacesItInPlace) {
  commit_checkpoint(out_, 7, [&](const fs::path& d) { small_fill(d, 1); });
  commit_checkpoint(out_, 7, [&](const fs::path& d) {
    // While the new one is being filled, the old one is still what LATEST names.
    EXPECT_EQ(small_value(*latest_checkpoint(out_)), 1);
    small_fill(d, 2);
  });
  EXPECT_EQ(small_value(*latest_checkpoint(out_)), 2);
  EXPECT_EQ(entries(out_), (std::vector<std::string>{"LATEST", "ckpt-00000007"}));
}

TEST_F(CheckpointStoreTest, FailedFillLeavesPreviousCheckpoint) {
  commit_checkpoint(out_, 5, [&](const fs::path& d) { small_fill(d, 5); });
  EXPECT_EQ(error_of([&] {
              commit_checkpoint(out_, 6, [&](const fs::path& d) {
                small_fill(d, 6);
                throw Error("disk full (simulated)");
              });
            }),
            "disk full (simulated)");
  EXPECT_EQ(entries(out_), (std::vector<std::string>{"LATEST", "ckpt-00000005"}));
  EXPECT_EQ(small_value(*latest_checkpoint(out_)), 5);
}

TEST_F(CheckpointStoreTest, RetentionSparesLaterStepsAndRemovesScratch) {
  for (int64_t s : {5, 10, 20, 30})
    commit_checkpoint(
        out_, s, [&](const fs::path& d) { small_fill(d, s); }, 10);
  // Leftovers of crashed commits and deletions.
  fs::create_directories(out_ / ".ckpt-00000099.tmp" / "sub");
  write_file_atomic(out_ / ".ckpt-00000099.tmp" / "sub" / "x", "junk");
  fs::create_directories(out_ / ".ckpt-00000001.del");
  fs::create_directories(out_ / "notes");  // not ours: left alone
  // Resuming from step 10 and saving step 15 with keep=2: 10 is kept as the
  // one older checkpoint, 5 goes; 20 and 30 (an abandoned later timeline) stay.
  commit_checkpoint(
      out_, 15, [&](const fs::path& d) { small_fill(d, 15); }, 2);
  EXPECT_EQ(entries(out_), (std::vector<std::string>{"LATEST", "ckpt-00000010", "ckpt-00000015",
                                                     "ckpt-00000020", "ckpt-00000030", "notes"}));
  EXPECT_EQ(*latest_checkpoint(out_), out_ / "ckpt-00000015");
  EXPECT_NE(error_of([&] {
              commit_checkpoint(
                  out_, 16, [](const fs::path&) {}, 0);
            }).find("keep must be >= 1"),
            std::string::npos);
}

TEST_F(CheckpointStoreTest, LatestAndResolveReportProblems) {
  EXPECT_EQ(latest_checkpoint(root_ / "missing"), std::nullopt);
  fs::create_directories(out_);
  write_file_atomic(out_ / "LATEST", "ckpt-00000007\n");
  EXPECT_EQ(error_of([&] { latest_checkpoint(out_); }),
            cat("[checkpoint] '", (out_ / "LATEST").string(), "' names 'ckpt-00000007' but folder '",
                (out_ / "ckpt-00000007").string(), "' does not exist"));
  write_file_atomic(out_ / "LATEST", "../../etc\n");
  EXPECT_NE(error_of([&] { latest_checkpoint(out_); }).find("should hold a checkpoint folder name"),
            std::string::npos);
  write_file_atomic(out_ / "LATEST", "\n");
  EXPECT_NE(error_of([&] { latest_checkpoint(out_); }).find("should hold a checkpoint folder name"),
            std::string::npos);

  fs::remove(out_ / "LATEST");
  const fs::path c = commit_checkpoint(out_, 42, [&](const fs::path& d) { small_fill(d, 42); });
  EXPECT_EQ(resolve_checkpoint(out_), c);  // run folder
  EXPECT_EQ(resolve_checkpoint(c), c);     // checkpoint folder
  const fs::path empty = root_ / "empty";
  fs::create_directories(empty);
  EXPECT_EQ(error_of([&] { resolve_checkpoint(empty); }),
            cat("[checkpoint] '", empty.string(),
                "' is neither a run folder (no LATEST) nor a checkpoint folder (no model.safetensors)"));
  EXPECT_EQ(error_of([&] { resolve_checkpoint(root_ / "nope"); }),
            cat("[checkpoint] '", (root_ / "nope").string(), "' does not exist"));
  EXPECT_NE(error_of([&] { resolve_checkpoint(c / "model.safetensors"); }).find("is a file"),
            std::string::npos);
  // A run folder that cannot be created (a file is in the way).
  EXPECT_EQ(error_of([&] {
              commit_checkpoint(c / "model.safetensors" / "x", 1, [](const fs::path&) {});
            }).rfind("[checkpoint] cannot create run folder", 0),
            0u);
}

// The child commits checkpoints in a tight loop (on every other restart
// starting by re-committing the step it resumed from, which replaces the
// folder LATEST names); the parent SIGKILLs it after a random 0-30 ms and
// checks that LATEST always leads to a complete checkpoint of the right step.
// Every third round the parent first waits until the child has committed
// something new, so the run makes progress however slow the machine is.
TEST_F(CheckpointStoreTest, SurvivesSigkillAtRandomMoments) {
  commit_checkpoint(
      out_, 0, [&](const fs::path& d) { fill_step(d, 0); }, 2);
  auto latest_step = [&] { return std::stoll(latest_checkpoint(out_)->filename().string().substr(5)); };
  Rng rng(2024);
  int64_t resume_step = 0, max_seen = 0, kills_mid_commit = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int iter = 0; iter < 30; ++iter) {
    const int64_t first = iter % 2 ? resume_step + 1 : resume_step;
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Child: no gtest, no exit handlers: only commits, then _exit.
      try {
        for (int64_t s = first;; ++s)
          commit_checkpoint(
              out_, s, [s](const fs::path& d) { fill_step(d, s); }, 2);
      } catch (...) {
        ::_exit(3);
      }
    }
    if (iter % 3 == 2) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (latest_step() <= resume_step && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng.below(30001)));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited by itself with status " << WEXITSTATUS(status);

    for (const auto& n : entries(out_)) kills_mid_commit += n.rfind(".ckpt-", 0) == 0;
    const auto latest = latest_checkpoint(out_);
    ASSERT_TRUE(latest.has_value());
    const int64_t step = verify_checkpoint(*latest);
    EXPECT_GE(step, max_seen) << "LATEST went backwards";
    // Every ckpt-* folder, not only LATEST's, is complete.
    for (const auto& n : entries(out_))
      if (n.rfind("ckpt-", 0) == 0) verify_checkpoint(out_ / n);
    max_seen = std::max(max_seen, step);
    resume_step = step;
    if (::testing::Test::HasFailure()) break;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ crash test ] 30 kills in %.1f s, reached step %lld, %lld kills left scratch behind\n", secs,
              static_cast<long long>(max_seen), static_cast<long long>(kills_mid_commit));
  EXPECT_GE(max_seen, 10) << "the child did not commit after the waits";
}
