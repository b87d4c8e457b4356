#pragma once
// oneDNN's JIT code is not instrumented, so AddressSanitizer cannot see a
// GEMM / matmul that reads or writes past its buffers. Sanitizer builds check
// each operand's whole extent before handing it to oneDNN; other builds
// compile the check away.
#include <cstddef>
#include <cstdint>

#if defined(__SANITIZE_ADDRESS__)
#define SPARTA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPARTA_ASAN 1
#endif
#endif

namespace sparta {

// Throws sparta::Error ("[op] name (rows x cols, ld ld) reaches unaddressable
// memory at byte ...") when any byte of the row-major operand at p (rows x
// cols elements of elem_size bytes, row stride ld elements) is poisoned.
#ifdef SPARTA_ASAN
void check_operand_extent(const char* op, const char* name, const void* p, int64_t rows, int64_t cols, int64_t ld,
                          size_t elem_size);
#else
inline void check_operand_extent(const char*, const char*, const void*, int64_t, int64_t, int64_t, size_t) {}
#endif

}  // namespace sparta
