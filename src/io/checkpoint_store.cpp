#include "io/checkpoint_store.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2 (glibc >= 2.28, _GNU_SOURCE)

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "io/atomic_file.h"

namespace sparta {
namespace fs = std::filesystem;

namespace {

constexpr const char* kLatest = "LATEST";
constexpr const char* kPrefix = "ckpt-";
// Scratch folders are the checkpoint name with a leading dot: ".ckpt-00000100.tmp".
constexpr const char* kScratchPrefix = ".ckpt-";

// Step of a "ckpt-<digits>" folder name, or -1 for any other name.
int64_t parse_checkpoint_step(const std::string& name) {
  const std::string prefix = kPrefix;
  if (name.size() < prefix.size() + 8 || name.size() > prefix.size() + 18 || name.rfind(prefix, 0) != 0)
    return -1;
  int64_t step = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

// OUT/.<ckpt name><suffix>. (Built with append: GCC 12 gives a false
// -Wrestrict warning on `"." + std::string` at -O3.)
fs::path scratch_path(const fs::path& out_dir, const std::string& ckpt_name, const char* suffix) {
  std::string n(".");
  n.append(ckpt_name).append(suffix);
  return out_dir / n;
}

void fsync_tree(const fs::path& root) {
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    const auto st = e.symlink_status().type();
    if (st == fs::file_type::regular || st == fs::file_type::directory) fsync_path(e.path());
  }
  fsync_path(root);
}

void remove_tree(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
  if (ec) throw Error(cat("[checkpoint] cannot remove '", p.string(), "': ", ec.message()));
}

// Moves `from` onto `to`, which already exists, so that `to` is never absent:
// afterwards `from` holds what `to` held. Returns false if the filesystem has
// no atomic exchange.
bool exchange_paths(const fs::path& from, const fs::path& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_EXCHANGE) == 0) return true;
  if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) return false;
  throw Error(
      cat("[checkpoint] cannot swap '", from.string(), "' into '", to.string(), "': ", std::strerror(errno)));
}

void rename_or_throw(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec)
    throw Error(
        cat("[checkpoint] cannot rename '", from.string(), "' to '", to.string(), "': ", ec.message()));
}

// std::filesystem reports I/O failures (permissions, a file where a folder
// should be) as filesystem_error; the library's contract is sparta::Error.
[[noreturn]] void throw_fs_error(const fs::filesystem_error& e) {
  throw Error(cat("[checkpoint] ", e.what()));
}

}  // namespace

std::string checkpoint_folder_name(int64_t step) {
  SPARTA_CHECK(step >= 0, "[checkpoint] step must be >= 0, got ", step);
  std::string digits = std::to_string(step);
  if (digits.size() < 8) digits.insert(0, 8 - digits.size(), '0');
  return kPrefix + digits;
}

