#pragma once
// Crash-safe checkpoint folders inside a run folder OUT:
//
//   OUT/ckpt-00000100/   one complete checkpoint per folder (step zero-padded
//   OUT/ckpt-00000200/   to 8 digits; more digits past 99,999,999)
//   OUT/LATEST           "ckpt-00000200\n": the newest COMPLETE checkpoint
//
// A checkpoint is built in a hidden scratch folder OUT/.ckpt-<step>.tmp,
// fsynced, then renamed into place; only then does LATEST move to it. So at
// any instant — including after a SIGKILL or power loss at any point — LATEST
// names a folder whose files are complete. Folders whose name starts with
// ".ckpt-" are scratch and are removed by the next commit.
//
// One writer per run folder at a time (the training process, which holds the
// folder's RunLock, io/run_lock.h); any number of readers may call
// latest_checkpoint / resolve_checkpoint concurrently.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

namespace sparta {

// "ckpt-00000100" for step 100. step >= 0.
std::string checkpoint_folder_name(int64_t step);

// Writes checkpoint `step` into OUT (created if missing):
//  1. creates OUT/.ckpt-<step>.tmp/ and calls fill(tmp_dir) to write the files
//     (if fill throws, the scratch folder is removed and the error propagates;
//     OUT and LATEST are unchanged);
//  2. fsyncs every file and folder in it, renames it to OUT/ckpt-<step> and
//     fsyncs OUT. An existing OUT/ckpt-<step> is swapped out atomically
//     (renameat2 RENAME_EXCHANGE), so the folder LATEST names is never absent
//     (filesystems without it, rare today, get two renames instead);
//  3. atomically rewrites LATEST and fsyncs OUT;
//  4. retention: keeps this checkpoint and the newest keep-1 with a smaller
//     step, deletes older ckpt-* folders (renamed to scratch first, so a crash
//     mid-delete never leaves a half-deleted ckpt-* folder), and removes
//     stale scratch folders. Checkpoints with a LARGER step (left by an
//     earlier run that got further before being resumed from an older
//     checkpoint) are left alone.
// Returns OUT/ckpt-<step>. keep >= 1.
std::filesystem::path commit_checkpoint(const std::filesystem::path& out_dir, int64_t step,
                                        const std::function<void(const std::filesystem::path&)>& fill,
                                        int keep = 3);

// Removes every checkpoint from OUT (LATEST first, so it never names a
// missing folder; then ckpt-* folders and .ckpt-* scratch) and nothing else.
// For starting a run over (`train --force`).
void remove_all_checkpoints(const std::filesystem::path& out_dir);

// OUT/<name in LATEST>; nullopt if OUT has no LATEST. sparta::Error if LATEST
// is malformed or names a folder that does not exist.
std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& out_dir);

// What `--checkpoint DIR` means: a run folder (has LATEST) -> its newest
// checkpoint; a checkpoint folder (has model.safetensors) -> DIR itself;
// otherwise sparta::Error
//   [checkpoint] 'x' is neither a run folder (no LATEST) nor a checkpoint folder (no model.safetensors)
std::filesystem::path resolve_checkpoint(const std::filesystem::path& dir);

}  // namespace sparta
