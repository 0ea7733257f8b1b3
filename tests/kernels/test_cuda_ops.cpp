// Every family of CUDA kernels against the CPU reference: the same op on the same fresh random
// inputs on both devices, outputs and input gradients compared at a tolerance per dtype
// (f32 ~1e-5 relative, bf16 ~1e-2). Skipped visibly without a GPU.
#include <gtest/gtest.h>
#include <cmath>
#include <functional>
#include <string>
#include <vector>
#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"
#include "kernels/cuda/cuda.h"

using namespace loom;

namespace {

bool have_gpu() { return kernels::cuda::device_count() > 0; }

double tolerance(DType t) { return t == DType::bf16 ? 2e-2 : t == DType::f16 ? 5e-3 : t == DType::f64 ? 1e-10 : 2e-5; }

void expect_close(const Tensor& cpu, const Tensor& gpu, double tol, const std::string& what) {
  ASSERT_TRUE(gpu.device().is_cuda()) << what;
  ASSERT_EQ(cpu.shape(), gpu.shape()) << what;
  ASSERT_EQ(cpu.dtype(), gpu.dtype()) << what;
  const std::vector<double> a = cpu.to_vector<double>(), b = gpu.to_vector<double>();
  double scale = 0;
  for (double v : a) if (std::isfinite(v)) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isinf(a[i])) {
      ASSERT_TRUE(std::isnan(a[i]) ? std::isnan(b[i]) : a[i] == b[i]) << what << " at " << i << ": " << a[i] << " vs " << b[i];
      continue;
    }
    ASSERT_NEAR(a[i], b[i], tol * (std::abs(a[i]) + scale) + 1e-30) << what << " at " << i;
  }
}

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Runs fn on CPU copies and CUDA copies of the inputs; compares the output and, for floating
// inputs that the op differentiates, the gradients from the same random upstream gradient.
void compare_op(const std::string& name, const std::vector<Tensor>& inputs, const OpFn& fn, bool grads = true) {
  SCOPED_TRACE(name);
  std::vector<Tensor> cpu, gpu;
  for (const Tensor& t : inputs) {
    Tensor c = t.detach().clone(), g = t.detach().to(Device::cuda());
    if (grads && is_floating(t.dtype())) { c.set_requires_grad(true); g.set_requires_grad(true); }
    cpu.push_back(c);
    gpu.push_back(g);
  }
  Tensor yc = fn(cpu), yg = fn(gpu);
  const double tol = tolerance(inputs.front().dtype());
  expect_close(yc, yg, tol, name + " output");
  if (!grads || !yc.requires_grad()) return;
  Generator gen(99);
  Tensor up = ops::randn(yc.shape(), gen, DType::f64).to(yc.dtype());
  yc.backward(up);
  yg.backward(up.to(Device::cuda()));
  for (size_t i = 0; i < cpu.size(); ++i) {
    if (!cpu[i].requires_grad() || !cpu[i].grad().defined()) continue;
    ASSERT_TRUE(gpu[i].grad().defined()) << name << " input " << i;
    expect_close(cpu[i].grad(), gpu[i].grad(), tol * 4, name + " grad of input " + std::to_string(i));
  }
}

Tensor rnd(const Shape& s, DType t, uint64_t seed) {
  Generator g(seed);
  return ops::randn(s, g, DType::f64).to(t);
}
Tensor ids(const Shape& s, int64_t bound, uint64_t seed) {
  Generator g(seed);
  return ops::mul(ops::rand(s, g, DType::f64), double(bound) - 1e-9).to(DType::i64);
}

class CudaOps : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device on this machine";
  }
};

}  // namespace

TEST_P(CudaOps, Elementwise) {
  const DType t = GetParam();
  Tensor a = rnd({5, 1, 33}, t, 1), b = rnd({4, 33}, t, 2);
  compare_op("add broadcast", {a, b}, [](auto& x) { return ops::add(x[0], x[1]); });
  compare_op("sub transposed", {rnd({33, 4}, t, 3), b}, [](auto& x) { return ops::sub(x[0].transpose(0, 1), x[1]); });
  compare_op("mul", {a, b}, [](auto& x) { return ops::mul(x[0], x[1]); });
  compare_op("div", {a, ops::add(ops::mul(ops::exp(b), 1.0), 0.5)}, [](auto& x) { return ops::div(x[0], x[1]); });
  compare_op("exp tanh sigmoid", {a}, [](auto& x) { return ops::add(ops::exp(x[0]), ops::mul(ops::tanh(x[0]), ops::sigmoid(x[0]))); });
  compare_op("gelu erf", {a}, [](auto& x) { return ops::gelu(x[0]); });
  compare_op("gelu tanh", {a}, [](auto& x) { return ops::gelu(x[0], ops::GeluApprox::tanh); });
  compare_op("relu clamp pow", {a}, [](auto& x) { return ops::add(ops::relu(x[0]), ops::pow(ops::clamp(x[0], -0.5, 0.7), 3.0)); });
  compare_op("where masked_fill", {a, b}, [](auto& x) {
    return ops::masked_fill(ops::where(ops::gt(x[0], x[1]), x[0], x[1]), ops::lt(x[1], 0.0), -3.0); });
  compare_op("sqrt log rsqrt", {ops::add(ops::exp(a), 0.1)}, [](auto& x) { return ops::add(ops::sqrt(x[0]), ops::mul(ops::log(x[0]), ops::rsqrt(x[0]))); });
  compare_op("copy to dtype", {a}, [](auto& x) { return x[0].to(DType::f64).to(x[0].dtype()); });
  compare_op("compare", {a, b}, [](auto& x) { return ops::le(x[0], x[1]).to(x[0].dtype()); }, false);
}

