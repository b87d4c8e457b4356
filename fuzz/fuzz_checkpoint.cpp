// libFuzzer harness for loading a checkpoint folder (load_checkpoint in
// src/run/checkpoint_load.cpp, resolve_checkpoint in src/io/checkpoint_store.cpp).
//
// The input is the folder's files joined by a separator line:
//   config.toml SEP tokenizer.json SEP model.safetensors SEP
//   train_state.safetensors SEP vocab.txt
// where SEP is "\n=====\n" (fuzz/checkpoint.dict). Pieces past the last
// separator are absent files, so the fuzzer also explores missing ones.
// The seeds (fuzz/corpus/checkpoint/) are real checkpoints of tiny models
// joined this way (docs/fuzzing.md), so mutations start from files that load.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "core/error.h"
#include "run/checkpoint_load.h"

namespace {

namespace fs = std::filesystem;

constexpr std::string_view kSeparator = "\n=====\n";
constexpr const char* kFiles[] = {"config.toml", "tokenizer.json", "model.safetensors", "train_state.safetensors",
                                  "vocab.txt"};

// A checkpoint folder private to this process, removed at exit.
struct ScratchFolder {
  fs::path dir = fs::temp_directory_path() / ("sparta-fuzz-checkpoint-" + std::to_string(::getpid()));
  ScratchFolder() { fs::create_directories(dir); }
  ~ScratchFolder() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ScratchFolder scratch;
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  for (const char* name : kFiles) {
    const fs::path p = scratch.dir / name;
    std::error_code ec;
    fs::remove(p, ec);
    if (rest.data() == nullptr) continue;  // no piece left: the file is absent
    const size_t cut = rest.find(kSeparator);
    const std::string_view piece = rest.substr(0, cut);
    std::ofstream(p, std::ios::binary).write(piece.data(), static_cast<std::streamsize>(piece.size()));
    rest = cut == std::string_view::npos ? std::string_view() : rest.substr(cut + kSeparator.size());
  }
  try {
    const sparta::LoadedCheckpoint ck = sparta::load_checkpoint(scratch.dir);
    (void)ck.model->params().count();
  } catch (const sparta::Error&) {
  }
  return 0;
}
