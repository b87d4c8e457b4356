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
#include <vector>

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
    int provided = 0;
    if (!initialized) {
      // OpenMP threads compute; the gradient exchange runs on a thread of its
      // own while backward goes on, never two threads in MPI at once.
      const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
      SPARTA_CHECK(rc == MPI_SUCCESS, "[dist] MPI failed to start: ", mpi_error_text(rc));
    } else {
      MPI_Query_thread(&provided);
    }
    serialized_ = provided >= MPI_THREAD_SERIALIZED;
    // Errors come back as codes (turned into sparta::Error) instead of
    // aborting the job inside MPI.
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_dup(comm_, &probe_comm_);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm node;
    MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
    MPI_Comm_size(node, &local_size_);
    MPI_Comm_free(&node);
    ++g_groups;
  }
  ~MpiGroup() override {
    std::lock_guard<std::mutex> lock(g_mutex);
    MPI_Comm_free(&probe_comm_);
    MPI_Comm_free(&comm_);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (--g_groups == 0 && !finalized) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  int local_size() const override { return local_size_; }
  bool callable_from_other_threads() const override { return serialized_; }
  void set_timeout(double seconds) override {
    SPARTA_CHECK(seconds > 0, "[dist] timeout_s must be positive, got ", seconds);
    timeout_s_ = seconds;
  }

  void all_reduce_sum(void* data, int64_t n, Elem e) override {
    const int count = mpi_count(n, "all_reduce");
    run("all_reduce", [&](MPI_Request* req) {
      return MPI_Iallreduce(MPI_IN_PLACE, data, count, mpi_type(e), MPI_SUM, comm_, req);
    });
  }
  void reduce_scatter_sum(float* out, const float* in, int64_t n) override {
    mpi_count(n * size_, "reduce_scatter");
    const int count = mpi_count(n, "reduce_scatter");
    run("reduce_scatter", [&](MPI_Request* req) {
      return MPI_Ireduce_scatter_block(in, out, count, MPI_FLOAT, MPI_SUM, comm_, req);
    });
  }
  void all_gather(void* out, const void* in, int64_t bytes) override {
    mpi_count(bytes * size_, "all_gather");
    const int count = mpi_count(bytes, "all_gather");
    run("all_gather", [&](MPI_Request* req) {
      return MPI_Iallgather(in, count, MPI_BYTE, out, count, MPI_BYTE, comm_, req);
    });
  }
  void all_to_all(void* out, const void* in, int64_t bytes) override {
    mpi_count(bytes * size_, "all_to_all");
    const int count = mpi_count(bytes, "all_to_all");
    run("all_to_all", [&](MPI_Request* req) {
      return MPI_Ialltoall(in, count, MPI_BYTE, out, count, MPI_BYTE, comm_, req);
    });
  }
  void broadcast(void* data, int64_t bytes, int root) override {
    SPARTA_CHECK(root >= 0 && root < size_, "[dist] broadcast from rank ", root, " in a group of ", size_);
    const int count = mpi_count(bytes, "broadcast");
    run("broadcast", [&](MPI_Request* req) { return MPI_Ibcast(data, count, MPI_BYTE, root, comm_, req); });
  }
  void barrier() override {
    run("barrier", [&](MPI_Request* req) { return MPI_Ibarrier(comm_, req); });
  }
  void abort(int exit_code) override { MPI_Abort(MPI_COMM_WORLD, exit_code); }

 private:
  void check(int rc, const char* what) const {
    SPARTA_CHECK(rc == MPI_SUCCESS, "[dist] rank ", rank_, ": ", what, " failed: ", mpi_error_text(rc));
  }

  // Starts a non-blocking collective (start(&req) returns MPI's code) and
  // waits for it.
  template <typename Start>
  void run(const char* what, Start&& start) const {
    MPI_Request req;
    check(start(&req), what);
    wait(req, what);
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
        throw Error(cat("[dist] rank ", rank_, ": ", what, " did not complete within ", timeout_s_,
                        " s (dist.timeout_s): ", silent_ranks()));
    }
  }

  // Which ranks stopped answering (as the end of the timeout message),
  // asked after a collective timed out. The
  // ranks that still run time out in the same collective at about the same
  // moment; each sends every other rank a word on a communicator of its own
  // and waits a short window for theirs: whoever stays silent is named.
  std::string silent_ranks() const {
    const double window = std::clamp(timeout_s_ / 4, 2.0, 30.0);
    std::vector<MPI_Request> sends, recvs;
    std::vector<int> peers, words(static_cast<size_t>(size_), 0);
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      peers.push_back(r);
      MPI_Request s, q;
      MPI_Isend(&rank_, 1, MPI_INT, r, kProbeTag, probe_comm_, &s);
      MPI_Irecv(&words[static_cast<size_t>(r)], 1, MPI_INT, r, kProbeTag, probe_comm_, &q);
      sends.push_back(s);
      recvs.push_back(q);
    }
    std::vector<bool> heard(peers.size(), false);
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(window);
    size_t pending = peers.size();
    while (pending > 0 && std::chrono::steady_clock::now() < until) {
      for (size_t i = 0; i < peers.size(); ++i) {
        if (heard[i]) continue;
        int done = 0;
        if (MPI_Test(&recvs[i], &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done) {
          heard[i] = true;
          --pending;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    // The requests stay pending: the job ends after this error anyway.
    std::string silent;
    int count = 0;
    for (size_t i = 0; i < peers.size(); ++i)
      if (!heard[i]) silent += cat(count++ ? ", " : "", peers[i]);
    if (count == 0) return "another rank died, hangs or stopped early";
    if (count == 1) return cat("rank ", silent, " does not answer: it died, hangs or stopped");
    return cat("ranks ", silent, " do not answer: they died, hang or stopped");
  }

  static constexpr int kProbeTag = 7001;
  MPI_Comm comm_ = MPI_COMM_NULL, probe_comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_size_ = 1;
  bool serialized_ = false;
  double timeout_s_;
};

}  // namespace

std::unique_ptr<ProcessGroup> make_mpi_group(const GroupOptions& options) { return std::make_unique<MpiGroup>(options); }

}  // namespace sparta::dist