TEST_P(CudaOps, Reductions) {
  const DType t = GetParam();
  Tensor x = rnd({6, 7, 300}, t, 4);
  compare_op("sum all", {x}, [](auto& v) { return ops::sum(v[0]); });
  compare_op("sum last", {x}, [](auto& v) { return ops::sum(v[0], {-1}); });
  compare_op("sum leading (bias grad)", {rnd({700, 33}, t, 5)}, [](auto& v) { return ops::sum(v[0], {0}); });
  compare_op("mean middle", {x}, [](auto& v) { return ops::mean(v[0], {1}, true); });
  compare_op("amax", {x}, [](auto& v) { return ops::amax(v[0], {0, 2}); });
  compare_op("logsumexp", {x}, [](auto& v) { return ops::logsumexp(v[0], {2}); });
  compare_op("argmax", {x}, [](auto& v) { return ops::argmax(v[0], 1).to(DType::f64); }, false);
  // Few outputs over many elements take the two-pass split (a loss, a gradient norm).
  Tensor long_rows = rnd({3, 70001}, t, 6);
  compare_op("sum all, long (two passes)", {long_rows}, [](auto& v) { return ops::sum(v[0]); });
  compare_op("sum rows, long (two passes)", {long_rows}, [](auto& v) { return ops::sum(v[0], {1}); });
  compare_op("amax rows, long (two passes)", {long_rows}, [](auto& v) { return ops::amax(v[0], {1}); });
  compare_op("sum columns of a transposed view, long", {rnd({70001, 2}, t, 7)},
             [](auto& v) { return ops::sum(v[0].transpose(0, 1), {1}); });
}

TEST_P(CudaOps, MatmulAndLinear) {
  const DType t = GetParam();
  compare_op("matmul batched", {rnd({3, 17, 40}, t, 6), rnd({3, 40, 9}, t, 7)}, [](auto& v) { return ops::matmul(v[0], v[1]); });
  compare_op("matmul broadcast transposed", {rnd({2, 3, 17, 40}, t, 8), rnd({9, 40}, t, 9)},
             [](auto& v) { return ops::matmul(v[0], v[1].transpose(0, 1)); });
  compare_op("linear gelu", {rnd({5, 11, 48}, t, 10), rnd({24, 48}, t, 11), rnd({24}, t, 12)},
             [](auto& v) { return ops::linear(v[0], v[1], v[2], ops::Activation::gelu); });
}

TEST_P(CudaOps, Rows) {
  const DType t = GetParam();
  for (int64_t n : {7, 64, 1000, 5000}) {
    Tensor x = rnd({9, n}, t, 13);
    compare_op("softmax " + std::to_string(n), {x}, [](auto& v) { return ops::softmax(v[0], -1); });
    compare_op("log_softmax " + std::to_string(n), {x}, [](auto& v) { return ops::log_softmax(v[0], -1); });
    compare_op("layer_norm " + std::to_string(n), {x, rnd({n}, t, 14), rnd({n}, t, 15)},
               [](auto& v) { return ops::layer_norm(v[0], v[1], v[2]); });
    Tensor targets = ids({9}, n, 16);
    compare_op("cross_entropy " + std::to_string(n), {x, targets},
               [](auto& v) { return ops::cross_entropy(v[0], v[1], -100, 0.1); });
  }
  compare_op("attention causal", {rnd({2, 3, 19, 16}, t, 17), rnd({2, 3, 19, 16}, t, 18), rnd({2, 3, 19, 16}, t, 19)},
             [](auto& v) {
               ops::AttentionOptions o;
               o.causal = true;
               return ops::scaled_dot_product_attention(v[0], v[1], v[2], o);
             });
}

TEST_P(CudaOps, Indexing) {
  const DType t = GetParam();
  compare_op("embedding", {rnd({50, 24}, t, 20), ids({7, 13}, 50, 21)}, [](auto& v) { return ops::embedding(v[0], v[1]); });
  compare_op("gather", {rnd({6, 40}, t, 22), ids({6, 9}, 40, 23)}, [](auto& v) { return ops::gather(v[0], 1, v[1]); });
  compare_op("index_select", {rnd({30, 8}, t, 24), ids({11}, 30, 25)}, [](auto& v) { return ops::index_select(v[0], 0, v[1]); });
  compare_op("scatter_add", {rnd({6, 40}, t, 26), ids({6, 70}, 40, 27), rnd({6, 70}, t, 28)},
             [](auto& v) { return ops::scatter_add(v[0], 1, v[1], v[2]); });
  compare_op("cat", {rnd({3, 5}, t, 29), rnd({3, 7}, t, 30)}, [](auto& v) { return ops::cat({v[0], v[1]}, 1); });
  compare_op("argsort", {rnd({5, 333}, t, 31)}, [](auto& v) { return ops::argsort(v[0], -1, true).to(DType::f64); }, false);
}

