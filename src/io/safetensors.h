#pragma once
// safetensors files (the format of Hugging Face's `safetensors` package):
//
//   [8 bytes]  N = header length, unsigned 64-bit little-endian
//   [N bytes]  UTF-8 JSON object:
//                {"<name>": {"dtype": "F32", "shape": [d0, d1, ...],
//                            "data_offsets": [begin, end]}, ...,
//                 "__metadata__": {"<key>": "<value>", ...}}   (optional)
//   [rest]     raw little-endian tensor bytes, row-major; offsets are
//              relative to the start of this region
//
// The writer pads the header with spaces so that N is a multiple of 8 (data
// then starts 8-byte aligned) and places tensors back to back in the order
// given. The reader accepts any file that follows the format and rejects,
// with a one-line sparta::Error naming the file, anything that does not: see
// SafetensorsFile::read. docs/checkpoint-format.md describes the format for
// readers outside sparta.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace sparta {

struct SafetensorsEntry {
  std::string name;
  Tensor tensor;  // any dtype; may be a view (e.g. into a flat parameter buffer)
};

// Writes `entries` (names unique, non-empty, not "__metadata__") and
// `metadata` to `path` atomically: path + ".tmp" is written and fsynced,
// renamed over `path`, and the folder fsynced. Tensors are streamed to disk
// one by one, so no second copy of the data is made in memory.
void write_safetensors(const std::filesystem::path& path, const std::vector<SafetensorsEntry>& entries,
                       const std::map<std::string, std::string>& metadata = {});

// What a safetensors header declares about one tensor.
struct SafetensorsTensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
};

// A whole safetensors file loaded into memory; each tensor owns its bytes
// (64-byte aligned), so the object can outlive the file.
class SafetensorsFile {
 public:
  // Reads and validates `path`. Rejected, each with its own message: missing
  // or unreadable file; file shorter than 8 bytes; header length larger than
  // the file or than 100 MB; header that is not a JSON object (or has
  // duplicate keys, or nests deeper than kMaxJsonDepth); an entry that is
  // not an object with exactly dtype (string), shape (array of integers) and
  // data_offsets (two integers); unknown dtype; more than 32 dimensions;
  // negative dimension; element or byte count overflowing int64; begin >
  // end; end past the data region; end - begin different from the bytes the
  // shape and dtype need; byte ranges that overlap or leave
  // holes (they must tile the data region exactly, no trailing bytes); an
  // empty tensor name; __metadata__ that is not a string -> string object.
  // Error messages are one line of bounded length whatever the file holds.
  static SafetensorsFile read(const std::filesystem::path& path);
  // Validates the header exactly as read() does (so a file it accepts, read()
  // accepts unless it changes in between) but reads no tensor bytes: the
  // tensors in file order. Memory stays within a few times the header size
  // (at most 100 MB) whatever shapes it declares, so callers can check shapes
  // before allocating anything for them.
  static std::vector<SafetensorsTensorInfo> read_header(const std::filesystem::path& path);

  bool has(const std::string& name) const;
  // The tensor `name`, checked against what the caller's model expects:
  //   [checkpoint] model.safetensors: tensor 'h.0.ln1.weight' has shape (384,) F32
  //   but the model expects (512,) F32
  // Throws sparta::Error if it is missing or its shape or dtype differ.
  const Tensor& get(const std::string& name, const Shape& expect_shape,
                    DType expect_dtype = DType::F32) const;
  // The tensor `name` whatever its shape; sparta::Error if missing.
  const Tensor& get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Tensor names in file order (by data offset).
  std::vector<std::string> names() const { return order_; }
  size_t size() const { return order_.size(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::map<std::string, Tensor> tensors_;
  std::vector<std::string> order_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace sparta
