#pragma once
// Tracked, 64-byte aligned allocations and a bump arena for per-step scratch.
// Every tensor and arena block goes through here, so peak_bytes() is the
// engine's own high-water mark (benchmarks also report process RSS).
#include <cstddef>
#include <cstdint>
#include <string>

namespace sparta {

struct MemoryStats {
  size_t current_bytes = 0;
  size_t peak_bytes = 0;
};

void* tracked_alloc(size_t bytes);            // 64-byte aligned, zero-size ok
void tracked_free(void* p, size_t bytes);     // bytes as given to tracked_alloc
MemoryStats memory_stats();
void reset_memory_peak();                     // peak := current

// Allocator policy for the long-running commands (main() sets it): buffers
// of every size come from the heap, and freed memory stays with the process
// for the next step. glibc's default maps every buffer over 32 MB with mmap
// and unmaps it on free, so each training step or benchmark run would fault
// in and zero its large buffers afresh (a large share of a DSA
// forward+backward at 16K tokens). The cost is that RSS stays at its
// high-water mark, as with the caching allocators of GPU frameworks.
// Returns false if glibc refused a setting (the default policy then stays).
bool retain_freed_memory();

// /proc/self/status field in MiB (e.g. "VmRSS", "VmHWM"); -1 when unavailable.
double proc_status_mib(const std::string& field);
// MemAvailable of /proc/meminfo in bytes; -1 when unavailable.
int64_t mem_available_bytes();

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
