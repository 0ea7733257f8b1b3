// The NCCL communicator with one rank on the GPU machine (scripts/gpu-check runs the "gpu" label):
// NCCL initialises through the bootstrap, and every collective gives back what a world of one
// must, on fresh random CUDA tensors. Skips visibly without a GPU.
#include <gtest/gtest.h>
#include "core/device.h"
#include "core/ops.h"
#include "core/rng.h"
#include "trainers/distributed/nccl.h"

namespace {
using namespace loom;

TEST(Nccl, WorldOfOneOnTheGpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  auto comm = distributed::nccl(distributed::single_process(), 0);
  EXPECT_EQ(comm->backend(), "nccl");
  EXPECT_EQ(comm->world(), 1);
  Generator g(5);
  const Tensor host = ops::randn({37, 5}, g);
  Tensor t = host.to(Device::cuda(0));
  comm->all_reduce_sum(t);
  EXPECT_EQ(t.to(Device::cpu()).to_vector<float>(), host.to_vector<float>());
  comm->all_reduce_sum_async(t)->wait();
  EXPECT_EQ(t.to(Device::cpu()).to_vector<float>(), host.to_vector<float>());
  std::vector<int64_t> counts;
  Tensor all = comm->all_gather_rows(t, &counts);
  EXPECT_EQ(counts, (std::vector<int64_t>{37}));
  EXPECT_EQ(all.to(Device::cpu()).to_vector<float>(), host.to_vector<float>());
  Tensor back = comm->reduce_scatter_rows(all, counts);
  EXPECT_EQ(back.to(Device::cpu()).to_vector<float>(), host.to_vector<float>());
  comm->broadcast(t, 0);
  comm->barrier();
  EXPECT_EQ(t.to(Device::cpu()).to_vector<float>(), host.to_vector<float>());
  Tensor on_host = host.clone();
  EXPECT_THROW(comm->all_reduce_sum(on_host), Error);  // NCCL moves CUDA tensors only
}

}  // namespace
