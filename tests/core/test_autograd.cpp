// The autograd engine: graph shapes (shared subgraphs, reuse, diamonds), accumulation, retain_graph,
// no_grad, detach, hooks, explicit output gradients, freeing of saved tensors. Expected gradients
// are worked out by hand from the formulas, on random inputs.
#include <gtest/gtest.h>
#include <cmath>
#include "core/ops.h"

using namespace loom;
namespace ops = loom::ops;

namespace {

Tensor random_leaf(const Shape& shape, uint64_t seed) {
  Generator g(seed);
  return ops::randn(shape, g, DType::f64).set_requires_grad();
}

void expect_near(const std::vector<double>& got, const std::vector<double>& want, double tol = 1e-12) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << "at " << i;
}

}  // namespace

TEST(Autograd, SharedSubgraphSumsBothPaths) {
  Tensor x = random_leaf({5}, 1);
  Tensor y = ops::mul(x, x);                                   // y = x²
  Tensor z = ops::sum(ops::add(y, ops::mul(y, 3.0)));          // z = Σ 4x²
  z.backward();
  std::vector<double> want;
  for (double v : x.to_vector<double>()) want.push_back(8 * v);
  expect_near(x.grad().to_vector<double>(), want);
}

TEST(Autograd, DiamondWithReusedLeaf) {
  Tensor x = random_leaf({3, 2}, 2);
  Tensor a = ops::exp(x), b = ops::tanh(x);
  Tensor z = ops::sum(ops::mul(a, b));  // d/dx e^x tanh x = e^x tanh x + e^x (1 - tanh² x)
  z.backward();
  std::vector<double> want;
  for (double v : x.to_vector<double>()) want.push_back(std::exp(v) * std::tanh(v) + std::exp(v) * (1 - std::pow(std::tanh(v), 2)));
  expect_near(x.grad().to_vector<double>(), want);
}

TEST(Autograd, GradientsAccumulateAcrossBackwards) {
  Tensor x = random_leaf({4}, 3);
  ops::sum(ops::mul(x, 2.0)).backward();
  ops::sum(ops::mul(x, x)).backward();
  std::vector<double> want;
  for (double v : x.to_vector<double>()) want.push_back(2 + 2 * v);
  expect_near(x.grad().to_vector<double>(), want);
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, SecondBackwardNeedsRetainGraph) {
  Tensor x = random_leaf({3}, 4);
  Tensor z = ops::sum(ops::exp(x));
  z.backward(Tensor(), /*retain_graph=*/true);
  z.backward();
  std::vector<double> want;
  for (double v : x.to_vector<double>()) want.push_back(2 * std::exp(v));
  expect_near(x.grad().to_vector<double>(), want);
  try {
    z.backward();
    FAIL() << "a third backward through a freed graph must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("second time"), std::string::npos) << e.what();
  }
}

TEST(Autograd, SavedTensorsAreFreedAfterBackward) {
  Tensor a = random_leaf({8}, 5), b = random_leaf({8}, 6);
  const long before = b.impl().storage.use_count();
  Tensor loss = ops::sum(ops::mul(a, b));  // mul saves a view of b for a's gradient
  EXPECT_GT(b.impl().storage.use_count(), before);
  loss.backward();
  EXPECT_EQ(b.impl().storage.use_count(), before);
}

TEST(Autograd, NoGradGuardRecordsNothing) {
  Tensor x = random_leaf({3}, 7);
  Tensor y;
  {
    NoGradGuard guard;
    y = ops::exp(x);
  }
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
  Tensor z = ops::exp(x);
  EXPECT_TRUE(z.requires_grad());
}

TEST(Autograd, DetachStopsGradient) {
  Tensor x = random_leaf({3}, 8);
  Tensor z = ops::sum(ops::mul(x, x.detach()));  // gradient flows only through the first factor
  z.backward();
  expect_near(x.grad().to_vector<double>(), x.to_vector<double>());
}

TEST(Autograd, InputsNotRequiringGradGetNone) {
  Tensor x = random_leaf({3}, 9);
  Generator g(10);
  Tensor c = ops::randn({3}, g, DType::f64);
  ops::sum(ops::mul(x, c)).backward();
  EXPECT_FALSE(c.grad().defined());
  expect_near(x.grad().to_vector<double>(), c.to_vector<double>());
}

TEST(Autograd, ExplicitOutputGradientForNonScalar) {
  Tensor x = random_leaf({2, 3}, 11);
  Tensor y = ops::mul(x, 3.0);
  EXPECT_THROW(y.backward(), Error);  // not a scalar
  Generator g(12);
  Tensor gy = ops::randn({2, 3}, g, DType::f64);
  EXPECT_THROW(y.backward(ops::randn({3}, g, DType::f64)), Error);  // wrong shape
  y.backward(gy);
  std::vector<double> want;
  for (double v : gy.to_vector<double>()) want.push_back(3 * v);
  expect_near(x.grad().to_vector<double>(), want);
}

