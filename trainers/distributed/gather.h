// Features of every rank, with gradient: open_clip's gather_with_grad. Forward: the rows of all
// ranks concatenated in rank order; backward: each rank receives the sum over ranks of the gradient
// of its own rows (a reduce-scatter), which is what makes a local-rows-against-all-columns loss,
// summed over ranks, differentiate exactly like the one-process loss.
#pragma once
#include <vector>
#include "trainers/distributed/communicator.h"

namespace loom::distributed {

struct GatheredRows {
  Tensor all;                   // [sum of counts, ...]
  int64_t offset = 0;           // where this rank's rows start in `all`
  std::vector<int64_t> counts;  // rows per rank
};

// `comm` must outlive the backward pass of the result. With one process: `local` itself.
GatheredRows gather_rows_with_grad(Communicator& comm, const Tensor& local);

}  // namespace loom::distributed
