#include "core/dtype.h"

#include "core/error.h"

namespace sparta {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::F16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::U8: return 1;
    case DType::Q4: return 0;
  }
  return 0;
}

size_t storage_bytes(DType t, int64_t n) {
  if (t == DType::Q4) return static_cast<size_t>((n + 1) / 2);
  return dtype_size(t) * static_cast<size_t>(n);
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::U8: return "U8";
    case DType::Q4: return "Q4";
  }
  return "?";
}

DType dtype_from_name(std::string_view name) {
  for (DType t : {DType::F32, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8, DType::Q4})
    if (dtype_name(t) == name) return t;
  throw Error(cat("unknown dtype '", name, "' (expected F32, BF16, F16, I32, I64, U8 or Q4)"));
}

}  // namespace sparta
