#include "core/operand_extent.h"

#ifdef SPARTA_ASAN
#include <sanitizer/asan_interface.h>

#include "core/error.h"

namespace sparta {

void check_operand_extent(const char* op, const char* name, const void* p, int64_t rows, int64_t cols, int64_t ld,
                          size_t elem_size) {
  if (rows == 0 || cols == 0) return;
  SPARTA_CHECK(ld >= cols, "[", op, "] ", name, ": leading dimension ", ld, " < ", cols, " columns");
  const size_t bytes = static_cast<size_t>((rows - 1) * ld + cols) * elem_size;
  if (const void* bad = __asan_region_is_poisoned(const_cast<void*>(p), bytes)) {
    __asan_describe_address(const_cast<void*>(bad));
    SPARTA_CHECK(false, "[", op, "] ", name, " (", rows, "x", cols, ", ld ", ld,
                 ") reaches unaddressable memory at byte ",
                 static_cast<const char*>(bad) - static_cast<const char*>(p), " of ", bytes);
  }
}

}  // namespace sparta
#endif
