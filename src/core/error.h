#pragma once
// Errors in sparta are exceptions with a message a user can act on; the
// library never calls exit(). The CLI turns them into one line + status 1.
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace sparta {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// An error every process of a distributed job stops on together (they
// agreed on it, dist/agreement.h): no process is left waiting for another,
// so none needs to be killed.
class JobStopped : public Error {
 public:
  using Error::Error;
};

// A JobStopped that another process of the job has already printed: the
// CLI exits with status 1 without printing it again.
class AlreadyReported : public JobStopped {
 public:
  using JobStopped::JobStopped;
};

// Concatenates any streamable values: cat("[linear] got ", n, " features").
template <typename... Args>
std::string cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

}  // namespace sparta

// SPARTA_CHECK(cond, "[op] message ", value, ...) throws sparta::Error.
#define SPARTA_CHECK(cond, ...)                         \
  do {                                                  \
    if (!(cond)) throw ::sparta::Error(::sparta::cat(__VA_ARGS__)); \
  } while (0)
