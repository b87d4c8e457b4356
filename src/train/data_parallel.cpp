#include "train/data_parallel.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core/error.h"
#include "core/plural.h"
#include "core/tensor.h"
#include "io/safetensors.h"

namespace sparta {

namespace fs = std::filesystem;

namespace {

std::string residual_file(int rank) { return cat("dist_residuals.rank", rank, ".safetensors"); }

// FNV-1a over the bytes: two ranks with the same weights get the same value.
uint64_t fnv1a(const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

}  // namespace

void check_batch_splits(int64_t batch_size, int64_t ranks) {
  SPARTA_CHECK(batch_size % ranks == 0, "[train] train.batch_size = ", batch_size, " does not split over ", ranks,
               " processes: make it a multiple of ", ranks, " (it is the global batch; each process takes batch_size / ",
               ranks, " rows)");
}

int data_parallel_threads(int usable_cores, int machine_cores, int local_ranks) {
  // Bound to cores of its own (mpirun binds to cores by default): all of them.
  if (local_ranks <= 1 || usable_cores < machine_cores) return std::max(1, usable_cores);
  return std::max(1, usable_cores / local_ranks);
}

std::vector<GradientBucket> plan_buckets(const std::vector<int64_t>& cuts, int64_t n, int64_t min_values) {
  if (min_values <= 0 || cuts.empty()) return {{0, n}};
  std::vector<GradientBucket> plan;
  int64_t hi = n;
  for (const int64_t cut : cuts) {
    SPARTA_CHECK(cut >= 0 && cut <= hi, "[dist] gradient cut ", cut, " outside [0, ", hi, "]");
    if (cut == hi) continue;
    if (hi - cut >= min_values || cut == 0) {
      plan.push_back({cut, hi});
      hi = cut;
    }
  }
  if (hi > 0) plan.push_back({0, hi});  // cuts that did not end with 0
  return plan;
}

DataParallel::DataParallel(dist::ProcessGroup& group, const Config& cfg, int64_t n_params,
                           const std::vector<int64_t>& cuts)
    : group_(group),
      compress_(dist::parse_compression(cfg.dist.compress)),
      full_every_(cfg.dist.full_precision_every),
      compress_after_(cfg.dist.compress_after),
      batch_(cfg.train.batch_size) {
  const int64_t R = group.size();
  check_batch_splits(batch_, R);
  local_rows_ = batch_ / R;
  feedback_ = compress_ == dist::Compression::Q4 && cfg.dist.error_feedback;
  // Any size above 0 asks for buckets, however small (0 = one bucket).
  const int64_t min_values =
      cfg.dist.bucket_mb > 0.0
          ? std::max<int64_t>(1, static_cast<int64_t>(cfg.dist.bucket_mb * 1024.0 * 1024.0 / sizeof(float)))
          : 0;
  plan_ = plan_buckets(cuts, n_params, min_values);
  if (R == 1) return;
  for (const GradientBucket& range : plan_) {
    Bucket b;
    b.range = range;
    b.exchange = std::make_unique<dist::GradientExchange>(group, range.hi - range.lo, cfg.dist.q4_block,
                                                          cfg.dist.error_feedback);
    buckets_.push_back(std::move(b));
  }
  // One bucket has nothing to overlap with: it starts after the backward.
  if (buckets_.size() > 1 && group.callable_from_other_threads()) worker_ = std::thread([this] { exchange_thread(); });
}

DataParallel::~DataParallel() {
  if (!worker_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  worker_.join();
}

void DataParallel::take_slice(const int32_t* all, int32_t* mine, int64_t micro_batches, int64_t T) const {
  const int64_t b = local_rows_;
  for (int64_t m = 0; m < micro_batches; ++m)
    std::memcpy(mine + m * b * T, all + (m * batch_ + rank() * b) * T, static_cast<size_t>(b * T) * sizeof(int32_t));
}

int64_t DataParallel::step_targets(int64_t local_count) {
  group_.all_reduce_sum(&local_count, 1);
  return local_count;
}

double DataParallel::sum(double local) {
  group_.all_reduce_sum(&local, 1);
  return local;
}

bool DataParallel::any(bool local) {
  int64_t v = local ? 1 : 0;
  group_.all_reduce_sum(&v, 1);
  return v > 0;
}

EvalShard DataParallel::eval_shard() {
  EvalShard shard;
  shard.index = rank();
  shard.count = ranks();
  if (ranks() > 1) shard.sum_over_shards = [this](double* values, int64_t n) { group_.all_reduce_sum(values, n); };
  return shard;
}

dist::Compression DataParallel::mode_at(int64_t step) const {
  if (step < compress_after_) return dist::Compression::None;
  if (full_every_ > 0 && (step + 1) % full_every_ == 0) return dist::Compression::None;
  return compress_;
}

void DataParallel::begin_step(float* g, int64_t step) {
  g_ = g;
  mode_ = mode_at(step);
  started_ = 0;
  std::lock_guard<std::mutex> lock(mutex_);
  queued_ = taken_ = done_ = 0;
  refused_ = false;
  refused_at_ = 0;
  failure_ = nullptr;
  bytes_ = 0;
  busy_ms_ = 0.0;
}

void DataParallel::gradients_final_from(int64_t from) {
  while (started_ < buckets_.size() && buckets_[started_].range.lo >= from) start_bucket(started_++);
}

void DataParallel::start_bucket(size_t k) {
  if (!worker_.joinable()) {  // the step waits for all of it
    run_bucket(k);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queued_ = k + 1;
  }
  wake_.notify_one();
}

void DataParallel::exchange_thread() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || taken_ < queued_; });
    if (stop_) return;
    const size_t k = taken_++;
    lock.unlock();
    run_bucket(k);
    lock.lock();
  }
}

