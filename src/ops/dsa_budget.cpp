#include "ops/dsa_budget.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace sparta {

void check_dsa_config(const DsaConfig& c) {
  SPARTA_CHECK(c.block >= 1, "[attention.dsa] block must be >= 1, got ", c.block);
  SPARTA_CHECK(c.scorer_loss >= 0.0 && std::isfinite(c.scorer_loss),
               "[attention.dsa] scorer_loss must be a finite number >= 0, got ", c.scorer_loss);
  SPARTA_CHECK(c.scorer_loss == 0.0 || c.summary, "[attention.dsa] scorer_loss needs summary = true");
  SPARTA_CHECK(c.explore >= 0.0 && std::isfinite(c.explore),
               "[attention.dsa] explore must be a finite number >= 0, got ", c.explore);
  SPARTA_CHECK(c.window >= 1, "[attention.dsa] window must be >= 1, got ", c.window);
  SPARTA_CHECK(c.group >= 1, "[attention.dsa] group must be >= 1, got ", c.group);
  SPARTA_CHECK(c.group_keep >= 1, "[attention.dsa] group_keep must be >= 1, got ", c.group_keep);
  SPARTA_CHECK(c.rank == "mean" || c.rank == "bound", "[attention.dsa] rank must be \"mean\" or \"bound\", got '",
               c.rank, "'");
  SPARTA_CHECK(c.top_k >= 0, "[attention.dsa] top_k must be >= 0, got ", c.top_k);
  SPARTA_CHECK(c.keep_long > 0.0 && c.keep_long <= c.keep_short && c.keep_short <= 1.0,
               "[attention.dsa] need 0 < keep_long <= keep_short <= 1, got keep_short=", c.keep_short,
               " keep_long=", c.keep_long);
  SPARTA_CHECK(c.dense_len >= 0, "[attention.dsa] dense_len must be >= 0, got ", c.dense_len);
  SPARTA_CHECK(c.short_len >= 2 && c.short_len < c.long_len,
               "[attention.dsa] need 2 <= short_len < long_len, got short_len=", c.short_len,
               " long_len=", c.long_len);
}

int64_t dsa_key_budget(const DsaConfig& c, int64_t T) {
  check_dsa_config(c);
  SPARTA_CHECK(T >= 0, "[attention.dsa] context length must be >= 0, got ", T);
  if (T == 0) return 0;
  if (T <= c.dense_len) return T;
  const double t = static_cast<double>(T);
  double raw;
  if (T <= c.short_len) {
    raw = c.keep_short * t;
  } else if (T <= c.long_len) {
    const double u = std::log(t / static_cast<double>(c.short_len)) /
                     std::log(static_cast<double>(c.long_len) / static_cast<double>(c.short_len));
    raw = c.keep_short * std::pow(c.keep_long / c.keep_short, u) * t;
  } else {
    const double ll = static_cast<double>(c.long_len);
    raw = c.keep_long * ll * std::log(t) / std::log(ll);
  }
  // The tiny epsilon keeps values that are integers up to rounding (e.g.
  // 0.2 · 1024 · 5) from being bumped to the next integer.
  const auto budget = static_cast<int64_t>(std::ceil(raw - 1e-9));
  return std::min(T, std::max(c.window + c.top_k, budget));
}

int64_t dsa_window_blocks(const DsaConfig& c) {
  check_dsa_config(c);
  return (c.window + c.block - 1) / c.block;
}

int64_t dsa_top_blocks(const DsaConfig& c, int64_t T) {
  const int64_t extra = dsa_key_budget(c, T) - c.window;
  return extra <= 0 ? 0 : (extra + c.block - 1) / c.block;
}

bool dsa_attends_all(const DsaConfig& c, int64_t T) {
  const int64_t blocks = (T + c.block - 1) / c.block;
  return dsa_window_blocks(c) + dsa_top_blocks(c, T) >= blocks;
}

}  // namespace sparta
