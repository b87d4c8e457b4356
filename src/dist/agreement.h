#pragma once
// Failing together. In a distributed job a rank that fails on its own
// leaves the others waiting inside their next collective until
// dist.timeout_s; at the points where every rank can fail for a reason of
// its own (reading the config, setting up a run) the ranks instead agree on
// the outcome first.
#include <exception>

#include "dist/process_group.h"

namespace sparta::dist {

// Every rank calls this with the exception it caught (or nullptr). When no
// rank failed it returns. Otherwise every rank throws: the lowest rank that
// failed throws its own error's message as JobStopped (so an error all
// ranks share, such as a bad config, is printed once); every other rank
// throws AlreadyReported (core/error.h). A group of one rethrows its own
// error as it is. Errors of the agreement itself (a rank that died) are
// thrown as they are.
void agree_on_failure(ProcessGroup& group, std::exception_ptr own);

}  // namespace sparta::dist
