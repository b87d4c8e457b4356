#pragma once
// From a tokenized corpus to training batches and evaluation windows.
#include <cstdint>
#include <memory>
#include <vector>

#include "data/text_corpus.h"
#include "data/tokenizer.h"

namespace sparta {

// Tokenizes every document and joins them into one stream with
// tok.eot_id() between consecutive documents (documents that encode to no
// tokens are left out); the last floor(n * val_fraction) tokens are the
// validation split, the rest the train split. Documents are encoded in
// parallel; the result does not depend on the thread count.
// Errors: val_fraction outside [0, 0.5]; train split with fewer than 2
// tokens. The val split may be shorter than 2 tokens (then it has no
// evaluation windows).
struct TokenSplit {
  std::vector<int32_t> train, val;
};
TokenSplit tokenize_and_split(const TextCorpus& corpus, const Tokenizer& tok, double val_fraction);

// Position in the shuffled stream of training windows; saved in
// checkpoints for exact resume. index is in [0, windows()).
struct DataCursor {
  int64_t epoch = 0;
  int64_t index = 0;
};

// Random training windows. Window k is tokens[k*context, k*context +
// context + 1) for k in [0, windows()), windows() = (n - 1) / context, so
// the windows tile the stream (the final partial window is dropped). Each
// epoch visits every window once, in the order of a Fisher-Yates shuffle
// seeded by (seed, epoch); the batch for a cursor is therefore a pure
// function of (tokens, context, seed, cursor).
// `tokens` is referenced, not copied: it must outlive the sampler.
class BatchSampler {
 public:
  // Error if context < 1 or tokens.size() < context + 1.
  BatchSampler(const std::vector<int32_t>& tokens, int64_t context, uint64_t seed);
  BatchSampler(std::vector<int32_t>&&, int64_t, uint64_t) = delete;  // would dangle
  ~BatchSampler();
  BatchSampler(BatchSampler&&) noexcept;
  BatchSampler& operator=(BatchSampler&&) noexcept;
  int64_t windows() const { return windows_; }
  int64_t context() const { return context_; }
  // inputs, targets: (B, context) row-major. Row b takes the window w at
  // the cursor's position: inputs[b][t] = tokens[w*context + t],
  // targets[b][t] = tokens[w*context + t + 1].
  // Advances the cursor by B windows, moving to the next epoch (index 0)
  // after the last window. Error if B < 1 or the cursor is out of range
  // (a checkpoint from a different dataset or context). Thread-safe.
  void next(int32_t* inputs, int32_t* targets, int64_t B, DataCursor& cursor) const;
  // The window order of one epoch: a permutation of [0, windows()).
  std::vector<int64_t> epoch_order(int64_t epoch) const;

 private:
  struct Cache;  // the current epoch's permutation
  const std::vector<int32_t>* tokens_;
  int64_t context_;
  uint64_t seed_;
  int64_t windows_;
  std::unique_ptr<Cache> cache_;
};

// Deterministic evaluation over a whole stream: window w has inputs
// tokens[w*context + t] and targets tokens[w*context + t + 1] for
// t in [0, context); positions past the stream have input 0 and target -1.
// Windows do not overlap, so every token but the first is a target exactly
// once; eval_windows = ceil((n_tokens - 1) / context), 0 when n_tokens < 2.
int64_t eval_windows(int64_t n_tokens, int64_t context);
// inputs, targets: (context). Error if w is not in [0, eval_windows).
void eval_window(const std::vector<int32_t>& tokens, int64_t context, int64_t w, int32_t* inputs,
                 int32_t* targets);

}  // namespace sparta
