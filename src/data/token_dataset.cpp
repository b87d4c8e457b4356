#include "data/token_dataset.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <mutex>

#include "core/error.h"
#include "core/rng.h"

namespace sparta {

TokenSplit tokenize_and_split(const TextCorpus& corpus, const Tokenizer& tok, double val_fraction) {
  SPARTA_CHECK(val_fraction >= 0.0 && val_fraction <= 0.5, "[data] val_fraction ", val_fraction,
               " must be in [0, 0.5]");
  const int64_t n_docs = static_cast<int64_t>(corpus.documents.size());
  std::vector<std::vector<int32_t>> encoded(n_docs);
  std::vector<std::exception_ptr> errors(n_docs);
  // Exceptions must not leave an OpenMP region; keep each document's own.
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t d = 0; d < n_docs; ++d) {
    try {
      encoded[d] = tok.encode(corpus.documents[d]);
    } catch (...) {
      errors[d] = std::current_exception();
    }
  }
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);

  size_t total = 0;
  for (const auto& e : encoded) total += e.size() + 1;
  std::vector<int32_t> stream;
  stream.reserve(total);
  for (auto& e : encoded) {
    if (e.empty()) continue;
    if (!stream.empty()) stream.push_back(tok.eot_id());
    stream.insert(stream.end(), e.begin(), e.end());
    std::vector<int32_t>().swap(e);  // release as we go: corpora can be large
  }
  const int64_t n = static_cast<int64_t>(stream.size());
  const int64_t n_val = static_cast<int64_t>(std::floor(static_cast<double>(n) * val_fraction));
  SPARTA_CHECK(n - n_val >= 2, "[data] the corpus has ", n, " tokens; with val_fraction ",
               val_fraction, " the train split keeps ", n - n_val,
               ", fewer than 2; use a larger corpus or a smaller val_fraction");
  TokenSplit split;
  split.val.assign(stream.begin() + (n - n_val), stream.end());
  stream.resize(n - n_val);
  split.train = std::move(stream);
  return split;
}

struct BatchSampler::Cache {
  std::mutex mu;
  int64_t epoch = -1;
  std::vector<int64_t> order;
};

BatchSampler::BatchSampler(const std::vector<int32_t>& tokens, int64_t context, uint64_t seed)
    : tokens_(&tokens), context_(context), seed_(seed), cache_(std::make_unique<Cache>()) {
  SPARTA_CHECK(context >= 1, "[data] context ", context, " must be at least 1");
  const int64_t n = static_cast<int64_t>(tokens.size());
  SPARTA_CHECK(n >= context + 1, "[data] train split has ", n, " tokens, fewer than context+1 = ",
               context + 1, "; use a larger corpus or smaller context");
  windows_ = (n - 1) / context;
}

BatchSampler::~BatchSampler() = default;
BatchSampler::BatchSampler(BatchSampler&&) noexcept = default;
BatchSampler& BatchSampler::operator=(BatchSampler&&) noexcept = default;

std::vector<int64_t> BatchSampler::epoch_order(int64_t epoch) const {
  // Hash (seed, epoch) into one seed: each epoch gets an independent stream
  // and nearby seeds or epochs do not give related shuffles.
  Rng mix(seed_);
  Rng rng(mix.next_u64() ^ (static_cast<uint64_t>(epoch) * 0xD1B54A32D192ED03ULL));
  std::vector<int64_t> order(windows_);
  for (int64_t i = 0; i < windows_; ++i) order[i] = i;
  for (int64_t i = windows_ - 1; i > 0; --i)
    std::swap(order[i], order[rng.below(static_cast<uint64_t>(i) + 1)]);
  return order;
}

void BatchSampler::next(int32_t* inputs, int32_t* targets, int64_t B, DataCursor& cursor) const {
  SPARTA_CHECK(B >= 1, "[data] batch size ", B, " must be at least 1");
  SPARTA_CHECK(cursor.epoch >= 0 && cursor.index >= 0 && cursor.index < windows_,
               "[data] data cursor (epoch ", cursor.epoch, ", index ", cursor.index,
               ") is out of range for ", windows_,
               " windows; was the checkpoint made with another corpus or context?");
  const int32_t* tok = tokens_->data();
  std::lock_guard<std::mutex> lock(cache_->mu);
  for (int64_t b = 0; b < B; ++b) {
    if (cache_->epoch != cursor.epoch) {
      cache_->order = epoch_order(cursor.epoch);
      cache_->epoch = cursor.epoch;
    }
    const int32_t* src = tok + cache_->order[cursor.index] * context_;
    std::memcpy(inputs + b * context_, src, context_ * sizeof(int32_t));
    std::memcpy(targets + b * context_, src + 1, context_ * sizeof(int32_t));
    if (++cursor.index == windows_) {
      cursor.index = 0;
      ++cursor.epoch;
    }
  }
}

int64_t eval_windows(int64_t n_tokens, int64_t context) {
  SPARTA_CHECK(context >= 1, "[data] context ", context, " must be at least 1");
  if (n_tokens < 2) return 0;
  return (n_tokens - 1 + context - 1) / context;
}

void eval_window(const std::vector<int32_t>& tokens, int64_t context, int64_t w, int32_t* inputs,
                 int32_t* targets) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t nw = eval_windows(n, context);
  SPARTA_CHECK(w >= 0 && w < nw, "[data] eval window ", w, " is out of range [0, ", nw, ") for ",
               n, " tokens and context ", context);
  const int64_t start = w * context;
  for (int64_t t = 0; t < context; ++t) {
    const int64_t pos = start + t;
    if (pos + 1 < n) {
      inputs[t] = tokens[pos];
      targets[t] = tokens[pos + 1];
    } else {
      inputs[t] = 0;
      targets[t] = -1;
    }
  }
}

}  // namespace sparta
