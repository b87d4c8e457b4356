#pragma once
// The processes of one distributed job, and the collectives they run
// together. Two implementations: a group of one process (always built; every
// collective is a copy or nothing) and MPI (built when CMake finds MPI,
// dist/mpi_group.cpp). Training code talks to this interface only, so a
// build without MPI runs everything that needs one process.
//
// Every collective blocks until it completes on this rank, and none waits
// forever: the MPI group polls a non-blocking operation and throws
// sparta::Error after `timeout_s` (a rank that died or hangs), so a job never
// hangs silently. After such an error the job cannot continue (the other
// ranks are inside a collective that will not complete): call abort().
#include <cstdint>
#include <memory>
#include <string>

namespace sparta::dist {

// What a collective's buffer holds.
enum class Elem { F32, F64, I64, Byte };
size_t elem_size(Elem e);

struct GroupOptions {
  // Seconds a collective may wait for the other ranks before it fails.
  double timeout_s = 60.0;
};

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "local" or "mpi".
  virtual std::string backend() const = 0;
  // Processes of the group on this machine (this one included): they share
  // its cores.
  virtual int local_size() const { return 1; }
  // Whether a thread other than the one that made the group may run its
  // collectives (one thread at a time, never two at once).
  virtual bool callable_from_other_threads() const { return true; }
  // Changes GroupOptions::timeout_s for the collectives that follow.
  virtual void set_timeout(double seconds) {}

  // data (n) = the element-wise sum of every rank's data (n), in place.
  virtual void all_reduce_sum(void* data, int64_t n, Elem e) = 0;
  // out (n) = the sum over ranks of their in[rank() · n, +n); in holds
  // size() · n elements.
  virtual void reduce_scatter_sum(float* out, const float* in, int64_t n) = 0;
  // out (size() · bytes): rank r's `in` (bytes) at r · bytes.
  virtual void all_gather(void* out, const void* in, int64_t bytes) = 0;
  // in (size() · bytes): block j goes to rank j; out (size() · bytes): block
  // j came from rank j.
  virtual void all_to_all(void* out, const void* in, int64_t bytes) = 0;
  // data (bytes) = root's data on every rank.
  virtual void broadcast(void* data, int64_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // Ends the whole job (every rank) with `exit_code`; for a rank that cannot
  // go on while others wait for it. Returns only for a group of one.
  virtual void abort(int exit_code) = 0;

  // Typed conveniences.
  void all_reduce_sum(float* data, int64_t n) { all_reduce_sum(data, n, Elem::F32); }
  void all_reduce_sum(double* data, int64_t n) { all_reduce_sum(data, n, Elem::F64); }
  void all_reduce_sum(int64_t* data, int64_t n) { all_reduce_sum(data, n, Elem::I64); }
};

// A group of this process alone.
std::unique_ptr<ProcessGroup> make_local_group();

// Whether this build can run MPI jobs.
bool mpi_built();

// The number of processes this one was launched among, from the launcher's
// environment (mpirun's OMPI_COMM_WORLD_SIZE, PMI_SIZE, Slurm's
// SLURM_NTASKS under srun); 1 when launched alone.
int launched_processes();

// The group this process was launched in: MPI when launched among several
// processes (or when `want_mpi`), else a group of one. sparta::Error when
// several processes were launched and the build has no MPI, naming both.
std::unique_ptr<ProcessGroup> make_process_group(const GroupOptions& options = {}, bool want_mpi = false);

}  // namespace sparta::dist