void DataParallel::run_bucket(size_t k) {
  Bucket& b = buckets_[k];
  bool skip;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // Every rank refused the same bucket (they agree on it inside the
    // exchange), so every rank skips the same rest.
    skip = refused_ || failure_;
  }
  bool ok = true;
  int64_t bytes = 0;
  double ms = 0.0;
  std::exception_ptr failure;
  if (!skip) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      if (feedback_ && mode_ == dist::Compression::Q4) {
        b.undo_send = b.exchange->send_residual();
        b.undo_receive = b.exchange->receive_residual();
      }
      ok = b.exchange->sum(g_ + b.range.lo, mode_);
      bytes = b.exchange->last_bytes_sent();
    } catch (...) {
      failure = std::current_exception();
    }
    ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    bytes_ += bytes;
    busy_ms_ += ms;
    if (!ok && !refused_) {
      refused_ = true;
      refused_at_ = k;
    }
    if (failure && !failure_) failure_ = failure;
    ++done_;
  }
  done_cv_.notify_all();
}

bool DataParallel::finish_step() {
  last_bytes_ = 0;
  last_ms_ = last_wait_ms_ = 0.0;
  if (buckets_.empty()) return true;
  const auto t0 = std::chrono::steady_clock::now();
  gradients_final_from(0);
  std::unique_lock<std::mutex> lock(mutex_);
  done_cv_.wait(lock, [&] { return done_ == buckets_.size(); });
  last_wait_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!worker_.joinable()) last_wait_ms_ = busy_ms_;  // exchanged inside the backward, which waited
  last_bytes_ = bytes_;
  last_ms_ = busy_ms_;
  if (failure_) std::rethrow_exception(failure_);
  if (!refused_) return true;
  // The buckets exchanged before the refused one moved their residuals on
  // with a step that will not be taken: put them back.
  if (feedback_ && mode_ == dist::Compression::Q4)
    for (size_t k = 0; k < refused_at_; ++k) {
      buckets_[k].exchange->send_residual() = buckets_[k].undo_send;
      buckets_[k].exchange->receive_residual() = buckets_[k].undo_receive;
    }
  return false;
}

bool DataParallel::exchange(float* g, int64_t step) {
  begin_step(g, step);
  return finish_step();
}

