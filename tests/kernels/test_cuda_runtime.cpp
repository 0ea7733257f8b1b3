// The CUDA runtime: device tensors, host<->device copies, fill, the caching allocator. Skipped without a GPU.
#include <gtest/gtest.h>
#include "core/device.h"
#include "core/error.h"
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

TEST(CudaRuntime, CachingAllocatorReusesBlocksAndReportsMemory) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device on this machine";
  const Device dev = Device::cuda();
  { Tensor warm = Tensor::empty({1 << 20}, DType::f32, dev); }
  const uint64_t before = memory_stats(dev).backend_allocs;
  for (int i = 0; i < 10; ++i) {
    Tensor t = Tensor::full({1 << 20}, 1.0, DType::f32, dev);
    ASSERT_EQ(ops::sum(t).item<double>(), double(1 << 20));
  }
  const MemoryStats s = memory_stats(dev);
  EXPECT_LE(s.backend_allocs - before, 2u);  // the sum's scalar and scratch at most; the big block is reused
  EXPECT_GE(s.peak_allocated, size_t(4) << 20);
  EXPECT_GE(s.reserved, s.allocated);
  empty_cache(dev);
  EXPECT_EQ(memory_stats(dev).reserved, memory_stats(dev).allocated);
}

TEST(CudaRuntime, OutOfMemorySaysHowMuch) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device on this machine";
  try {
    Tensor::empty({int64_t(1) << 42}, DType::f32, Device::cuda());  // 16 TiB
    FAIL() << "expected an out-of-memory error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("out of memory on cuda:0"), std::string::npos) << m;
    EXPECT_NE(m.find("free on the device"), std::string::npos) << m;
  }
}
