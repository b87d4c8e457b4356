// libFuzzer harness for the safetensors reader (src/io/safetensors.cpp):
// the input is written as one file and read back; every tensor is then
// fetched by name. Rejections (sparta::Error) are expected; any other
// exception, crash, leak or sanitizer report is a bug.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "io/safetensors.h"

namespace {

// A file private to this process (parallel fuzzers do not share inputs),
// removed at exit.
struct ScratchFile {
  std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("sparta-fuzz-safetensors-" + std::to_string(::getpid()));
  ~ScratchFile() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

const std::filesystem::path& input_path() {
  static const ScratchFile file;
  return file.path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    // Removed first: ext4 flushes a file that is truncated and rewritten when
    // it is closed, which would make every execution wait for the disk.
    std::error_code ec;
    std::filesystem::remove(input_path(), ec);
    std::ofstream out(input_path(), std::ios::binary);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    const sparta::SafetensorsFile f = sparta::SafetensorsFile::read(input_path());
    size_t bytes = 0;
    for (const std::string& name : f.names()) bytes += f.get(name).nbytes();
    (void)bytes;
    (void)f.metadata().size();
  } catch (const sparta::Error&) {
  }
  return 0;
}
