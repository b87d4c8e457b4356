#pragma once
// The part of a training step that talks to the other processes of a
// data-parallel run (docs/distributed.md). Every rank draws the same
// global batch (train.batch_size rows per micro-batch) and trains on its
// slice; the targets are counted over the whole step, so the SUM of the
// ranks' gradients is the gradient one process with every row computes,
// and that sum is what the ranks exchange (dist.compress), before fp16
// unscaling, clipping and AdamW: every rank then takes the same decisions
// and keeps identical weights. The exchange runs in buckets of whole
// layers, each started on a thread of its own as soon as backward has
// finished it, so it overlaps the rest of the backward. With one process
// every call is a no-op or a copy, so the trainer has one code path.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "dist/gradient_exchange.h"
#include "dist/process_group.h"
#include "eval/evaluate.h"
#include "run/config.h"

namespace sparta {

// One bucket of the gradient exchange: the flat gradient range [lo, hi).
struct GradientBucket {
  int64_t lo = 0, hi = 0;
};

// Cuts n gradient values into buckets at the points backward finishes them
// (cuts: decreasing, ending with 0, as GPT::gradients_final_order()): each
// bucket spans whole parts and holds at least min_values values (the last
// may hold fewer); in the order backward finishes them (highest first).
// min_values = 0: one bucket of everything.
std::vector<GradientBucket> plan_buckets(const std::vector<int64_t>& cuts, int64_t n, int64_t min_values);

class DataParallel {
 public:
  // n_params: gradient values per step; cuts: where backward finishes parts
  // of them (GPT::gradients_final_order(); empty: one bucket), bucketed by
  // dist.bucket_mb. sparta::Error when the batch does not split evenly over
  // the ranks.
  DataParallel(dist::ProcessGroup& group, const Config& cfg, int64_t n_params,
               const std::vector<int64_t>& cuts = {});
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const { return group_.rank(); }
  int ranks() const { return group_.size(); }
  // Rank 0 writes the run folder; the others write nothing.
  bool writer() const { return group_.rank() == 0; }
  // Rows of each micro-batch this rank trains on: batch_size / ranks.
  int64_t local_rows() const { return local_rows_; }
  const std::vector<GradientBucket>& buckets() const { return plan_; }
  // Whether buckets are exchanged on a thread of their own while backward
  // goes on (more than one rank, and an MPI that allows it).
  bool overlapped() const { return worker_.joinable(); }

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

  // Validation split over the ranks, batch by batch, summed back: each
  // rank evaluates 1/R of it and all get the whole result.
  EvalShard eval_shard();

  // The exchange mode of step `step` (0-based): FP32 during
  // dist.compress_after and on every dist.full_precision_every-th step,
  // dist.compress otherwise.
  dist::Compression mode_at(int64_t step) const;

  // The exchange of one step, overlapped with its backward:
  //   begin_step(g, step)   before the backward (g: n_params values);
  //   gradients_final_from(from), told by backward (GradientsFinal) that
  //                         g[from, n) is final: the buckets inside it start;
  //   finish_step()         after it: starts what is left, waits for every
  //                         bucket; g then holds the sum over ranks.
  // No other collective of this group may run between begin_step and
  // finish_step (the exchange thread owns the group then). finish_step
  // returns false when q4 refused a non-finite gradient (on every rank
  // alike: skip the step); the error-feedback residuals are then as before
  // the step. A collective's failure (a silent rank) is thrown by
  // finish_step.
  void begin_step(float* g, int64_t step);
  void gradients_final_from(int64_t from);
  bool finish_step();
  // begin_step + finish_step: the whole exchange after the backward.
  bool exchange(float* g, int64_t step);
  // What the last step's exchange cost this rank: bytes sent, milliseconds
  // spent exchanging (all buckets), and milliseconds the step waited for it
  // after its backward (what overlapping did not hide).
  int64_t last_bytes() const { return last_bytes_; }
  double last_ms() const { return last_ms_; }
  double last_wait_ms() const { return last_wait_ms_; }
  const char* last_mode() const { return dist::compression_name(mode_); }

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
  // rank reads its residuals when the rank count and the buckets are the
  // same (a bit-exact resume); otherwise they start from zero and the
  // returned notice says so ("" when there is nothing to say).
  std::string restore_residuals(const std::filesystem::path& ckpt_dir, int64_t saved_ranks);

 private:
  struct Bucket {
    GradientBucket range;
    std::unique_ptr<dist::GradientExchange> exchange;
    std::vector<float> undo_send, undo_receive;  // residuals before this step's exchange
  };
  void start_bucket(size_t k);   // main thread: hands bucket k to the exchange
  void run_bucket(size_t k);     // exchange thread (or main, without one)
  void exchange_thread();
  std::string bucket_layout() const;  // the bucket sizes, "n1,n2,..."
  std::pair<int64_t, int64_t> residual_sizes() const;  // every bucket's send and receive residual values

  dist::ProcessGroup& group_;
  dist::Compression compress_;
  int64_t full_every_, compress_after_, batch_, local_rows_;
  bool feedback_;  // q4 with error feedback: residuals to checkpoint
  std::vector<GradientBucket> plan_;
  std::vector<Bucket> buckets_;  // more than one rank only

  // One step's exchange. Written by the main thread before it hands a
  // bucket over (under mutex_), read by the exchange thread after.
  float* g_ = nullptr;
  dist::Compression mode_ = dist::Compression::None;
  size_t started_ = 0;  // main thread: buckets handed over this step
  // Shared with the exchange thread, under mutex_.
  std::mutex mutex_;
  std::condition_variable wake_, done_cv_;
  size_t queued_ = 0, taken_ = 0, done_ = 0;
  bool stop_ = false, refused_ = false;
  size_t refused_at_ = 0;
  std::exception_ptr failure_;
  int64_t bytes_ = 0;
  double busy_ms_ = 0.0;
  std::thread worker_;

  int64_t last_bytes_ = 0;
  double last_ms_ = 0.0, last_wait_ms_ = 0.0;
  std::vector<float> collected_;  // rank 0: every rank's residuals after collect_residuals()
};

// sparta::Error unless train.batch_size divides by the number of ranks.
void check_batch_splits(int64_t batch_size, int64_t ranks);

// The compute threads of one rank when train.threads is 0: the cores this
// process may use, shared with the other ranks on its machine when they
// are not bound to cores of their own.
int data_parallel_threads(int usable_cores, int machine_cores, int local_ranks);

}  // namespace sparta
