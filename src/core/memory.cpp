#include "core/memory.h"

#include <malloc.h>

#include <atomic>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <new>
#include <sstream>
#include <string>

#include "core/error.h"

namespace sparta {
namespace {
std::atomic<size_t> g_current{0};
std::atomic<size_t> g_peak{0};
constexpr size_t kAlign = 64;
size_t round_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
}  // namespace

void* tracked_alloc(size_t bytes) {
  size_t n = round_up(bytes == 0 ? kAlign : bytes);
  void* p = std::aligned_alloc(kAlign, n);
  if (!p) throw Error(cat("out of memory allocating ", bytes, " bytes"));
  size_t cur = g_current.fetch_add(n) + n;
  size_t peak = g_peak.load();
  while (cur > peak && !g_peak.compare_exchange_weak(peak, cur)) {
  }
  return p;
}

void tracked_free(void* p, size_t bytes) {
  if (!p) return;
  g_current.fetch_sub(round_up(bytes == 0 ? kAlign : bytes));
  std::free(p);
}

bool retain_freed_memory() {
  // M_MMAP_MAX = 0: no allocation is served by mmap (whose chunks go back to
  // the kernel on free); M_TRIM_THRESHOLD: free() gives the heap's top back
  // only beyond 2 GiB of free memory there.
  return mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1;
}

MemoryStats memory_stats() { return {g_current.load(), g_peak.load()}; }

void reset_memory_peak() { g_peak.store(g_current.load()); }

Arena::Arena(size_t capacity_bytes) { reserve(capacity_bytes); }

Arena::~Arena() { tracked_free(base_, capacity_); }

void Arena::reserve(size_t capacity_bytes) {
  used_ = 0;
  if (capacity_bytes <= capacity_) return;
  tracked_free(base_, capacity_);
  base_ = nullptr;
  capacity_ = 0;
  base_ = static_cast<char*>(tracked_alloc(capacity_bytes));
  capacity_ = capacity_bytes;
}

void* Arena::alloc(size_t bytes) {
  size_t n = round_up(bytes);
  if (used_ + n > capacity_)
    throw Error(cat("[arena] out of scratch: need ", used_ + n, " bytes, capacity ", capacity_));
  void* p = base_ + used_;
  used_ += n;
  if (used_ > high_water_) high_water_ = used_;
  return p;
}

double proc_status_mib(const std::string& field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const std::string prefix = field + ":";
  while (std::getline(f, line))
    if (line.rfind(prefix, 0) == 0) {
      std::istringstream is(line.substr(prefix.size()));
      double kb = -1;
      if (is >> kb) return kb / 1024.0;
    }
  return -1;
}

int64_t mem_available_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (f >> key >> kb) {
    std::getline(f, unit);
    if (key == "MemAvailable:") return kb * 1024;
  }
  return -1;
}

}  // namespace sparta
