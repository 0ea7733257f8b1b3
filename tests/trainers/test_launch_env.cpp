// Where a process sits in a run, read from each launcher's environment (the processes themselves
// are tested under mpiexec in tests/distributed/).
#include <gtest/gtest.h>
#include <cstdlib>
#include "core/error.h"
#include "trainers/distributed/communicator.h"

namespace {
using loom::distributed::launch_env;

struct Env {  // sets variables for one test and removes them after
  std::vector<std::string> names;
  void set(const char* k, const char* v) {
    setenv(k, v, 1);
    names.push_back(k);
  }
  ~Env() {
    for (const auto& n : names) unsetenv(n.c_str());
  }
};

TEST(LaunchEnv, ReadsOpenMpiAndSlurm) {
  {
    const auto e = launch_env();
    if (!std::getenv("OMPI_COMM_WORLD_SIZE") && !std::getenv("SLURM_NTASKS") && !std::getenv("PMI_SIZE")) {
      EXPECT_EQ(e.world, 1);
      EXPECT_EQ(e.launcher, "none");
    }
  }
  {
    Env env;
    env.set("SLURM_PROCID", "5");
    env.set("SLURM_NTASKS", "16");
    env.set("SLURM_LOCALID", "1");
    const auto e = launch_env();
    if (!std::getenv("OMPI_COMM_WORLD_SIZE")) {  // OpenMPI's own variables come first
      EXPECT_EQ(e.rank, 5);
      EXPECT_EQ(e.world, 16);
      EXPECT_EQ(e.local_rank, 1);
      EXPECT_EQ(e.launcher, "slurm");
    }
    env.set("OMPI_COMM_WORLD_RANK", "2");
    env.set("OMPI_COMM_WORLD_SIZE", "4");
    env.set("OMPI_COMM_WORLD_LOCAL_RANK", "0");
    const auto o = launch_env();
    EXPECT_EQ(o.rank, 2);
    EXPECT_EQ(o.world, 4);
    EXPECT_EQ(o.launcher, "openmpi");
    env.set("OMPI_COMM_WORLD_RANK", "4");
    EXPECT_THROW(launch_env(), loom::Error);  // rank 4 of 4
    env.set("OMPI_COMM_WORLD_RANK", "two");
    EXPECT_THROW(launch_env(), loom::Error);
  }
}

}  // namespace
