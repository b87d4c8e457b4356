// The process-group interface: the group of one process, how a launch among
// several processes is recognised, and the error of a build without MPI.
// Real MPI jobs: tests/mpi/.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "dist/gradient_exchange.h"
#include "dist/process_group.h"

using namespace sparta;
using namespace sparta::dist;

namespace {

// Sets (or with nullptr unsets) an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value) ::setenv(name, value, 1); else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_) ::setenv(name_.c_str(), old_.c_str(), 1); else ::unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

}  // namespace

TEST(ProcessGroup, GroupOfOneCopiesOrDoesNothing) {
  auto g = make_local_group();
  EXPECT_EQ(g->rank(), 0);
  EXPECT_EQ(g->size(), 1);
  EXPECT_EQ(g->backend(), "local");
  std::vector<float> x = {1.5f, -2.0f, 3.0f};
  g->all_reduce_sum(x.data(), 3);
  EXPECT_EQ(x, (std::vector<float>{1.5f, -2.0f, 3.0f}));
  std::vector<float> out(3, 0.0f);
  g->reduce_scatter_sum(out.data(), x.data(), 3);
  EXPECT_EQ(out, x);
  std::vector<char> a = {'a', 'b'}, b(2);
  g->all_gather(b.data(), a.data(), 2);
  EXPECT_EQ(b, a);
  std::vector<char> c(2);
  g->all_to_all(c.data(), a.data(), 2);
  EXPECT_EQ(c, a);
  g->broadcast(a.data(), 2, 0);
  EXPECT_THROW(g->broadcast(a.data(), 2, 1), Error);
  EXPECT_THROW(g->all_gather(b.data(), a.data(), -1), Error);
  g->barrier();
}

TEST(ProcessGroup, LaunchedProcessesComeFromTheLauncherEnvironment) {
  ScopedEnv ompi("OMPI_COMM_WORLD_SIZE", nullptr), pmi("PMI_SIZE", nullptr), procid("SLURM_PROCID", nullptr),
      step("SLURM_STEP_NUM_TASKS", nullptr);
  EXPECT_EQ(launched_processes(), 1);
  {
    ScopedEnv s("OMPI_COMM_WORLD_SIZE", "4");
    EXPECT_EQ(launched_processes(), 4);
  }
  {
    ScopedEnv s("PMI_SIZE", "3");
    EXPECT_EQ(launched_processes(), 3);
  }
  {
    // srun's task count counts inside a job step only (SLURM_PROCID set).
    ScopedEnv s("SLURM_STEP_NUM_TASKS", "8");
    EXPECT_EQ(launched_processes(), 1);
    ScopedEnv p("SLURM_PROCID", "0");
    EXPECT_EQ(launched_processes(), 8);
  }
  for (const char* junk : {"", "two", "-2", "0", "3x"}) {
    ScopedEnv s("OMPI_COMM_WORLD_SIZE", junk);
    EXPECT_EQ(launched_processes(), 1) << junk;
  }
  // Launched alone: a group of one, MPI or not.
  EXPECT_EQ(make_process_group()->backend(), "local");
  GroupOptions bad;
  bad.timeout_s = 0;
  EXPECT_THROW(make_process_group(bad), Error);
}

// A build without MPI (scripts/test.sh builds one) launched among several
// processes says so instead of running each as a lone copy of the job.
TEST(ProcessGroup, SeveralProcessesWithoutMpiIsAClearError) {
  if (mpi_built()) GTEST_SKIP() << "this build has MPI: tests/mpi/ runs its jobs";
  ScopedEnv s("OMPI_COMM_WORLD_SIZE", "2");
  try {
    make_process_group();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("launched as one of 2 but this sparta was built without MPI"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(make_process_group({}, /*want_mpi=*/true), Error);
}

TEST(GradientExchange, OneRankKeepsTheGradientAndSendsNothing) {
  auto g = make_local_group();
  GradientExchange ex(*g, 5, 64);
  for (Compression mode : {Compression::None, Compression::BF16, Compression::Q4}) {
    std::vector<float> v = {0.1f, -2.0f, 3.3f, 0.0f, 1e-9f};
    const std::vector<float> before = v;
    EXPECT_TRUE(ex.average(v.data(), mode));
    EXPECT_EQ(v, before) << compression_name(mode);
    EXPECT_EQ(ex.last_bytes_sent(), 0);
  }
  EXPECT_EQ(ex.chunk(), 64);  // one rank's chunk: the 5 values rounded up to whole blocks
  EXPECT_EQ(parse_compression("q4"), Compression::Q4);
  EXPECT_EQ(parse_compression("bf16"), Compression::BF16);
  EXPECT_EQ(parse_compression("none"), Compression::None);
  try {
    parse_compression("int8");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "[dist] unknown compress \"int8\": choose none, bf16 or q4");
  }
  EXPECT_THROW(GradientExchange(*g, 5, 63), Error);
}
