#include "trainers/distributed/communicator.h"
#include <cstdlib>
#include "core/error.h"

namespace loom::distributed {
namespace {

// An integer environment variable, or -1 when it is not set; loom::Error when it is not a number.
int env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return -1;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  LOOM_CHECK(end && *end == '\0' && x >= 0 && x < (1L << 30), "environment variable ", name, "='", v,
             "' is not a rank or size");
  return int(x);
}

class Single final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world() const override { return 1; }
  int local_rank() const override { return 0; }
  std::string backend() const override { return "single"; }
  void all_reduce_sum(Tensor&) override {}
  std::unique_ptr<Pending> all_reduce_sum_async(Tensor&) override {
    struct Done final : Pending { void wait() override {} };
    return std::make_unique<Done>();
  }
  Tensor all_gather_rows(const Tensor& t, std::vector<int64_t>* counts) override {
    if (counts) *counts = {t.size(0)};
    return t;
  }
  Tensor reduce_scatter_rows(const Tensor& t, const std::vector<int64_t>& counts) override {
    LOOM_CHECK(counts.size() == 1 && counts[0] == t.size(0), "reduce_scatter_rows: counts do not match ", t.describe());
    return t;
  }
  void broadcast(Tensor&, int root) override { LOOM_CHECK(root == 0, "broadcast: root ", root, " in a world of 1"); }
  void barrier() override {}
  void abort(int code) override { std::_Exit(code); }
};

}  // namespace

LaunchEnv launch_env() {
  LaunchEnv e;
  struct Source { const char *rank, *size, *local, *name; };
  for (const Source& s : {Source{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "openmpi"},
                          Source{"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "slurm"},
                          Source{"PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "pmi"}}) {
    const int rank = env_int(s.rank), size = env_int(s.size);
    if (rank < 0 || size < 1) continue;
    LOOM_CHECK(rank < size, s.rank, "=", rank, " is not below ", s.size, "=", size);
    e.rank = rank;
    e.world = size;
    e.local_rank = std::max(0, env_int(s.local));
    e.launcher = s.name;
    return e;
  }
  return e;
}

std::shared_ptr<Communicator> single_process() {
  static std::shared_ptr<Communicator> one = std::make_shared<Single>();
  return one;
}

std::shared_ptr<Communicator> from_launcher() {
  const LaunchEnv e = launch_env();
  return e.world > 1 ? mpi() : single_process();
}

}  // namespace loom::distributed
