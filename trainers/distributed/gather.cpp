#include "trainers/distributed/gather.h"
#include "core/autograd.h"

namespace loom::distributed {

GatheredRows gather_rows_with_grad(Communicator& comm, const Tensor& local) {
  GatheredRows g;
  if (comm.world() == 1) {
    g.all = local;
    g.counts = {local.size(0)};
    return g;
  }
  Tensor all;
  {
    NoGradGuard ng;
    all = comm.all_gather_rows(local.contiguous(), &g.counts);
  }
  for (int r = 0; r < comm.rank(); ++r) g.offset += g.counts[size_t(r)];
  std::vector<int64_t> counts = g.counts;
  Communicator* c = &comm;
  g.all = autograd::record("gather_rows_with_grad", {local}, all, [c, counts](const Tensor& grad) {
    NoGradGuard ng;
    return std::vector<Tensor>{c->reduce_scatter_rows(grad.contiguous(), counts)};
  });
  return g;
}

}  // namespace loom::distributed
