// The build without MPI: asking for the MPI group is a clear error.
#include "core/error.h"
#include "dist/mpi_group.h"

namespace sparta::dist {

bool mpi_group_available() { return false; }

std::unique_ptr<ProcessGroup> make_mpi_group(const GroupOptions&) {
  throw Error("[dist] this sparta was built without MPI: install Open MPI (libopenmpi-dev) and rebuild");
}

}  // namespace sparta::dist
