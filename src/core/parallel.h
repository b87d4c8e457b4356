#pragma once
// CPU threading: OpenMP's persistent pool (oneDNN shares it). Compute
// threads run with flush-to-zero / denormals-are-zero, because denormal
// floats are ~100x slower on x86 and carry no useful signal in training.
#include <string>

namespace sparta {

// Sets the OpenMP thread count and enables FTZ/DAZ on every pool thread and
// the caller. n <= 0 means "all usable cores": usable_cores(), unless the
// OMP_NUM_THREADS environment variable chooses.
void init_compute_threads(int n);
int compute_threads();

// The CPUs this process may run on (sched_getaffinity: `taskset -c 0` gives
// 1), not the machine's count; at least 1.
int usable_cores();

// The warning for training with `threads` threads while the 1-minute load
// average is `load1` on `cores` usable cores, or "" when there is none to
// give: the machine is loaded when load1 exceeds cores, and then threads
// contend for the cores (on a shared 2-core machine two threads ran 2-3x
// slower than one); the message suggests train.threads = threads / 2. No warning for one
// thread (nothing fewer to suggest) or an unknown load (negative).
std::string machine_load_warning(double load1, int cores, int threads);

// machine_load_warning for the current load and compute_threads(), only the
// first time a process asks ("" afterwards, so a sweep warns once, not once
// per run); "" when the environment sets SPARTA_LOAD_WARNING=0 (e.g. a test
// suite on a busy machine). The caller shows it.
std::string machine_load_warning_once();

}  // namespace sparta
