#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace sparta {

float lr_at(int64_t step, float max_lr, int64_t warmup, int64_t total_steps, float min_lr_ratio) {
  SPARTA_CHECK(step >= 0 && warmup >= 0, "[lr_schedule] step ", step, " and warmup ", warmup,
               " must be non-negative");
  const double max = max_lr;
  if (step < warmup)
    return static_cast<float>(max * static_cast<double>(step + 1) / static_cast<double>(warmup));
  const double min = static_cast<double>(min_lr_ratio) * max;
  const double span = static_cast<double>(std::max<int64_t>(1, total_steps - warmup));
  const double p = std::min(1.0, static_cast<double>(step - warmup) / span);
  return static_cast<float>(min + 0.5 * (max - min) * (1.0 + std::cos(std::numbers::pi * p)));
}

}  // namespace sparta
