#pragma once
// Tracked, 64-byte aligned allocations and a bump arena for per-step scratch.
// Every tensor and arena block goes through here, so peak_bytes() is the
// engine's own high-water mark (benchmarks also report process RSS).
#include <cstddef>
#include <cstdint>

namespace sparta {

struct MemoryStats {
  size_t current_bytes = 0;
  size_t peak_bytes = 0;
};

void* tracked_alloc(size_t bytes);            // 64-byte aligned, zero-size ok
void tracked_free(void* p, size_t bytes);     // bytes as given to tracked_alloc
MemoryStats memory_stats();
void reset_memory_peak();                     // peak := current

// Bump allocator: carve scratch without malloc in the hot loop. reset()
// makes all space reusable; high_water() is the most ever carved at once.
class Arena {
 public:
  explicit Arena(size_t capacity_bytes = 0);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  void reserve(size_t capacity_bytes);  // drops contents; only grows
  void* alloc(size_t bytes);            // throws sparta::Error when full
  float* floats(int64_t n) { return static_cast<float*>(alloc(sizeof(float) * static_cast<size_t>(n))); }
  void reset() { used_ = 0; }
  size_t used() const { return used_; }
  size_t capacity() const { return capacity_; }
  size_t high_water() const { return high_water_; }

 private:
  char* base_ = nullptr;
  size_t capacity_ = 0;
  size_t used_ = 0;
  size_t high_water_ = 0;
};

}  // namespace sparta
