#pragma once
// Learning-rate schedule: linear warm-up, then cosine decay to
// min_lr_ratio * max_lr (llm.c's formula: the minimum is reached at
// step == total_steps and held after it).
#include <cstdint>

namespace sparta {

// step is 0-based.
//   step < warmup: max_lr * (step + 1) / warmup
//   otherwise:     p = (step - warmup) / max(1, total_steps - warmup), clamped to 1;
//                  min + 0.5 (max - min) (1 + cos(pi p)),  min = min_lr_ratio * max_lr
// Computed in double. Throws sparta::Error for step < 0 or warmup < 0.
float lr_at(int64_t step, float max_lr, int64_t warmup, int64_t total_steps, float min_lr_ratio);

}  // namespace sparta
