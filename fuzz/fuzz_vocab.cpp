// libFuzzer harness: the vocab.txt loader (load_wordpiece_vocab in
// data/tokenizer.h), then a little encoding and decoding with the vocab it
// loaded. The input is the file's content. Rejecting the file is a normal
// outcome; a loaded vocab must keep tokenizer.h's promises: every id
// decodes to valid UTF-8 and encode() gives ids inside the vocab.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "data/tokenizer.h"
#include "data/utf8.h"

namespace {

bool valid_utf8(const std::string& s) { return sparta::utf8_first_invalid(s) == s.size(); }

// One file per process, rewritten each run (tmpfs: no disk traffic) and
// removed when the fuzzer exits.
struct ScratchFile {
  std::string path = "/dev/shm/sparta_fuzz_vocab_" + std::to_string(getpid()) + ".txt";
  ~ScratchFile() { std::remove(path.c_str()); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ScratchFile scratch;
  const std::string& path = scratch.path;
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) std::abort();
  }
  std::unique_ptr<sparta::Tokenizer> tok;
  try {
    tok = sparta::load_wordpiece_vocab(path, /*lowercase=*/size % 2 == 0);
  } catch (const sparta::Error&) {
    return 0;
  }
  const int64_t vocab = tok->vocab_size();
  std::vector<int32_t> all;
  for (int64_t id = 0; id < vocab; ++id) {
    const std::string piece = tok->decode({static_cast<int32_t>(id)});
    if (!valid_utf8(piece)) std::abort();  // decode() promises valid UTF-8
    all.push_back(static_cast<int32_t>(id));
  }
  if (!valid_utf8(tok->decode(all))) std::abort();
  // Encode the vocab's own text (every token spelled out) and a fixed text.
  const std::string_view own(reinterpret_cast<const char*>(data), size);
  for (const std::string_view text : {own, std::string_view("Hello, wörld! unaffable [SEP] 東京 ##ing")}) {
    const std::vector<int32_t> ids = tok->encode(text);
    for (const int32_t id : ids)
      if (id < 0 || id >= vocab) std::abort();
    if (!valid_utf8(tok->decode(ids))) std::abort();
  }
  return 0;
}
