#pragma once
// Autoregressive sampling with the KV cache: greedy (temperature 0),
// temperature, top-k and nucleus (top-p) sampling.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "data/tokenizer.h"
#include "nn/gpt.h"

namespace sparta {

struct SampleOptions {
  int64_t max_tokens = 128;
  float temperature = 1.0f;  // 0 = greedy
  int64_t top_k = 0;         // 0 = off
  float top_p = 1.0f;        // 1 = off
  uint64_t seed = 0;
  bool stop_at_eot = true;
};

// Picks the next token from logits (V). scratch is reused between calls.
int32_t sample_token(const float* logits, int64_t V, const SampleOptions& o, Rng& rng,
                     std::vector<std::pair<float, int32_t>>& scratch);

// Generates up to o.max_tokens tokens after `prompt` (the tokenizer's
// end-of-text token is put in front, as documents are separated by it in
// training). When the context fills up, the cache is rebuilt from the newest
// half of the context, so generation can run past `context` tokens.
// on_text receives each piece of decoded text as soon as it is complete.
std::vector<int32_t> generate(GPT& model, const Tokenizer& tok, const std::vector<int32_t>& prompt,
                              const SampleOptions& o, const std::function<void(const std::string&)>& on_text);

}  // namespace sparta
