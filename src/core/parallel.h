#pragma once
// CPU threading: OpenMP's persistent pool (oneDNN shares it). Compute
// threads run with flush-to-zero / denormals-are-zero, because denormal
// floats are ~100x slower on x86 and carry no useful signal in training.
namespace sparta {

// Sets the OpenMP thread count (n <= 0: keep the default) and enables
// FTZ/DAZ on every pool thread and the caller.
void init_compute_threads(int n);
int compute_threads();

}  // namespace sparta
