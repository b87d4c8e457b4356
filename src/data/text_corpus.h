#pragma once
// Reading raw training text from disk.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace sparta {

struct TextCorpus {
  std::vector<std::string> documents;          // one per file, well-formed UTF-8, no NUL
  std::vector<std::filesystem::path> files;    // files[i] holds documents[i]
  int64_t skipped_files = 0;                   // binary / non-UTF-8 files left out of a folder
  std::vector<std::filesystem::path> skipped;  // those files, in sorted path order
  int64_t bytes = 0;                           // total size of documents
  // Lines for the user (skipped_files_notice); the caller shows them.
  std::vector<std::string> notices;
};

// file_or_dir is either
//   - a file: it must be well-formed UTF-8 without NUL bytes (Error naming
//     the file and the byte offset otherwise); it is the one document;
//   - a folder: every regular file below it, recursively, in sorted path
//     order, one document each. Symlinks (to files or folders) are not
//     followed, so aliases such as fortune's "art.u8 -> art" are read once.
//     Files with NUL bytes or ill-formed UTF-8 (binary files) are skipped,
//     listed in `skipped` and reported with skipped_files_notice in
//     `notices`, so a folder of mostly binary files does not silently train
//     on the little text left.
// `source` names the path in errors: the config key or flag it came from
// ("data.train", "--data").
// Errors: the path does not exist, a file cannot be read, or the result has
// no non-whitespace text ("[data] corpus 'x' is empty").
TextCorpus read_text_corpus(const std::filesystem::path& file_or_dir, const std::string& source = "data.train");

// "warning: skipped 3 binary or non-UTF-8 files in 'DIR': a.dat, b.dat, c.png"
// (paths relative to DIR; at most `max_listed` named, then "and N more");
// "" when nothing was skipped.
std::string skipped_files_notice(const TextCorpus& corpus, const std::filesystem::path& dir, size_t max_listed = 5);

}  // namespace sparta