void DataParallel::check_identical(const float* weights, int64_t n, const std::string& when) {
  if (ranks() == 1) return;
  const uint64_t mine = fnv1a(weights, static_cast<size_t>(n) * sizeof(float));
  std::vector<uint64_t> all(static_cast<size_t>(ranks()));
  group_.all_gather(all.data(), &mine, sizeof mine);
  std::string differ;
  for (int r = 1; r < ranks(); ++r)
    if (all[static_cast<size_t>(r)] != all[0]) differ += cat(differ.empty() ? "" : ", ", r);
  SPARTA_CHECK(differ.empty(), "[dist] the weights of rank ", differ, " differ from rank 0's ", when,
               ": the ranks no longer train the same model (a bug; please report it with the config)");
}

std::string DataParallel::bucket_layout() const {
  std::string layout;
  for (const GradientBucket& b : plan_) layout += cat(layout.empty() ? "" : ",", b.hi - b.lo);
  return layout;
}

// The residual file of a rank holds every bucket's send residuals back to
// back, then every bucket's receive residuals.
void DataParallel::collect_residuals() {
  collected_.clear();
  if (buckets_.empty() || !feedback_) return;
  std::vector<float> mine;
  for (const Bucket& b : buckets_) mine.insert(mine.end(), b.exchange->send_residual().begin(), b.exchange->send_residual().end());
  for (const Bucket& b : buckets_)
    mine.insert(mine.end(), b.exchange->receive_residual().begin(), b.exchange->receive_residual().end());
  collected_.resize(mine.size() * static_cast<size_t>(ranks()));
  group_.all_gather(collected_.data(), mine.data(), static_cast<int64_t>(mine.size() * sizeof(float)));
  if (!writer()) collected_ = {};
}

std::pair<int64_t, int64_t> DataParallel::residual_sizes() const {
  int64_t send = 0, receive = 0;
  for (const Bucket& b : buckets_) {
    send += static_cast<int64_t>(b.exchange->send_residual().size());
    receive += b.exchange->chunk();
  }
  return {send, receive};
}

void DataParallel::write_residuals(const fs::path& dir) const {
  if (collected_.empty()) return;
  const auto [send, recv] = residual_sizes();
  const int64_t per_rank = send + recv;
  for (int r = 0; r < ranks(); ++r) {
    float* base = const_cast<float*>(collected_.data()) + r * per_rank;
    write_safetensors(dir / residual_file(r),
                      {{"send_residual", Tensor::view(base, {send})}, {"receive_residual", Tensor::view(base + send, {recv})}},
                      {{"rank", std::to_string(r)}, {"ranks", std::to_string(ranks())}, {"buckets", bucket_layout()}});
  }
}

std::string DataParallel::restore_residuals(const fs::path& dir, int64_t saved_ranks) {
  if (!feedback_) return {};
  if (saved_ranks != ranks())
    return cat("resumed on ", count_noun(ranks(), "process", "processes"), " from a checkpoint written by ",
               saved_ranks, ": the error-feedback residuals of dist.compress = q4 start from zero (a resume on ",
               count_noun(saved_ranks, "process", "processes"), " keeps them)");
  if (buckets_.empty()) return {};  // one process, as before: nothing is exchanged
  SafetensorsFile f = SafetensorsFile::read(dir / residual_file(rank()));
  // Checkpoints from before buckets hold one bucket of every gradient.
  const auto saved = f.metadata().find("buckets");
  const std::string saved_layout =
      saved != f.metadata().end() ? saved->second : std::to_string(plan_.front().hi);  // every gradient
  if (saved_layout != bucket_layout())
    return cat("the gradient buckets differ from the checkpoint's (dist.bucket_mb changed): the error-feedback "
               "residuals of dist.compress = q4 start from zero");
  const auto [send, recv] = residual_sizes();
  const float* s = f.get("send_residual", {send}).data<float>();
  const float* r = f.get("receive_residual", {recv}).data<float>();
  for (Bucket& b : buckets_) {
    std::vector<float>& bs = b.exchange->send_residual();
    std::vector<float>& br = b.exchange->receive_residual();
    std::copy(s, s + bs.size(), bs.begin());
    std::copy(r, r + br.size(), br.begin());
    s += bs.size();
    r += br.size();
  }
  return {};
}

}  // namespace sparta
