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

DataParallel::DataParallel(dist::ProcessGroup& group, const Config& cfg, int64_t n_params)
    : group_(group),
      compress_(dist::parse_compression(cfg.dist.compress)),
      full_every_(cfg.dist.full_precision_every),
      compress_after_(cfg.dist.compress_after),
      batch_(cfg.train.batch_size) {
  const int64_t R = group.size();
  check_batch_splits(batch_, R);
  local_rows_ = batch_ / R;
  if (R > 1)
    exchange_ = std::make_unique<dist::GradientExchange>(group, n_params, cfg.dist.q4_block, cfg.dist.error_feedback);
  feedback_ = compress_ == dist::Compression::Q4 && cfg.dist.error_feedback;
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

dist::Compression DataParallel::mode_at(int64_t step) const {
  if (step < compress_after_) return dist::Compression::None;
  if (full_every_ > 0 && (step + 1) % full_every_ == 0) return dist::Compression::None;
  return compress_;
}

bool DataParallel::exchange(float* g, int64_t step) {
  last_bytes_ = 0;
  last_ms_ = 0.0;
  last_mode_ = mode_at(step);
  if (!exchange_) return true;
  const auto t0 = std::chrono::steady_clock::now();
  const bool ok = exchange_->sum(g, last_mode_);
  last_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  last_bytes_ = exchange_->last_bytes_sent();
  return ok;
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

void DataParallel::collect_residuals() {
  collected_.clear();
  if (!exchange_ || !feedback_) return;
  std::vector<float> mine = exchange_->send_residual();
  mine.insert(mine.end(), exchange_->receive_residual().begin(), exchange_->receive_residual().end());
  collected_.resize(mine.size() * static_cast<size_t>(ranks()));
  group_.all_gather(collected_.data(), mine.data(), static_cast<int64_t>(mine.size() * sizeof(float)));
  if (!writer()) collected_ = {};
}

void DataParallel::write_residuals(const fs::path& dir) const {
  if (collected_.empty()) return;
  const int64_t send = static_cast<int64_t>(exchange_->send_residual().size()), recv = exchange_->chunk();
  const int64_t per_rank = send + recv;
  for (int r = 0; r < ranks(); ++r) {
    float* base = const_cast<float*>(collected_.data()) + r * per_rank;
    write_safetensors(dir / residual_file(r),
                      {{"send_residual", Tensor::view(base, {send})}, {"receive_residual", Tensor::view(base + send, {recv})}},
                      {{"rank", std::to_string(r)}, {"ranks", std::to_string(ranks())}});
  }
}

std::string DataParallel::restore_residuals(const fs::path& dir, int64_t saved_ranks) {
  if (!feedback_) return {};
  if (saved_ranks != ranks())
    return cat("resumed on ", count_noun(ranks(), "process", "processes"), " from a checkpoint written by ",
               saved_ranks, ": the error-feedback residuals of dist.compress = q4 start from zero (a resume on ",
               count_noun(saved_ranks, "process", "processes"), " keeps them)");
  if (!exchange_) return {};  // one process, as before: nothing is exchanged
  SafetensorsFile f = SafetensorsFile::read(dir / residual_file(rank()));
  std::vector<float>& send = exchange_->send_residual();
  std::vector<float>& recv = exchange_->receive_residual();
  const Tensor& s = f.get("send_residual", {static_cast<int64_t>(send.size())});
  const Tensor& r = f.get("receive_residual", {static_cast<int64_t>(recv.size())});
  std::memcpy(send.data(), s.raw(), s.nbytes());
  std::memcpy(recv.data(), r.raw(), r.nbytes());
  return {};
}

}  // namespace sparta
