#include "dist/process_group.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"
#include "dist/mpi_group.h"

namespace sparta::dist {

size_t elem_size(Elem e) {
  switch (e) {
    case Elem::F32: return 4;
    case Elem::F64: return 8;
    case Elem::I64: return 8;
    case Elem::Byte: return 1;
  }
  return 1;
}

namespace {

void copy_bytes(void* out, const void* in, int64_t bytes) {
  SPARTA_CHECK(bytes >= 0, "[dist] negative buffer size ", bytes);
  if (out != in && bytes > 0) std::memmove(out, in, static_cast<size_t>(bytes));
}

// Every collective of a group of one is a copy or nothing.
class LocalGroup final : public ProcessGroup {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "local"; }
  void all_reduce_sum(void*, int64_t n, Elem) override { SPARTA_CHECK(n >= 0, "[dist] negative element count ", n); }
  void reduce_scatter_sum(float* out, const float* in, int64_t n) override {
    copy_bytes(out, in, n * static_cast<int64_t>(sizeof(float)));
  }
  void all_gather(void* out, const void* in, int64_t bytes) override { copy_bytes(out, in, bytes); }
  void all_to_all(void* out, const void* in, int64_t bytes) override { copy_bytes(out, in, bytes); }
  void broadcast(void*, int64_t, int root) override {
    SPARTA_CHECK(root == 0, "[dist] broadcast from rank ", root, " in a group of one process");
  }
  void barrier() override {}
  void abort(int) override {}
};

// A positive integer from the environment variable `name`, or 0.
int env_count(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return (*end == '\0' && n > 0 && n < (1L << 24)) ? static_cast<int>(n) : 0;
}

}  // namespace

std::unique_ptr<ProcessGroup> make_local_group() { return std::make_unique<LocalGroup>(); }

bool mpi_built() { return mpi_group_available(); }

int launched_processes() {
  // mpirun (Open MPI), Hydra/PMI launchers (MPICH, Intel MPI, srun
  // --mpi=pmi2), and srun itself (a job step's task count; sbatch alone does
  // not set SLURM_STEP_NUM_TASKS for the batch script).
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const int n = env_count(name)) return n;
  if (std::getenv("SLURM_PROCID") != nullptr)
    if (const int n = env_count("SLURM_STEP_NUM_TASKS")) return n;
  return 1;
}

std::unique_ptr<ProcessGroup> make_process_group(const GroupOptions& options, bool want_mpi) {
  SPARTA_CHECK(options.timeout_s > 0, "[dist] timeout_s must be positive, got ", options.timeout_s);
  const int launched = launched_processes();
  if (launched == 1 && !want_mpi) return make_local_group();
  SPARTA_CHECK(mpi_built(), "[dist] this process was launched as one of ", launched,
               " but this sparta was built without MPI: install Open MPI (libopenmpi-dev) and rebuild, "
               "or run a single process");
  return make_mpi_group(options);
}

}  // namespace sparta::dist
