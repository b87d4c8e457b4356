#pragma once
// One writer per run folder. A `train` (or `sweep`) holds an exclusive
// flock(2) on DIR/.sparta.lock for as long as it writes into DIR; the file
// holds the holder's pid and command line, so a second writer is refused
// with a message naming the process it would collide with. The kernel drops
// the lock when its process ends in any way (SIGKILL included), so a lock is
// never stale; the file itself stays and means nothing while unlocked.
// Readers (eval, generate, info) never lock.
#include <filesystem>
#include <string>

namespace sparta {

// The lock file's name inside a run folder.
inline constexpr const char* kRunLockFile = ".sparta.lock";

class RunLock {
 public:
  // Locks `dir` (which must exist) without waiting. If another process holds
  // it, throws sparta::Error:
  //   [<who>] '<dir>' is in use by another sparta process (pid 1234, "sparta train ..."); <advice>
  RunLock(const std::filesystem::path& dir, const std::string& who, const std::string& advice);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

// This process's command line, arguments separated by spaces (from
// /proc/self/cmdline; "" where unavailable).
std::string current_command_line();

}  // namespace sparta
