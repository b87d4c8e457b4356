#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"

namespace sparta {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

std::filesystem::path parent_or_dot(const std::filesystem::path& p) {
  std::filesystem::path parent = p.parent_path();
  return parent.empty() ? std::filesystem::path(".") : parent;
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(const std::filesystem::path& path)
    : path_(path), tmp_(path.string() + ".tmp") {
  SPARTA_CHECK(!path.empty() && path.has_filename(), "[io] cannot write to '", path.string(),
               "': not a file path");
  // O_TRUNC: a tmp file left by an earlier crash is simply overwritten.
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(cat("[io] cannot create '", tmp_.string(), "': ", errno_text(errno)));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t n) {
  SPARTA_CHECK(fd_ >= 0 && !committed_, "[io] write to '", path_.string(), "' after commit");
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    // write() may be partial or interrupted by a signal; loop until done.
    ssize_t k = ::write(fd_, p, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      throw Error(cat("[io] writing '", tmp_.string(), "' failed: ", errno_text(errno)));
    }
    p += k;
    n -= static_cast<size_t>(k);
    written_ += static_cast<size_t>(k);
  }
}

void AtomicFileWriter::commit() {
  SPARTA_CHECK(fd_ >= 0 && !committed_, "[io] '", path_.string(), "' committed twice");
  if (::fsync(fd_) != 0) throw Error(cat("[io] fsync of '", tmp_.string(), "' failed: ", errno_text(errno)));
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) throw Error(cat("[io] closing '", tmp_.string(), "' failed: ", errno_text(errno)));
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    throw Error(
        cat("[io] renaming '", tmp_.string(), "' to '", path_.string(), "' failed: ", errno_text(errno)));
  committed_ = true;
  fsync_path(parent_or_dot(path_));
}

void write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  AtomicFileWriter w(path);
  w.write(bytes);
  w.commit();
}

void fsync_path(const std::filesystem::path& path) {
  // O_RDONLY works for both files and folders; fsync needs no write access.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(cat("[io] cannot open '", path.string(), "' to fsync: ", errno_text(errno)));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  // Some filesystems refuse fsync on folders with EINVAL; there is nothing
  // more durable to do there, so that case is not an error.
  if (rc != 0 && !(err == EINVAL && std::filesystem::is_directory(path)))
    throw Error(cat("[io] fsync of '", path.string(), "' failed: ", errno_text(err)));
}

std::string read_file(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(cat("[io] cannot open '", path.string(), "': ", errno_text(errno)));
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw Error(cat("[io] cannot read '", path.string(), "': it is a folder"));
  }
  std::string out;
  if (st.st_size > 0) out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    ssize_t k = ::read(fd, buf, sizeof buf);
    if (k < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      throw Error(cat("[io] reading '", path.string(), "' failed: ", errno_text(err)));
    }
    if (k == 0) break;
    out.append(buf, static_cast<size_t>(k));
  }
  ::close(fd);
  return out;
}

}  // namespace sparta
