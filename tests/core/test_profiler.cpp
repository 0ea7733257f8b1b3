// The op profiler behind `loom bench --profile`: what it attributes to which op and kernel.
#include <gtest/gtest.h>
#include <algorithm>
#include <thread>
#include "core/ops.h"
#include "core/profiler.h"
#include "core/rng.h"

namespace loom {
namespace {

const profiler::Row* find_op(const profiler::Report& r, const std::string& name) {
  auto it = std::find_if(r.ops.begin(), r.ops.end(), [&](const profiler::Row& x) { return x.name == name; });
  return it == r.ops.end() ? nullptr : &*it;
}

const profiler::Row* find_kernel(const profiler::Report& r, const std::string& name, const std::string& op) {
  auto it = std::find_if(r.kernels.begin(), r.kernels.end(),
                         [&](const profiler::Row& x) { return x.name == name && x.op == op; });
  return it == r.kernels.end() ? nullptr : &*it;
}

TEST(Profiler, AttributesForwardBackwardAndKernelsToTheirOps) {
  Generator gen(3);
  Tensor x = ops::randn({8, 16}, gen).set_requires_grad(true), w = ops::randn({4, 16}, gen).set_requires_grad(true);
  Tensor b = ops::randn({4}, gen).set_requires_grad(true);
  profiler::start();
  for (int i = 0; i < 2; ++i) {
    Tensor y = ops::linear(x, w, b);
    ops::sum(y).backward();
  }
  const profiler::Report r = profiler::stop();

  const profiler::Row* fwd = find_op(r, "linear");
  const profiler::Row* bwd = find_op(r, "linear (backward)");
  ASSERT_NE(fwd, nullptr);
  ASSERT_NE(bwd, nullptr);
  EXPECT_EQ(fwd->calls, 2);
  EXPECT_EQ(bwd->calls, 2);
  EXPECT_GT(fwd->seconds, 0);
  EXPECT_GE(fwd->bytes, 2u * 8 * 4 * sizeof(float));  // its output, twice
  // The backward's own matmuls and bias sum are folded into the rule that ran them.
  EXPECT_EQ(find_op(r, "matmul"), nullptr);
  EXPECT_NE(find_op(r, "accumulate_grad (backward)"), nullptr);
  const profiler::Row* gemm = find_kernel(r, "gemm", "linear");
  ASSERT_NE(gemm, nullptr);
  EXPECT_EQ(gemm->calls, 2);
  const profiler::Row* gemm_bwd = find_kernel(r, "gemm", "linear (backward)");
  ASSERT_NE(gemm_bwd, nullptr);
  EXPECT_EQ(gemm_bwd->calls, 4);  // dx and dw, twice

  const std::string table = profiler::format_report(r, 2, 1e-3);
  EXPECT_NE(table.find("linear (backward)"), std::string::npos);
  EXPECT_NE(table.find("gemm [linear]"), std::string::npos);
}

TEST(Profiler, RecordsNothingWhenOffOrOnAnotherThread) {
  Generator gen(4);
  Tensor x = ops::randn({4, 4}, gen);
  profiler::start();
  (void)profiler::stop();
  ops::matmul(x, x);  // after stop
  profiler::start();
  std::thread other([&] { ops::matmul(x, x); });  // a loader worker, say: not the profiled thread
  other.join();
  const profiler::Report r = profiler::stop();
  EXPECT_TRUE(r.ops.empty());
  EXPECT_TRUE(r.kernels.empty());
}

}  // namespace
}  // namespace loom
