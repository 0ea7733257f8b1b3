// The MPI communicator (OpenMPI from Debian) for CPU tensors. Built when CMake finds MPI
// (LOOM_HAVE_MPI); otherwise mpi() says loom was built without it.
#include "trainers/distributed/communicator.h"
#include "core/error.h"

#ifdef LOOM_HAVE_MPI
#include <mpi.h>
#include <cstdlib>
#include <mutex>
#endif

namespace loom::distributed {

#ifndef LOOM_HAVE_MPI
std::shared_ptr<Communicator> mpi() {
  throw Error("this loom was built without MPI, so it cannot join a run of several processes (install "
              "libopenmpi-dev and rebuild: scripts/setup does both)");
}
#else
namespace {

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw Error(str_cat("MPI ", what, " failed: ", std::string(msg, size_t(len))));
}

MPI_Datatype mpi_type(const Tensor& t, const char* op) {
  LOOM_CHECK(t.device().is_cpu(), op, ": the MPI communicator moves CPU tensors, got ", t.describe());
  LOOM_CHECK(t.is_contiguous(), op, ": expected a contiguous tensor, got ", t.describe());
  switch (t.dtype()) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i64: return MPI_INT64_T;
    case DType::i32: return MPI_INT32_T;
    default: throw Error(str_cat(op, ": MPI collectives take f32, f64, i32 or i64 tensors, got ", t.describe()));
  }
}

int count_of(int64_t n, const char* op) {
  LOOM_CHECK(n >= 0 && n <= (int64_t(1) << 31) - 1, op, ": ", n, " elements exceed one MPI message");
  return int(n);
}

