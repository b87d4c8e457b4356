// The MPI process group. Every collective is started non-blocking and
// polled, so that a rank that died or stopped turns into an error after the
// group's timeout instead of a hang (a blocking MPI collective waits forever
// for a stopped peer). Polling also drives the operation's progress: Open
// MPI advances a non-blocking collective only inside MPI calls.
#include "dist/mpi_group.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <mutex>
#include <string>
#include <thread>

#include "core/error.h"

namespace sparta::dist {

bool mpi_group_available() { return true; }

namespace {

MPI_Datatype mpi_type(Elem e) {
  switch (e) {
    case Elem::F32: return MPI_FLOAT;
    case Elem::F64: return MPI_DOUBLE;
    case Elem::I64: return MPI_INT64_T;
    case Elem::Byte: return MPI_BYTE;
  }
  return MPI_BYTE;
}

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return std::string(text, static_cast<size_t>(len));
}

// MPI counts are ints.
int mpi_count(int64_t n, const char* what) {
  SPARTA_CHECK(n >= 0 && n <= INT_MAX, "[dist] ", what, ": ", n, " elements exceed MPI's count limit of ", INT_MAX);
  return static_cast<int>(n);
}

// MPI is initialised once per process and finalised with the last group.
std::mutex g_mutex;
int g_groups = 0;

class MpiGroup final : public ProcessGroup {
 public:
  explicit MpiGroup(const GroupOptions& options) : timeout_s_(options.timeout_s) {
    std::lock_guard<std::mutex> lock(g_mutex);
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      // OpenMP threads compute; only the thread that made the group calls MPI.
      const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
      SPARTA_CHECK(rc == MPI_SUCCESS, "[dist] MPI failed to start: ", mpi_error_text(rc));
    }
    // Errors come back as codes (turned into sparta::Error) instead of
    // aborting the job inside MPI.
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    ++g_groups;
  }
  ~MpiGroup() override {
    std::lock_guard<std::mutex> lock(g_mutex);
    MPI_Comm_free(&comm_);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (--g_groups == 0 && !finalized) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

  void all_reduce_sum(void* data, int64_t n, Elem e) override {
    MPI_Request req;
    check(MPI_Iallreduce(MPI_IN_PLACE, data, mpi_count(n, "all_reduce"), mpi_type(e), MPI_SUM, comm_, &req),
          "all_reduce");
    wait(req, "all_reduce");
  }
  void reduce_scatter_sum(float* out, const float* in, int64_t n) override {
    MPI_Request req;
    mpi_count(n * size_, "reduce_scatter");
    check(MPI_Ireduce_scatter_block(in, out, mpi_count(n, "reduce_scatter"), MPI_FLOAT, MPI_SUM, comm_, &req),
          "reduce_scatter");
    wait(req, "reduce_scatter");
  }
  void all_gather(void* out, const void* in, int64_t bytes) override {
    MPI_Request req;
    mpi_count(bytes * size_, "all_gather");
    check(MPI_Iallgather(in, mpi_count(bytes, "all_gather"), MPI_BYTE, out, static_cast<int>(bytes), MPI_BYTE, comm_,
                         &req),
          "all_gather");
    wait(req, "all_gather");
  }
  void all_to_all(void* out, const void* in, int64_t bytes) override {
    MPI_Request req;
    mpi_count(bytes * size_, "all_to_all");
    check(MPI_Ialltoall(in, mpi_count(bytes, "all_to_all"), MPI_BYTE, out, static_cast<int>(bytes), MPI_BYTE, comm_,
                        &req),
          "all_to_all");
    wait(req, "all_to_all");
  }
  void broadcast(void* data, int64_t bytes, int root) override {
    SPARTA_CHECK(root >= 0 && root < size_, "[dist] broadcast from rank ", root, " in a group of ", size_);
    MPI_Request req;
    check(MPI_Ibcast(data, mpi_count(bytes, "broadcast"), MPI_BYTE, root, comm_, &req), "broadcast");
    wait(req, "broadcast");
  }
  void barrier() override {
    MPI_Request req;
    check(MPI_Ibarrier(comm_, &req), "barrier");
    wait(req, "barrier");
  }
  void abort(int exit_code) override { MPI_Abort(MPI_COMM_WORLD, exit_code); }

 private:
  void check(int rc, const char* what) const {
    SPARTA_CHECK(rc == MPI_SUCCESS, "[dist] rank ", rank_, ": ", what, " failed: ", mpi_error_text(rc));
  }

  // Polls req until it completes: spinning first (a collective between
  // ranks of one machine takes microseconds), then sleeping up to 100 µs
  // between polls so a rank that waits for a slower one leaves it the cores.
  void wait(MPI_Request& req, const char* what) const {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const auto limit = std::chrono::duration<double>(timeout_s_);
    for (int polls = 0;; ++polls) {
      int done = 0;
      check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), what);
      if (done) return;
      if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(std::min(100, polls - 1000)));
      if ((polls & 63) == 0 && clock::now() - start > limit)
        throw Error("[dist] rank " + std::to_string(rank_) + ": " + what + " did not complete within " +
                    std::to_string(static_cast<int>(timeout_s_)) +
                    " s (dist.timeout_s): another rank died, hangs or stopped early");
    }
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  double timeout_s_;
};

}  // namespace

std::unique_ptr<ProcessGroup> make_mpi_group(const GroupOptions& options) { return std::make_unique<MpiGroup>(options); }

}  // namespace sparta::dist
