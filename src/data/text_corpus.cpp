#include "data/text_corpus.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "core/plural.h"
#include "data/utf8.h"

namespace sparta {

namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  SPARTA_CHECK(in, "[data] cannot open '", path.string(), "': ", std::strerror(errno));
  std::string text;
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0, std::ios::beg);
  if (size > 0) {
    text.resize(static_cast<size_t>(size));
    in.read(text.data(), size);
    SPARTA_CHECK(in.gcount() == size, "[data] error reading '", path.string(), "'");
  }
  return text;
}

// Empty when the text is usable, else why not (with the byte offset).
std::string text_problem(const std::string& text) {
  const size_t nul = text.find('\0');
  const size_t bad = utf8_first_invalid(text);
  if (nul == std::string::npos && bad == text.size()) return {};
  if (nul < bad) return cat("contains a NUL byte at byte offset ", nul);
  return cat("is not valid UTF-8 at byte offset ", bad);
}

bool has_content(const std::string& text) {
  return text.find_first_not_of(" \t\n\r\f\v") != std::string::npos;
}

}  // namespace

std::string skipped_files_notice(const TextCorpus& corpus, const fs::path& dir, size_t max_listed) {
  if (corpus.skipped.empty()) return {};
  std::string s = cat("warning: skipped ", count_noun(static_cast<int64_t>(corpus.skipped.size()),
                                                      "binary or non-UTF-8 file"),
                      " in '", dir.string(), "': ");
  for (size_t i = 0; i < corpus.skipped.size() && i < max_listed; ++i)
    s += cat(i ? ", " : "", corpus.skipped[i].lexically_relative(dir).string());
  if (corpus.skipped.size() > max_listed) s += cat(" and ", corpus.skipped.size() - max_listed, " more");
  return s;
}

TextCorpus read_text_corpus(const fs::path& file_or_dir, const std::string& source) {
  std::error_code ec;
  const fs::file_status st = fs::status(file_or_dir, ec);
  SPARTA_CHECK(fs::exists(st), "[data] ", source, " '", file_or_dir.string(), "' does not exist");
  TextCorpus corpus;
  if (!fs::is_directory(st)) {
    SPARTA_CHECK(fs::is_regular_file(st), "[data] ", source, " '", file_or_dir.string(),
                 "' is neither a regular file nor a folder");
    std::string text = read_file(file_or_dir);
    const std::string problem = text_problem(text);
    SPARTA_CHECK(problem.empty(), "[data] ", source, " '", file_or_dir.string(), "' ", problem,
                 " (expected UTF-8 text)");
    corpus.bytes = static_cast<int64_t>(text.size());
    corpus.documents.push_back(std::move(text));
    corpus.files.push_back(file_or_dir);
  } else {
    std::vector<fs::path> paths;
    // The default options do not descend into symlinked folders; symlinked
    // files are filtered by symlink_status below.
    fs::recursive_directory_iterator it(file_or_dir, ec), end;
    SPARTA_CHECK(!ec, "[data] cannot list '", file_or_dir.string(), "': ", ec.message());
    for (; it != end; it.increment(ec)) {
      SPARTA_CHECK(!ec, "[data] cannot list '", file_or_dir.string(), "': ", ec.message());
      if (fs::is_regular_file(it->symlink_status())) paths.push_back(it->path());
    }
    SPARTA_CHECK(!ec, "[data] cannot list '", file_or_dir.string(), "': ", ec.message());
    std::sort(paths.begin(), paths.end());
    for (const fs::path& p : paths) {
      std::string text = read_file(p);
      if (!text_problem(text).empty()) {
        ++corpus.skipped_files;
        corpus.skipped.push_back(p);
        continue;
      }
      corpus.bytes += static_cast<int64_t>(text.size());
      corpus.documents.push_back(std::move(text));
      corpus.files.push_back(p);
    }
  }
  const bool empty = std::none_of(corpus.documents.begin(), corpus.documents.end(), has_content);
  SPARTA_CHECK(!empty, "[data] corpus '", file_or_dir.string(), "' is empty",
               corpus.skipped_files > 0
                   ? cat(" (", count_noun(corpus.skipped_files, "binary or non-UTF-8 file"), " skipped)")
                   : std::string());
  // Only for a usable corpus: an empty one is one error line, not two.
  if (!corpus.skipped.empty()) corpus.notices.push_back(skipped_files_notice(corpus, file_or_dir));
  return corpus;
}

}  // namespace sparta
