#pragma once
// The MPI process group (dist/mpi_group.cpp, built when CMake finds MPI;
// dist/mpi_group_none.cpp otherwise).
#include <memory>

#include "dist/process_group.h"

namespace sparta::dist {

// Whether this build has the MPI group.
bool mpi_group_available();

// Initialises MPI (once per process; finalised when the last group goes) and
// returns the group of every process of the job (MPI_COMM_WORLD).
// sparta::Error without MPI, or when MPI fails to start.
std::unique_ptr<ProcessGroup> make_mpi_group(const GroupOptions& options);

}  // namespace sparta::dist
