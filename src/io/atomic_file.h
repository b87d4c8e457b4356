#pragma once
// Crash-safe file writes. A reader of `path` sees either the complete old
// file or the complete new one, never a torn mix, even if the process is
// killed or the machine loses power mid-write: bytes go to `path.tmp`, are
// fsynced, the tmp file is renamed over `path`, and the folder is fsynced so
// the rename itself is durable.
#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

namespace sparta {

// Streaming form for large files (a checkpoint is written tensor by tensor
// without first assembling it in memory):
//   AtomicFileWriter w(path); w.write(a, n); w.write(b, m); w.commit();
// If commit() is not reached (an exception, an early return) the destructor
// removes the tmp file and `path` is untouched. Not thread-safe; at most one
// writer per path at a time (the tmp name is fixed: path + ".tmp").
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(const std::filesystem::path& path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
  // fsync tmp, rename over path, fsync the parent folder.
  void commit();
  size_t bytes_written() const { return written_; }

 private:
  std::filesystem::path path_;
  std::filesystem::path tmp_;
  int fd_ = -1;
  size_t written_ = 0;
  bool committed_ = false;
};

// One-shot form of AtomicFileWriter.
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

// fsync a regular file or a folder (a folder's fsync makes the creation,
// rename or removal of its entries durable). Throws sparta::Error on failure.
void fsync_path(const std::filesystem::path& path);

// Whole file as bytes; sparta::Error naming the path if it cannot be read.
std::string read_file(const std::filesystem::path& path);

}  // namespace sparta
