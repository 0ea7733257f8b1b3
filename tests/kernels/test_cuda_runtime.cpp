// The CUDA runtime skeleton: device tensors, host<->device copies, fill. Skipped without a GPU.
#include <gtest/gtest.h>
#include "core/ops.h"
#include "kernels/cuda/cuda.h"

using namespace loom;

namespace {
bool have_gpu() { return kernels::cuda::device_count() > 0; }
}  // namespace

TEST(CudaRuntime, RoundTripPreservesRandomValues) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device on this machine";
  Generator gen(7);
  for (DType t : {DType::f32, DType::f64, DType::bf16, DType::i64}) {
    Tensor h = ops::mul(ops::randn({37, 5}, gen, DType::f64), 100.0).to(t);
    Tensor d = h.to(Device::cuda());
    EXPECT_TRUE(d.device().is_cuda());
    Tensor back = d.to(Device::cpu());
    EXPECT_EQ(back.to_vector<double>(), h.to_vector<double>()) << dtype_name(t);
  }
}

TEST(CudaRuntime, FillOnDevice) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device on this machine";
  Tensor d = Tensor::full({1000, 3}, 2.5, DType::f32, Device::cuda());
  for (float v : d.to(Device::cpu()).to_vector<float>()) ASSERT_EQ(v, 2.5f);
}

TEST(CudaRuntime, OpsWithoutCudaKernelsSayTheyAreCpuOnly) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device on this machine";
  Tensor d = Tensor::ones({4}, DType::f32, Device::cuda());
  try {
    ops::exp(d);
    FAIL() << "expected OpError";
  } catch (const OpError& e) {
    EXPECT_NE(std::string(e.what()).find("exp"), std::string::npos);
  }
}
