#pragma once
// The part of a training step that talks to the other processes of a
// data-parallel run (docs/distributed.md). Every rank draws the same
// global batch (train.batch_size rows per micro-batch) and trains on its
// slice; the targets are counted over the whole step, so the SUM of the
// ranks' gradients is the gradient one process with every row computes,
// and that sum is what the ranks exchange (dist.compress), before fp16
// unscaling, clipping and AdamW: every rank then takes the same decisions
// and keeps identical weights. With one process every call is a no-op or a
// copy, so the trainer has one code path.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "dist/gradient_exchange.h"
#include "dist/process_group.h"
#include "run/config.h"

namespace sparta {

class DataParallel {
 public:
  // n_params: gradient values per step. sparta::Error when the batch does
  // not split evenly over the ranks.
  DataParallel(dist::ProcessGroup& group, const Config& cfg, int64_t n_params);

  int rank() const { return group_.rank(); }
  int ranks() const { return group_.size(); }
  // Rank 0 writes the run folder; the others write nothing.
  bool writer() const { return group_.rank() == 0; }
  // Rows of each micro-batch this rank trains on: batch_size / ranks.
  int64_t local_rows() const { return local_rows_; }

  // This rank's rows of a step: of every micro-batch m (B rows of T tokens
  // in `all`), rows [m·B + rank·b, +b) with b = local_rows(), packed into
  // `mine` (micro_batches·b rows).
  void take_slice(const int32_t* all, int32_t* mine, int64_t micro_batches, int64_t T) const;

  // The targets counted over every rank's rows: local_count summed.
  int64_t step_targets(int64_t local_count);
  // Sums a value over the ranks (the step's loss parts).
  double sum(double local);
  // Whether any rank says yes (a Ctrl-C that reached one rank only).
  bool any(bool local);

  // The exchange mode of step `step` (0-based): FP32 during
  // dist.compress_after and on every dist.full_precision_every-th step,
  // dist.compress otherwise.
  dist::Compression mode_at(int64_t step) const;
  // g (n_params) ← the sum over ranks, in mode_at(step). false when q4
  // refused a non-finite gradient (on every rank alike: skip the step).
  bool exchange(float* g, int64_t step);
  // What the last exchange cost this rank.
  int64_t last_bytes() const { return last_bytes_; }
  double last_ms() const { return last_ms_; }
  const char* last_mode() const { return dist::compression_name(last_mode_); }

  // Collective: sparta::Error naming the ranks when the weights (n floats)
  // are not bit-identical on every rank (`when` says at which point).
  void check_identical(const float* weights, int64_t n, const std::string& when);

  // Checkpoints. The error-feedback residuals of every rank, collected on
  // rank 0 (collective; nothing unless dist.compress is q4 with
  // dist.error_feedback, the one mode with residuals), then written by
  // rank 0 into the checkpoint folder as dist_residuals.rank<r>.safetensors.
  void collect_residuals();
  void write_residuals(const std::filesystem::path& ckpt_dir) const;
  // On resume from a checkpoint written by `saved_ranks` processes: each
  // rank reads its residuals when the rank count is the same (a bit-exact
  // resume); otherwise they start from zero and the returned notice says so
  // ("" when there is nothing to say).
  std::string restore_residuals(const std::filesystem::path& ckpt_dir, int64_t saved_ranks);

 private:
  dist::ProcessGroup& group_;
  dist::Compression compress_;
  int64_t full_every_, compress_after_, batch_, local_rows_;
  bool feedback_;  // q4 with error feedback: residuals to checkpoint
  std::unique_ptr<dist::GradientExchange> exchange_;  // more than one rank only
  int64_t last_bytes_ = 0;
  double last_ms_ = 0.0;
  dist::Compression last_mode_ = dist::Compression::None;
  std::vector<float> collected_;  // rank 0: every rank's residuals after collect_residuals()
};

// sparta::Error unless train.batch_size divides by the number of ranks.
void check_batch_splits(int64_t batch_size, int64_t ranks);

// The compute threads of one rank when train.threads is 0: the cores this
// process may use, shared with the other ranks on its machine when they
// are not bound to cores of their own.
int data_parallel_threads(int usable_cores, int machine_cores, int local_ranks);

}  // namespace sparta
