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

// Throws sparta::Error naming the `sparta generate` flag of the first bad
// option: "[generate] --max-tokens must be >= 0, got -1"; likewise
// --temperature (finite, >= 0), --top-k (>= 0), --top-p (in (0, 1]).
void check_sample_options(const SampleOptions& o);

// Context policy (a sliding window): the model sees at most `context`
// tokens. A longer prompt keeps its newest `context` tokens; when
// generation fills the context, the newest half is re-encoded (positions
// restart at 0) and generation goes on. The notices (no "note:" prefix)
// that say so, for a prompt of prompt_tokens tokens (the end-of-text token
// put in front is counted here) and up to max_tokens new ones: one about a
// cut prompt, one about the window sliding; none when everything fits.
std::vector<std::string> context_notices(int64_t prompt_tokens, int64_t max_tokens, int64_t context);

// Picks the next token from logits (V). scratch is reused between calls.
int32_t sample_token(const float* logits, int64_t V, const SampleOptions& o, Rng& rng,
                     std::vector<std::pair<float, int32_t>>& scratch);

// Generates up to o.max_tokens tokens after `prompt` (the tokenizer's
// end-of-text token is put in front, as documents are separated by it in
// training). The context policy is the sliding window above
// (context_notices), so generation can run past `context` tokens. Options
// are checked first (check_sample_options).
// on_text receives each piece of decoded text as soon as it is complete.
std::vector<int32_t> generate(GPT& model, const Tokenizer& tok, const std::vector<int32_t>& prompt,
                              const SampleOptions& o, const std::function<void(const std::string&)>& on_text);

}  // namespace sparta