class Mpi final : public Communicator {
 public:
  Mpi() {
    int ready = 0;
    MPI_Initialized(&ready);
    if (!ready) {
      int provided = 0;
      // Collectives come from the training thread only (loader workers never call MPI).
      check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
      std::atexit([] {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) MPI_Finalize();
      });
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &world_);
    const LaunchEnv e = launch_env();
    LOOM_CHECK(e.world == 1 || e.world == world_, "the launcher (", e.launcher, ") says the run has ", e.world,
               " processes, but MPI sees ", world_, ": start loom through mpirun or srun, not inside a job script directly");
    local_ = e.local_rank;
  }
  int rank() const override { return rank_; }
  int world() const override { return world_; }
  int local_rank() const override { return local_; }
  std::string backend() const override { return "mpi"; }

  void all_reduce_sum(Tensor& t) override {
    MPI_Datatype ty = mpi_type(t, "all_reduce_sum");
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, t.raw_data(), count_of(t.numel(), "all_reduce_sum"), ty, MPI_SUM, MPI_COMM_WORLD),
              "MPI_Allreduce");
  }
  std::unique_ptr<Pending> all_reduce_sum_async(Tensor& t) override {
    struct Request final : Pending {
      MPI_Request req = MPI_REQUEST_NULL;
      void wait() override { check_mpi(MPI_Wait(&req, MPI_STATUS_IGNORE), "MPI_Wait (all-reduce)"); }
      bool test() override {
        int done = 0;
        check_mpi(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test (all-reduce)");
        return done != 0;
      }
      ~Request() override {
        if (req != MPI_REQUEST_NULL) MPI_Wait(&req, MPI_STATUS_IGNORE);  // never free a buffer MPI still writes
      }
    };
    auto r = std::make_unique<Request>();
    MPI_Datatype ty = mpi_type(t, "all_reduce_sum_async");
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, t.raw_data(), count_of(t.numel(), "all_reduce_sum_async"), ty, MPI_SUM,
                             MPI_COMM_WORLD, &r->req),
              "MPI_Iallreduce");
    return r;
  }
  Tensor all_gather_rows(const Tensor& t_in, std::vector<int64_t>* counts_out) override {
    Tensor t = t_in.contiguous();
    MPI_Datatype ty = mpi_type(t, "all_gather_rows");
    LOOM_CHECK(t.dim() >= 1, "all_gather_rows: expected at least one dimension, got ", t.describe());
    const int64_t row = row_elements(t);
    std::vector<int64_t> rows(static_cast<size_t>(world_)), shape_check(static_cast<size_t>(world_));
    int64_t mine = t.size(0);
    check_mpi(MPI_Allgather(&mine, 1, MPI_INT64_T, rows.data(), 1, MPI_INT64_T, MPI_COMM_WORLD), "MPI_Allgather");
    check_mpi(MPI_Allgather(&row, 1, MPI_INT64_T, shape_check.data(), 1, MPI_INT64_T, MPI_COMM_WORLD), "MPI_Allgather");
    for (int r = 0; r < world_; ++r)
      LOOM_CHECK(shape_check[size_t(r)] == row, "all_gather_rows: rank ", r, " has rows of ", shape_check[size_t(r)],
                 " elements, rank ", rank_, " of ", row, " (", t.describe(), ")");
    std::vector<int> counts(static_cast<size_t>(world_)), displs(static_cast<size_t>(world_));
    int64_t total = 0;
    for (int r = 0; r < world_; ++r) {
      counts[size_t(r)] = count_of(rows[size_t(r)] * row, "all_gather_rows");
      displs[size_t(r)] = count_of(total * row, "all_gather_rows");
      total += rows[size_t(r)];
    }
    Shape shape = t.shape();
    shape[0] = total;
    Tensor out = Tensor::empty(shape, t.dtype());
    check_mpi(MPI_Allgatherv(t.raw_data(), counts[size_t(rank_)], ty, out.raw_data(), counts.data(), displs.data(), ty,
                             MPI_COMM_WORLD),
              "MPI_Allgatherv");
    if (counts_out) *counts_out = rows;
    return out;
  }
  Tensor reduce_scatter_rows(const Tensor& t_in, const std::vector<int64_t>& rows) override {
    Tensor t = t_in.contiguous();
    MPI_Datatype ty = mpi_type(t, "reduce_scatter_rows");
    LOOM_CHECK(int(rows.size()) == world_, "reduce_scatter_rows: ", rows.size(), " counts for ", world_, " ranks");
    int64_t total = 0;
    for (int64_t r : rows) total += r;
    LOOM_CHECK(t.dim() >= 1 && t.size(0) == total, "reduce_scatter_rows: ", t.describe(), " does not hold ", total, " rows");
    const int64_t row = row_elements(t);
    std::vector<int> counts(static_cast<size_t>(world_));
    for (int r = 0; r < world_; ++r) counts[size_t(r)] = count_of(rows[size_t(r)] * row, "reduce_scatter_rows");
    Shape shape = t.shape();
    shape[0] = rows[size_t(rank_)];
    Tensor out = Tensor::empty(shape, t.dtype());
    check_mpi(MPI_Reduce_scatter(t.raw_data(), out.raw_data(), counts.data(), ty, MPI_SUM, MPI_COMM_WORLD),
              "MPI_Reduce_scatter");
    return out;
  }
  void broadcast(Tensor& t, int root) override {
    MPI_Datatype ty = mpi_type(t, "broadcast");
    check_mpi(MPI_Bcast(t.raw_data(), count_of(t.numel(), "broadcast"), ty, root, MPI_COMM_WORLD), "MPI_Bcast");
  }
  void barrier() override { check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }
  void abort(int code) override { MPI_Abort(MPI_COMM_WORLD, code); }

 private:
  int rank_ = 0, world_ = 1, local_ = 0;
};

}  // namespace

std::shared_ptr<Communicator> mpi() {
  static std::mutex mu;
  static std::shared_ptr<Communicator> one;
  std::lock_guard<std::mutex> lock(mu);
  if (!one) one = std::make_shared<Mpi>();
  return one;
}
#endif

}  // namespace loom::distributed
