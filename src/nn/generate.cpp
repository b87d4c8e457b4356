#include "nn/generate.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace sparta {

void check_sample_options(const SampleOptions& o) {
  SPARTA_CHECK(o.max_tokens >= 0, "[generate] --max-tokens must be >= 0, got ", o.max_tokens);
  SPARTA_CHECK(o.temperature >= 0.0f && std::isfinite(o.temperature),
               "[generate] --temperature must be a finite number >= 0 (0 = greedy), got ", o.temperature);
  SPARTA_CHECK(o.top_k >= 0, "[generate] --top-k must be >= 0 (0 = all tokens), got ", o.top_k);
  SPARTA_CHECK(o.top_p > 0.0f && o.top_p <= 1.0f, "[generate] --top-p must be in (0, 1], got ", o.top_p);
}

std::vector<std::string> context_notices(int64_t prompt_tokens, int64_t max_tokens, int64_t context) {
  std::vector<std::string> notes;
  if (prompt_tokens > context)
    notes.push_back(cat("the prompt is ", prompt_tokens, " tokens long (with the end-of-text token in front), "
                        "longer than the model's context of ", context, ": only its last ", context,
                        " tokens are used"));
  const int64_t used = std::min(prompt_tokens, context);
  // The window slides when a token is generated with the context already full.
  if (max_tokens > 0 && used + max_tokens - 1 > context)
    notes.push_back(cat("the prompt plus --max-tokens ", max_tokens, " run past the model's context of ", context,
                        " tokens: from there on each new token sees only the newest ", context / 2, " to ", context,
                        " tokens (a sliding window)"));
  return notes;
}

int32_t sample_token(const float* logits, int64_t V, const SampleOptions& o, Rng& rng,
                     std::vector<std::pair<float, int32_t>>& scratch) {
  if (o.temperature <= 0.0f) return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  scratch.resize(V);
  float mx = *std::max_element(logits, logits + V);
  for (int64_t i = 0; i < V; ++i) scratch[i] = {(logits[i] - mx) / o.temperature, static_cast<int32_t>(i)};
  int64_t k = (o.top_k > 0 && o.top_k < V) ? o.top_k : V;
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  if (k < V || o.top_p < 1.0f) {
    std::partial_sort(scratch.begin(), scratch.begin() + k, scratch.end(), by_logit);
    scratch.resize(k);
  }
  double sum = 0.0;
  for (auto& [l, id] : scratch) sum += std::exp(static_cast<double>(l));
  int64_t n = static_cast<int64_t>(scratch.size());
  if (o.top_p < 1.0f) {
    // Smallest prefix (by probability) whose mass reaches top_p.
    double acc = 0.0;
    int64_t keep = 0;
    while (keep < n) {
      acc += std::exp(static_cast<double>(scratch[keep].first)) / sum;
      ++keep;
      if (acc >= o.top_p) break;
    }
    n = keep;
    sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(scratch[i].first));
  }
  double u = rng.uniform() * sum, acc = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    acc += std::exp(static_cast<double>(scratch[i].first));
    if (u < acc) return scratch[i].second;
  }
  return scratch[n - 1].second;
}

std::vector<int32_t> generate(GPT& model, const Tokenizer& tok, const std::vector<int32_t>& prompt,
                              const SampleOptions& o, const std::function<void(const std::string&)>& on_text) {
  check_sample_options(o);
  const int64_t C = model.config().context, V = model.config().vocab_size;
  for (int32_t id : prompt)
    SPARTA_CHECK(id >= 0 && id < V, "[generate] prompt token ", id, " outside the vocabulary (", V, ")");
  std::vector<int32_t> seq;
  seq.push_back(tok.eot_id());
  seq.insert(seq.end(), prompt.begin(), prompt.end());
  // A prompt longer than the context keeps its newest tokens.
  if (static_cast<int64_t>(seq.size()) > C) seq.erase(seq.begin(), seq.end() - C);

  KVCache cache = model.make_cache(C);
  GPTActivations acts;
  Rng rng(o.seed);
  std::vector<std::pair<float, int32_t>> scratch;
  const float* logits = model.forward_cached(cache, acts, seq.data(), static_cast<int64_t>(seq.size()));
  // Text is streamed in the context of the prompt, so the first piece gets
  // its leading space (WordPiece) and split UTF-8 characters (bytes) join up.
  std::vector<int32_t> text_ids(seq.begin() + 1, seq.end());
  size_t streamed = 0;
  std::vector<int32_t> generated;
  for (int64_t i = 0; i < o.max_tokens; ++i) {
    int32_t next = sample_token(logits, V, o, rng, scratch);
    if (o.stop_at_eot && next == tok.eot_id()) break;
    generated.push_back(next);
    seq.push_back(next);
    text_ids.push_back(next);
    if (on_text) {
      std::string piece = tok.decode_incremental(text_ids, text_ids.size() - 1);
      streamed += piece.size();
      if (!piece.empty()) on_text(piece);
    }
    if (i + 1 == o.max_tokens) break;
    if (cache.len() == C) {
      // Context full: re-encode the newest half, positions restart at 0.
      cache.clear();
      int64_t keep = C / 2;
      logits = model.forward_cached(cache, acts, seq.data() + seq.size() - keep, keep);
    } else {
      logits = model.forward_cached(cache, acts, &next, 1);
    }
  }
  if (on_text && !generated.empty()) {
    // A byte stream may end inside a UTF-8 character the pieces held back.
    std::string prompt_text = tok.decode(std::vector<int32_t>(text_ids.begin(), text_ids.end() - generated.size()));
    std::string all = tok.decode(text_ids);
    if (all.size() > prompt_text.size() + streamed) on_text(all.substr(prompt_text.size() + streamed));
  }
  return generated;
}

}  // namespace sparta