TEST_P(CudaOps, RandomMatchesCpuStreams) {
  const DType t = GetParam();
  Generator a(5), b(5);
  expect_close(ops::rand({1000}, a, t), ops::rand({1000}, b, t, Device::cuda()), tolerance(t), "rand");
  expect_close(ops::randn({1000}, a, t), ops::randn({1000}, b, t, Device::cuda()), 1e-4, "randn");
  Tensor x = rnd({4000}, t, 32);
  Generator c(6), d(6);
  expect_close(ops::dropout(x, 0.3, true, c), ops::dropout(x.to(Device::cuda()), 0.3, true, d), tolerance(t), "dropout");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaOps, ::testing::Values(DType::f32, DType::bf16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// f64 uniforms (53 bits, integer arithmetic) are the same bits on both devices, at any offset.
TEST(CudaRandom, F64UniformMatchesCpuBitwise) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device on this machine";
  Generator a(15), b(15);
  for (int64_t n : {1, 3, 1000, 65537}) {
    std::vector<double> cpu = ops::rand({n}, a, DType::f64).to_vector<double>();
    std::vector<double> gpu = ops::rand({n}, b, DType::f64, Device::cuda()).to_vector<double>();
    EXPECT_EQ(cpu, gpu) << "n = " << n;
  }
}

// The fused AdamW op on the GPU against the CPU: f32 and f64 parameters in one call, more than one
// launch's worth of tensors (48), tensors of more than one chunk (8192 elements), and empty tensors
// among them (the launch loop once stepped by 48 while skipping empties, updating some tensors twice).
TEST(CudaOptim, AdamWStepMatchesCpu) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device on this machine";
  Generator g(16);
  std::vector<ops::AdamWParam> cpu, gpu;
  for (int k = 0; k < 160; ++k) {
    const DType dt = k % 3 == 0 ? DType::f64 : DType::f32;
    const Shape s = k == 5 ? Shape{3, 9000} : k % 4 == 2 ? Shape{0, 5} : Shape{k % 7 + 1, 5};
    Tensor p = ops::randn(s, g, dt), grad = ops::randn(s, g, dt), m = ops::mul(ops::randn(s, g, dt), 0.1);
    Tensor v = ops::mul(ops::exp(ops::randn(s, g, dt)), 0.01);
    cpu.push_back({p, grad, m, v, k % 4 + 1, k % 2 ? 0.05 : 0.0});
    gpu.push_back({p.to(Device::cuda()), grad.to(Device::cuda()), m.to(Device::cuda()), v.to(Device::cuda()), k % 4 + 1,
                   k % 2 ? 0.05 : 0.0});
  }
  ops::adamw_step(cpu, 1e-2, 0.9, 0.98, 1e-8);
  ops::adamw_step(gpu, 1e-2, 0.9, 0.98, 1e-8);
  for (size_t k = 0; k < cpu.size(); ++k) {
    const double tol = tolerance(cpu[k].param.dtype());
    expect_close(cpu[k].param, gpu[k].param, tol, "param " + std::to_string(k));
    expect_close(cpu[k].exp_avg, gpu[k].exp_avg, tol, "exp_avg " + std::to_string(k));
    expect_close(cpu[k].exp_avg_sq, gpu[k].exp_avg_sq, tol, "exp_avg_sq " + std::to_string(k));
  }
}

// An index out of range on the GPU: the op does not wait for the device, its kernel reads and
// writes nothing out of range, and the next read back to the host throws naming the op and the
// index; the fault is cleared once reported. With LOOM_CUDA_SYNC=1 the op itself throws.
TEST(CudaIndexChecks, DeferredUntilTheNextReadAndNamed) {
  if (!have_gpu()) GTEST_SKIP() << "no GPU";
  const Device gpu = Device::cuda();
  Tensor weight = ops::randn({10, 4}).to(gpu);
  Tensor ids = Tensor::from(std::vector<int64_t>{1, 12, 3}, {3}).to(gpu);
  Tensor e;
  ASSERT_NO_THROW(e = ops::embedding(weight, ids));  // no synchronisation here
  try {
    (void)e.to_vector<float>();
    ADD_FAILURE() << "the out-of-range id was not reported";
  } catch (const OpError& err) {
    const std::string m = err.what();
    EXPECT_NE(m.find("embedding"), std::string::npos) << m;
    EXPECT_NE(m.find("index 12"), std::string::npos) << m;
  }
  EXPECT_NO_THROW((void)weight.to_vector<float>());  // reported once
  Tensor logits = ops::randn({3, 5}).to(gpu);
  Tensor targets = Tensor::from(std::vector<int64_t>{0, -100, 4}, {3}).to(gpu);
  EXPECT_NO_THROW((void)ops::cross_entropy(logits, targets).item<float>());  // ignore_index is allowed
}
