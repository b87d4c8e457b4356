#include "dist/agreement.h"

#include <new>
#include <vector>

#include "core/error.h"

namespace sparta::dist {

void agree_on_failure(ProcessGroup& group, std::exception_ptr own) {
  if (group.size() == 1) {
    if (own) std::rethrow_exception(own);
    return;
  }
  // One slot per rank: which ranks failed.
  std::vector<int64_t> failed(static_cast<size_t>(group.size()), 0);
  failed[static_cast<size_t>(group.rank())] = own ? 1 : 0;
  group.all_reduce_sum(failed.data(), static_cast<int64_t>(failed.size()));
  int first = -1;
  for (int r = 0; r < group.size() && first < 0; ++r)
    if (failed[static_cast<size_t>(r)] != 0) first = r;
  if (first < 0) return;
  if (first == group.rank()) {
    try {
      std::rethrow_exception(own);
    } catch (const std::bad_alloc&) {
      throw JobStopped("out of memory");
    } catch (const std::exception& e) {
      throw JobStopped(e.what());
    }
  }
  throw AlreadyReported(cat("[dist] rank ", first, " failed"));
}

}  // namespace sparta::dist
