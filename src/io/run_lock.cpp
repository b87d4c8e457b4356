#include "io/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace sparta {

namespace fs = std::filesystem;

std::string current_command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!raw.empty() && raw.back() == '\0') raw.pop_back();
  for (char& c : raw)
    if (c == '\0' || c == '\n') c = ' ';
  return raw;
}

namespace {

// "pid 1234, \"sparta train ...\"" from the holder's lock file.
std::string describe_holder(int fd) {
  std::string text;
  char buf[512];
  ssize_t n = 0;
  off_t at = 0;
  while (text.size() < 4096 && (n = ::pread(fd, buf, sizeof buf, at)) > 0) {
    text.append(buf, static_cast<size_t>(n));
    at += n;
  }
  std::istringstream is(text);
  std::string pid, command;
  std::getline(is, pid);
  std::getline(is, command);
  if (pid.empty()) return "pid unknown";
  if (command.size() > 120) command = command.substr(0, 117) + "...";
  return command.empty() ? "pid " + pid : cat("pid ", pid, ", \"", command, "\"");
}

}  // namespace

RunLock::RunLock(const fs::path& dir, const std::string& who, const std::string& advice) {
  const fs::path file = dir / kRunLockFile;
  fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  SPARTA_CHECK(fd_ >= 0, "[", who, "] cannot open lock file '", file.string(), "': ", std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string holder = err == EWOULDBLOCK ? describe_holder(fd_) : "";
    ::close(fd_);
    fd_ = -1;
    SPARTA_CHECK(err != EWOULDBLOCK, "[", who, "] '", dir.string(), "' is in use by another sparta process (",
                 holder, "); ", advice);
    throw Error(cat("[", who, "] cannot lock '", file.string(), "': ", std::strerror(err)));
  }
  // Ours now: record who we are for the next process that finds it locked.
  const std::string me = cat(::getpid(), "\n", current_command_line(), "\n");
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size())) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    throw Error(cat("[", who, "] cannot write lock file '", file.string(), "': ", std::strerror(err)));
  }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

}  // namespace sparta
