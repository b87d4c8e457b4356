#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "core/error.h"
#include "io/run_lock.h"

using namespace sparta;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / (name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

// flock locks belong to an open file description, so a second RunLock on the
// same folder is refused even inside one process.
TEST(RunLock, SecondHolderIsRefusedWithTheFirstOnesPid) {
  const fs::path dir = fresh_dir("sparta_run_lock");
  {
    RunLock first(dir, "train", "wait for it or use another train.out");
    std::ifstream in(dir / kRunLockFile);
    std::string pid;
    std::getline(in, pid);
    EXPECT_EQ(pid, std::to_string(::getpid()));
    try {
      RunLock second(dir, "sweep", "use another --out");
      FAIL() << "a second lock on the same folder was granted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("[sweep] '" + dir.string() + "' is in use by another sparta process (pid " +
                         std::to_string(::getpid())),
                std::string::npos)
          << msg;
      EXPECT_NE(msg.find("; use another --out"), std::string::npos) << msg;
    }
  }
  // Released with its holder: the file stays, the lock does not.
  EXPECT_TRUE(fs::exists(dir / kRunLockFile));
  EXPECT_NO_THROW(RunLock again(dir, "train", "x"));
  fs::remove_all(dir);
}

TEST(RunLock, MissingFolderIsAnError) {
  const fs::path dir = fresh_dir("sparta_run_lock_missing") / "nope";
  EXPECT_THROW(RunLock lock(dir, "train", "x"), Error);
}
