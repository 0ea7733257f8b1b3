// The NCCL communicator (CUDA tensors). Separate from communicator.h so that nothing else needs to
// know whether loom was built with NCCL.
#pragma once
#include "trainers/distributed/communicator.h"

namespace loom::distributed {

// A communicator over NCCL on CUDA device `device` (usually the local rank), with as many ranks as
// `bootstrap` (distributed::mpi() for several processes, single_process() for one), which carries
// rank 0's ncclUniqueId to the others. loom::Error when loom was built without CUDA and NCCL.
std::shared_ptr<Communicator> nccl(std::shared_ptr<Communicator> bootstrap, int device);

}  // namespace loom::distributed
