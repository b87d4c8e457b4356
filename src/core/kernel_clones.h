#pragma once
// SPARTA_KERNEL_CLONES: per-ISA clones of a hot loop. In core so that core's
// own kernels (convert.cpp) can use it without reaching up into ops.
//
// Marks a kernel for GCC function multiversioning: an AVX-512, an AVX2 and a
// baseline x86-64 clone, picked once at load time by the CPU. The clones are
// whole ISA levels (x86-64-v4: AVX-512 F/BW/CD/DQ/VL; x86-64-v3: AVX2 + FMA),
// not single features: with "avx512f" alone, zmm and scalar code could fuse
// a*b+c into an FMA but ymm/xmm code (AVX512VL) could not, so a loop's result
// depended on how the vectoriser split it — i.e. on the data's alignment. The
// FMA unit is used everywhere in a clone or nowhere (baseline). The CMake
// option SPARTA_PORTABLE_KERNELS builds the baseline only, so the tests can
// exercise the path that machines without AVX2 run.
#ifdef SPARTA_NO_TARGET_CLONES
#define SPARTA_KERNEL_CLONES
#else
#define SPARTA_KERNEL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
