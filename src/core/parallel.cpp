#include "core/parallel.h"

#include <omp.h>
#include <xmmintrin.h>

namespace sparta {
namespace {
void set_ftz_daz() {
  // Bit 15 = FTZ, bit 6 = DAZ.
  _mm_setcsr(_mm_getcsr() | 0x8040);
}
}  // namespace

void init_compute_threads(int n) {
  if (n > 0) omp_set_num_threads(n);
  set_ftz_daz();
#pragma omp parallel
  { set_ftz_daz(); }
}

int compute_threads() { return omp_get_max_threads(); }

}  // namespace sparta
