#pragma once
// Key budget of dynamic sparse attention (DSA): how many keys each query may
// attend to as a function of the context length T. Short contexts keep most
// keys (little to save, much to lose); long ones keep a share that shrinks
// until, past long_len, the budget only grows like O(log T), so attention
// cost per token is O(log T) instead of O(T).
//
// Budget (keys per query): every key (budget = T) while T <= dense_len;
// beyond it, with raw(T):
//   T <= short_len:             raw = keep_short · T
//   short_len < T <= long_len:  raw = f(T) · T, the kept fraction f
//                               interpolated log-linearly in T:
//                               f = keep_short · (keep_long/keep_short)^u,
//                               u = log(T/short_len) / log(long_len/short_len)
//   T > long_len:               raw = keep_long · long_len · log(T)/log(long_len)
//   budget = min(T, max(window + top_k, ceil(raw)))
// The selected key blocks per query row are the local window
// (dsa_window_blocks) plus dsa_top_blocks(T) = max(0, ceil((budget - window)/block))
// blocks picked by score.
// Why dense_len: below some length selecting keys costs more than it saves
// (scoring every block, two kernels and a merge instead of one dense pass);
// measured on a 2-core AVX-512 CPU, the sparse path overtakes the dense
// kernel past ~1K tokens with FP32 products and past ~1.4K with BF16 ones
// (where the dense kernel's products are faster and the selection is not;
// docs/benchmarks.md), so by default DSA attends every key up to 1536 tokens
// and runs on the dense kernel there, in every precision. 0 = the formula
// from the first token on.
// Defaults: every key up to T = 1536; with dense_len = 0, 205 keys at
// T = 256 (80%) and at T = 1024 (20%; with the defaults f·T is constant in
// between). Beyond: 246 at 4096 (6%), 287 at 16384
// (1.75%), 328 at 65536 (0.5%; 1.14× the budget at 16384, so going from 16K
// to 64K tokens costs 4 × 1.14 = 4.6× the attention work, not 16×).
// Per query the kernel visits the whole window blocks and whole selected
// blocks, so the keys actually attended can exceed the budget by up to a
// block.
#include <cstdint>
#include <string>

namespace sparta {

struct DsaConfig {
  int64_t block = 64;       // tokens per key block
  int64_t window = 128;     // local window in tokens (rounded up to whole blocks)
  int64_t top_k = 64;       // minimum keys per query beyond the window
  double keep_short = 0.8;  // fraction of keys kept at T <= short_len
  double keep_long = 0.2;   // fraction of keys kept at T = long_len
  int64_t short_len = 256;
  int64_t long_len = 1024;
  // Contexts of at most dense_len tokens attend every key (see above); 0 = off.
  int64_t dense_len = 1536;
  // Coarse step (hierarchical scoring): consecutive key blocks form groups
  // of `group` blocks; a query row whose candidates contain more than
  // max(group_keep, ceil(top blocks / group)) whole groups scores those
  // groups first (mean key of the group) and scores blocks only inside the
  // best ones, so scoring costs O(T/(group·block) + group·group_keep) per
  // row instead of O(T/block). The groups it drops still enter the summary
  // key, as group means. group = 1: no coarse step.
  int64_t group = 8;
  int64_t group_keep = 4;
  // Far-context summary: the key blocks a query row scored but did not
  // select still enter its softmax as one summary key (see attention_dsa.h),
  // which is also what trains the scorer. false = hard selection only.
  bool summary = true;
  // Weight of the scorer loss (needs summary): in training, each query
  // row's score distribution over {its selected far blocks, the summary}
  // is pulled toward where its attention mass actually went (KL, targets
  // not differentiated), so blocks the queries use get higher scores. Its
  // gradient is formed in backward, times AttnDims::aux_grad_scale. 0 = off.
  double scorer_loss = 0.0;
  // Exploration (training only, AttnDims::selection_seed != 0): blocks are
  // ranked by score + explore · Gumbel noise, fresh every step, so blocks the
  // scorer ranks low are still attended now and then and can prove useful.
  // The summary and the scorer loss use the scores without noise. 0 = off.
  double explore = 0.0;
  // How candidates (blocks, and groups in the coarse step) are ranked for
  // selection. "mean": by their score c = q·K̄/sqrt(D) + ln(len), the mean
  // of their tokens' logits (the same number the summary uses). "bound": by
  // an upper bound of their largest token logit, Σ_d max(q_d·Kmax_d,
  // q_d·Kmin_d)/sqrt(D) with the per-dimension max and min of their keys
  // (Quest's page bound) — a single token that matches the query lifts its
  // block however many others it has, where the mean dilutes it by the
  // block length. The summary keeps the mean scores either way.
  std::string rank = "bound";
};

// Throws sparta::Error "[attention.dsa] ..." naming the bad field unless
// block >= 1, window >= 1, top_k >= 0, 0 < keep_long <= keep_short <= 1,
// 2 <= short_len < long_len, dense_len >= 0, group >= 1, group_keep >= 1 and
// rank is "mean" or "bound".
void check_dsa_config(const DsaConfig& cfg);

// Keys per query for context length T >= 0 (formula above); 0 for T = 0.
int64_t dsa_key_budget(const DsaConfig& cfg, int64_t T);

// Local window in blocks: ceil(window / block) (>= 1).
int64_t dsa_window_blocks(const DsaConfig& cfg);

// Key blocks picked by score per query row at context length T:
// max(0, ceil((dsa_key_budget(T) - window) / block)).
int64_t dsa_top_blocks(const DsaConfig& cfg, int64_t T);

// True when at context length T the budget covers every key block any query
// row could select (window blocks + top blocks >= all blocks): DSA then
// equals dense attention, and DsaAttention runs the dense kernel.
bool dsa_attends_all(const DsaConfig& cfg, int64_t T);

}  // namespace sparta