TEST(Autograd, HookFiresOnceWithTheFinalGradient) {
  Tensor x = random_leaf({4}, 13);
  int calls = 0;
  std::vector<double> seen;
  x.register_grad_hook([&](const Tensor& g) { ++calls; seen = g.to_vector<double>(); });
  // x reaches the loss through three paths; the hook must see their sum, once.
  Tensor z = ops::sum(ops::add(ops::add(ops::mul(x, 2.0), ops::mul(x, x)), ops::exp(x)));
  z.backward();
  EXPECT_EQ(calls, 1);
  std::vector<double> want;
  for (double v : x.to_vector<double>()) want.push_back(2 + 2 * v + std::exp(v));
  expect_near(seen, want);
  expect_near(x.grad().to_vector<double>(), want);
}

TEST(Autograd, HooksFireBeforeEarlierLayersFinish) {
  // Data parallelism overlaps communication with backward: the gradient of a parameter used near
  // the output is final (its hook fires) before that of a parameter used near the input.
  Tensor w1 = random_leaf({3, 3}, 14), w2 = random_leaf({3, 3}, 15);
  Generator g(16);
  Tensor x = ops::randn({2, 3}, g, DType::f64);
  std::vector<std::string> order;
  w1.register_grad_hook([&](const Tensor&) { order.push_back("w1"); });
  w2.register_grad_hook([&](const Tensor&) { order.push_back("w2"); });
  ops::sum(ops::linear(ops::tanh(ops::linear(x, w1)), w2)).backward();
  ASSERT_EQ(order.size(), 2u);
  EXPECT_EQ(order[0], "w2");
  EXPECT_EQ(order[1], "w1");
}

TEST(Autograd, InPlaceOnLeafNeedsNoGrad) {
  Tensor x = random_leaf({3}, 17);
  EXPECT_THROW(x.add_(Tensor::ones({3}, DType::f64)), OpError);
  {
    NoGradGuard guard;
    const double before = x.to_vector<double>()[0];
    x.add_(Tensor::ones({3}, DType::f64), 0.5);
    EXPECT_DOUBLE_EQ(x.to_vector<double>()[0], before + 0.5);
  }
}

TEST(Autograd, OnlyFloatingLeavesRequireGrad) {
  Tensor i = Tensor::arange(4);
  EXPECT_THROW(i.set_requires_grad(), OpError);
  Tensor x = random_leaf({2}, 18);
  Tensor y = ops::exp(x);
  EXPECT_THROW(y.set_requires_grad(), OpError);  // not a leaf
}

TEST(Autograd, BackwardOfLeafItself) {
  Tensor x = random_leaf({1}, 19);
  x.backward();
  expect_near(x.grad().to_vector<double>(), {1.0});
}

TEST(Autograd, DeepChainDoesNotOverflow) {
  Tensor x = random_leaf({2}, 20);
  Tensor y = x;
  for (int i = 0; i < 20000; ++i) y = ops::add(y, 1e-4);
  ops::sum(y).backward();
  expect_near(x.grad().to_vector<double>(), {1.0, 1.0});
}

TEST(Autograd, L2NormalizeOfZeroRowHasFiniteGradient) {
  Tensor x = Tensor::zeros({2, 3}, DType::f64).set_requires_grad();
  Tensor y = ops::l2_normalize(x, -1);
  for (double v : y.to_vector<double>()) EXPECT_EQ(v, 0.0);
  ops::sum(y).backward();
  for (double v : x.grad().to_vector<double>()) EXPECT_TRUE(std::isfinite(v)) << v;
}

TEST(Autograd, OutputGradientMustMatchDtype) {
  Generator g(21);
  Tensor x = ops::randn({3}, g).set_requires_grad();
  Tensor y = ops::relu(x);  // f32; its rule hands the gradient and x to one kernel
  EXPECT_THROW(y.backward(Tensor::ones({3}, DType::f64)), Error);
  y.backward(Tensor::ones({3}, DType::f32));
  EXPECT_TRUE(x.grad().defined());
}

TEST(Autograd, EmptyLastDimIsNoCrash) {
  Tensor e = Tensor::empty({2, 0});
  EXPECT_EQ(ops::softmax(e, -1).shape(), (Shape{2, 0}));
  EXPECT_EQ(ops::log_softmax(e, -1).shape(), (Shape{2, 0}));
  EXPECT_EQ(ops::layer_norm(e, Tensor(), Tensor()).shape(), (Shape{2, 0}));
}

TEST(Autograd, InPlaceOpsRefuseOrHandleAliasing) {
  Tensor x = Tensor::from(std::vector<double>{1, 2, 3, 4}, {2, 2});
  x.add_(x.transpose(0, 1));  // reads a copy: x + xᵀ
  EXPECT_EQ(x.to_vector<double>(), (std::vector<double>{2, 5, 5, 8}));
  Tensor row = Tensor::zeros({1, 3}, DType::f64);
  EXPECT_THROW(row.expand({4, 3}).add_(Tensor::ones({4, 3}, DType::f64)), OpError);
  EXPECT_THROW(Tensor::ones({1}).expand({-2}), OpError);
  EXPECT_THROW(Tensor::scalar(1.0).size(0), OpError);
}
