#pragma once
// Element types. Only F32 has kernels today; the others exist so storage,
// checkpoints and later BF16/F16/4-bit kernels fit without a redesign.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sparta {

enum class DType : uint8_t { F32, BF16, F16, I32, I64, U8, Q4 };

// Bytes per element; Q4 (packed 4-bit, two values a byte) reports 0 and
// callers use storage_bytes() instead.
size_t dtype_size(DType t);
// Bytes needed for n elements of type t (rounds Q4 up to whole bytes).
size_t storage_bytes(DType t, int64_t n);
// Name as used in safetensors headers: "F32", "BF16", "F16", "I32", "I64", "U8", "Q4".
std::string_view dtype_name(DType t);
// Inverse of dtype_name; throws sparta::Error naming the unknown string.
DType dtype_from_name(std::string_view name);

}  // namespace sparta