fs::path commit_checkpoint(const fs::path& out_dir, int64_t step,
                           const std::function<void(const fs::path&)>& fill, int keep) try {
  SPARTA_CHECK(keep >= 1, "[checkpoint] keep must be >= 1, got ", keep);
  SPARTA_CHECK(static_cast<bool>(fill), "[checkpoint] commit_checkpoint needs a fill function");
  const std::string name = checkpoint_folder_name(step);
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw Error(cat("[checkpoint] cannot create run folder '", out_dir.string(), "': ", ec.message()));

  const fs::path tmp = scratch_path(out_dir, name, ".tmp");
  const fs::path final_dir = out_dir / name;
  remove_tree(tmp);  // left by a crash during an earlier attempt at this step
  fs::create_directory(tmp, ec);
  if (ec) throw Error(cat("[checkpoint] cannot create '", tmp.string(), "': ", ec.message()));
  try {
    fill(tmp);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  fsync_tree(tmp);

  if (fs::exists(fs::symlink_status(final_dir))) {
    // Re-saving a step (e.g. after resuming from it). LATEST may name this
    // folder, so it must never be missing: swap atomically; the old contents
    // end up under the scratch name and are removed below.
    if (!exchange_paths(tmp, final_dir)) {
      // No RENAME_EXCHANGE on this filesystem: the best left is two renames,
      // with a window of one rename in which final_dir is absent.
      const fs::path aside = scratch_path(out_dir, name, ".old");
      remove_tree(aside);
      rename_or_throw(final_dir, aside);
      rename_or_throw(tmp, final_dir);
    }
  } else {
    rename_or_throw(tmp, final_dir);
  }
  fsync_path(out_dir);
  write_file_atomic(out_dir / kLatest, name + "\n");  // fsyncs out_dir too

  // Retention. Older checkpoints are first renamed to scratch names, so a
  // crash during remove_all leaves only scratch behind, never a ckpt-*
  // folder with some of its files gone.
  std::vector<std::pair<int64_t, fs::path>> older;
  std::vector<fs::path> scratch;
  for (const auto& e : fs::directory_iterator(out_dir)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(kScratchPrefix, 0) == 0) {
      scratch.push_back(e.path());
    } else if (int64_t s = parse_checkpoint_step(n); s >= 0 && s < step && e.is_directory()) {
      older.emplace_back(s, e.path());
    }
  }
  std::sort(older.begin(), older.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = static_cast<size_t>(keep - 1); i < older.size(); ++i) {
    const fs::path doomed = scratch_path(out_dir, older[i].second.filename().string(), ".del");
    remove_tree(doomed);
    rename_or_throw(older[i].second, doomed);
    scratch.push_back(doomed);
  }
  for (const auto& p : scratch) remove_tree(p);
  return final_dir;
} catch (const fs::filesystem_error& e) {
  throw_fs_error(e);
}

void remove_all_checkpoints(const fs::path& out_dir) try {
  if (!fs::is_directory(out_dir)) return;
  for (const char* marker : {kLatest, "LATEST.tmp"}) {
    std::error_code ec;
    fs::remove(out_dir / marker, ec);
    if (ec) throw Error(cat("[checkpoint] cannot remove '", (out_dir / marker).string(), "': ", ec.message()));
  }
  fsync_path(out_dir);
  std::vector<fs::path> doomed;
  for (const auto& e : fs::directory_iterator(out_dir)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(kScratchPrefix, 0) == 0 || (parse_checkpoint_step(n) >= 0 && e.is_directory()))
      doomed.push_back(e.path());
  }
  for (const auto& p : doomed) remove_tree(p);
} catch (const fs::filesystem_error& e) {
  throw_fs_error(e);
}

std::optional<fs::path> latest_checkpoint(const fs::path& out_dir) try {
  const fs::path marker = out_dir / kLatest;
  if (!fs::exists(marker)) return std::nullopt;
  std::string name = read_file(marker);
  while (!name.empty() &&
         (name.back() == '\n' || name.back() == '\r' || name.back() == ' ' || name.back() == '\t'))
    name.pop_back();
  const bool plain = !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
                     name.find('\0') == std::string::npos && name.find('\n') == std::string::npos;
  if (!plain)
    throw Error(cat("[checkpoint] '", marker.string(),
                    "' should hold a checkpoint folder name like 'ckpt-00000100', got '", name.substr(0, 80),
                    "'"));
  const fs::path dir = out_dir / name;
  if (!fs::is_directory(dir))
    throw Error(cat("[checkpoint] '", marker.string(), "' names '", name, "' but folder '", dir.string(),
                    "' does not exist"));
  return dir;
} catch (const fs::filesystem_error& e) {
  throw_fs_error(e);
}

fs::path resolve_checkpoint(const fs::path& dir) try {
  if (!fs::exists(dir)) throw Error(cat("[checkpoint] '", dir.string(), "' does not exist"));
  if (!fs::is_directory(dir))
    throw Error(
        cat("[checkpoint] '", dir.string(), "' is a file; pass the checkpoint folder or the run folder"));
  if (auto latest = latest_checkpoint(dir)) return *latest;
  if (fs::exists(dir / "model.safetensors")) return dir;
  throw Error(cat("[checkpoint] '", dir.string(),
                  "' is neither a run folder (no LATEST) nor a checkpoint folder (no model.safetensors)"));
} catch (const fs::filesystem_error& e) {
  throw_fs_error(e);
}

}  // namespace sparta
