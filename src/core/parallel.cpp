#include "core/parallel.h"

#include <omp.h>
#include <sched.h>
#include <xmmintrin.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "core/error.h"
#include "core/plural.h"

namespace sparta {
namespace {
void set_ftz_daz() {
  // Bit 15 = FTZ, bit 6 = DAZ.
  _mm_setcsr(_mm_getcsr() | 0x8040);
}
}  // namespace

int usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return std::max(1, omp_get_num_procs());
}

void init_compute_threads(int n) {
  if (n > 0)
    omp_set_num_threads(n);
  else if (!std::getenv("OMP_NUM_THREADS"))
    omp_set_num_threads(usable_cores());
  set_ftz_daz();
#pragma omp parallel
  { set_ftz_daz(); }
}

int compute_threads() { return omp_get_max_threads(); }

std::string machine_load_warning(double load1, int cores, int threads) {
  if (threads <= 1 || load1 < 0 || load1 <= cores) return {};
  char load[32];
  std::snprintf(load, sizeof load, "%.2f", load1);
  return cat("the machine is busy (1-minute load average ", load, " on ", count_noun(cores, "usable core"),
             "): training with ", count_noun(threads, "thread"),
             " will be slower than usual, since threads wait for each other; consider fewer threads, e.g. "
             "--set train.threads=", std::max(1, threads / 2));
}

std::string machine_load_warning_once() {
  static bool asked = false;
  if (asked) return {};
  asked = true;
  if (const char* e = std::getenv("SPARTA_LOAD_WARNING"); e && std::string(e) == "0") return {};
  double load[1];
  if (getloadavg(load, 1) != 1) return {};
  return machine_load_warning(load[0], usable_cores(), compute_threads());
}

}  // namespace sparta
