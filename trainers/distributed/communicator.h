// Collectives between the processes of one run: one interface, an implementation per engine. MPI
// (OpenMPI) moves CPU tensors; NCCL will move CUDA tensors. loom never carries bytes itself.
//
// Every collective is called by every rank in the same order with tensors of the same dtype (and,
// where it says so, the same shape); contiguous tensors only. A rank that throws takes the whole
// run down (main aborts the communicator), so no rank waits forever on a peer that has failed.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include "core/tensor.h"

namespace loom::distributed {

// Where this process sits, read from the launcher's environment: OpenMPI's OMPI_COMM_WORLD_{RANK,
// SIZE,LOCAL_RANK}, Slurm's SLURM_{PROCID,NTASKS,LOCALID} (srun), or PMI_{RANK,SIZE} (MPICH, Intel
// MPI); world 1 when none is set.
struct LaunchEnv {
  int rank = 0, world = 1, local_rank = 0;
  std::string launcher = "none";  // openmpi | slurm | pmi | none
};
LaunchEnv launch_env();

// An all-reduce started and not yet finished; wait() completes it (the tensor then holds the result).
class Pending {
 public:
  virtual ~Pending() = default;
  virtual void wait() = 0;
  // Lets the engine move the collective along without blocking; true once it is complete. (MPI
  // progresses non-blocking collectives only inside MPI calls, so a caller polls this meanwhile.)
  virtual bool test() { return false; }
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  virtual int local_rank() const = 0;
  virtual std::string backend() const = 0;  // "single", "mpi", "nccl"

  // In place: every rank's `t` becomes the elementwise sum over ranks (same shape everywhere).
  virtual void all_reduce_sum(Tensor& t) = 0;
  // all_reduce_sum started now, finished by wait(); `t` must stay alive and untouched until then.
  virtual std::unique_ptr<Pending> all_reduce_sum_async(Tensor& t) = 0;
  // Rows of every rank concatenated in rank order along dim 0; ranks may hold different row counts
  // (the other dims equal). counts, when given, receives each rank's row count.
  virtual Tensor all_gather_rows(const Tensor& t, std::vector<int64_t>* counts = nullptr) = 0;
  // The inverse of all_gather_rows for gradients: `t` holds rows for every rank (counts[r] of them,
  // in rank order, the same shape on every rank); rank r gets the sum over ranks of its rows.
  virtual Tensor reduce_scatter_rows(const Tensor& t, const std::vector<int64_t>& counts) = 0;
  // In place: every rank's `t` becomes root's.
  virtual void broadcast(Tensor& t, int root) = 0;
  virtual void barrier() = 0;
  // Ends every rank now with `code` (a failed rank must not leave its peers waiting).
  virtual void abort(int code) = 0;
};

// Elements per row of dim 0 (the product of the other dims): what the row collectives count in.
inline int64_t row_elements(const Tensor& t) {
  int64_t n = 1;
  for (int d = 1; d < t.dim(); ++d) n *= t.size(d);
  return n;
}

// One process: every collective is the identity.
std::shared_ptr<Communicator> single_process();

// The communicator of this process as the launcher started it: MPI when the environment says the
// world has more than one rank (loom::Error if loom was built without MPI), else single_process().
std::shared_ptr<Communicator> from_launcher();

// The MPI implementation over MPI_COMM_WORLD (initialised on first use, finalised at exit);
// loom::Error when loom was built without MPI.
std::shared_ptr<Communicator> mpi();

}  // namespace loom::distributed
