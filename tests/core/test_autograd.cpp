// The autograd engine: graph shapes (shared subgraphs, reuse, diamonds), accumulation, retain_graph,
// no_grad, detach, hooks, explicit output gradients, freeing of saved tensors. Expected gradients
// are worked out by hand from the formulas, on random inputs.
#include <gtest/gtest.h>
#include <cmath>
#include <functional>
#include <memory>
#include <optional>
#include "core/autograd.h"
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

// ---- no reference cycles: a graph frees its tensors once the last handle goes ----
// A gradient rule that captured the very tensor its op returned would form the cycle
// output -> grad_fn -> rule -> output, so a graph abandoned before backward (a loss found to be
// non-finite) or kept by retain_graph would never be freed. Each case builds one op's graph from
// fresh leaves, drops every handle (before backward, or after a retain_graph backward), and checks
// that the output's TensorImpl and its Storage are gone.
namespace {

struct FreedCase {
  const char* name;
  std::function<Tensor()> build;  // makes its own leaves; returns the op's output
};

std::vector<FreedCase> freed_cases() {
  auto leaf = [](const Shape& s, uint64_t seed) { return random_leaf(s, seed); };
  auto ids = [](std::vector<int64_t> v) { return Tensor::from(v, {int64_t(v.size())}); };
  return {
      {"softmax last dim", [=] { return ops::softmax(leaf({3, 4}, 1), -1); }},
      {"softmax dim 0", [=] { return ops::softmax(leaf({3, 4}, 2), 0); }},
      {"log_softmax last dim", [=] { return ops::log_softmax(leaf({3, 4}, 3), -1); }},
      {"log_softmax dim 0", [=] { return ops::log_softmax(leaf({3, 4}, 4), 0); }},
      {"softmax 0-d", [=] { return ops::softmax(leaf({}, 5), 0); }},
      {"exp", [=] { return ops::exp(leaf({5}, 6)); }},
      {"tanh", [=] { return ops::tanh(leaf({5}, 7)); }},
      {"sigmoid", [=] { return ops::sigmoid(leaf({5}, 8)); }},
      {"rsqrt", [=] { return ops::rsqrt(ops::add(ops::mul(leaf({5}, 9), 0.0), 2.0)); }},
      {"relu", [=] { return ops::relu(leaf({5}, 10)); }},
      {"gelu", [=] { return ops::gelu(leaf({5}, 11)); }},
      {"clamp", [=] { return ops::clamp(leaf({5}, 12), -0.5, 0.5); }},
      {"mul", [=] { return ops::mul(leaf({2, 3}, 13), leaf({3}, 14)); }},
      {"div", [=] { return ops::div(leaf({2, 3}, 15), leaf({3}, 16)); }},
      {"where", [=] { Tensor a = leaf({4}, 17); return ops::where(ops::gt(a, 0.0), a, leaf({4}, 18)); }},
      {"sum", [=] { return ops::sum(leaf({2, 3}, 19), {1}); }},
      {"amax", [=] { return ops::amax(leaf({2, 3}, 20), {1}); }},
      {"logsumexp", [=] { return ops::logsumexp(leaf({2, 3}, 21), {1}); }},
      {"matmul", [=] { return ops::matmul(leaf({2, 3}, 22), leaf({3, 4}, 23)); }},
      {"linear", [=] { return ops::linear(leaf({2, 3}, 24), leaf({4, 3}, 25), leaf({4}, 26)); }},
      {"linear gelu", [=] {
         return ops::linear(leaf({2, 3}, 27), leaf({4, 3}, 28), leaf({4}, 29), ops::Activation::gelu);
       }},
      {"layer_norm", [=] { return ops::layer_norm(leaf({2, 4}, 30), leaf({4}, 31), leaf({4}, 32)); }},
      {"l2_normalize", [=] { return ops::l2_normalize(leaf({2, 4}, 33)); }},
      {"cross_entropy", [=] { return ops::cross_entropy(leaf({3, 4}, 34), ids({0, 3, 1})); }},
      {"mse_loss", [=] { return ops::mse_loss(leaf({3}, 35), leaf({3}, 36)); }},
      {"attention", [=] {
         ops::AttentionOptions o;
         o.causal = true;
         return ops::scaled_dot_product_attention(leaf({1, 2, 3, 4}, 37), leaf({1, 2, 3, 4}, 38),
                                                  leaf({1, 2, 3, 4}, 39), o);
       }},
      {"embedding", [=] { return ops::embedding(leaf({5, 3}, 40), ids({4, 0, 4})); }},
      {"cat", [=] { return ops::cat({leaf({2, 3}, 41), leaf({1, 3}, 42)}, 0); }},
      {"gather", [=] { return ops::gather(leaf({2, 3}, 43), 1, Tensor::from(std::vector<int64_t>{2, 0}, {2, 1})); }},
      {"index_select", [=] { return ops::index_select(leaf({4, 3}, 44), 0, ids({3, 1})); }},
      {"scatter_add", [=] {
         return ops::scatter_add(leaf({2, 3}, 45), 1, Tensor::from(std::vector<int64_t>{2, 0}, {2, 1}), leaf({2, 1}, 46));
       }},
      {"topk values", [=] { return ops::topk(leaf({2, 5}, 47), 2).values; }},
      {"dropout", [=] { Generator g(3); return ops::dropout(leaf({50}, 48), 0.5, true, g); }},
      {"views", [=] { return leaf({2, 3, 4}, 49).permute({2, 0, 1}).reshape({4, 6}).slice(1, 1, 5).unsqueeze(0).expand({2, 4, 4}); }},
      {"copies", [=] { return leaf({2, 3}, 50).transpose(0, 1).contiguous().clone().to(DType::f32); }},
  };
}

struct Watch {
  std::weak_ptr<TensorImpl> impl;
  std::weak_ptr<Storage> storage;
  explicit Watch(const Tensor& t) : impl(t.impl_ptr()), storage(t.impl().storage) {}
  bool freed() const { return impl.expired() && storage.expired(); }
};

}  // namespace

TEST(Autograd, GraphAbandonedBeforeBackwardIsFreed) {
  for (const FreedCase& c : freed_cases()) {
    std::optional<Watch> w;
    {
      Tensor y = c.build();
      ASSERT_TRUE(y.requires_grad()) << c.name;
      w.emplace(y);
    }
    EXPECT_TRUE(w->freed()) << c.name << ": output kept alive by its own graph";
  }
}

TEST(Autograd, GraphRetainedByBackwardIsFreed) {
  for (const FreedCase& c : freed_cases()) {
    std::optional<Watch> w;
    {
      Tensor y = c.build();
      y.backward(Tensor::ones(y.shape(), y.dtype()), /*retain_graph=*/true);
      w.emplace(y);
    }
    EXPECT_TRUE(w->freed()) << c.name << ": output kept alive by its retained graph";
  }
}

// Anomaly mode names the op whose forward or backward first made a NaN or an infinity.
TEST(Autograd, DetectAnomalyNamesTheOp) {
  struct Off { ~Off() { autograd::set_detect_anomaly(false); } } off;
  Tensor x = Tensor::from(std::vector<float>{1, 2, 3}, {3}).set_requires_grad(true);
  Tensor zero = Tensor::zeros({3});
  // Off: a division by zero is silent, as in PyTorch.
  EXPECT_NO_THROW(ops::sum(ops::div(x, zero)));
  autograd::set_detect_anomaly(true);
  std::string fwd;
  try {
    ops::sum(ops::div(ops::mul(x, 2.0), zero));
  } catch (const Error& e) {
    fwd = e.what();
  }
  EXPECT_NE(fwd.find("the forward of 'div' produced inf"), std::string::npos) << fwd;
  // Finite forward, infinite backward: d sqrt(x)/dx at 0.
  Tensor z = Tensor::from(std::vector<float>{0, 4, 9}, {3}).set_requires_grad(true);
  Tensor y = ops::sum(ops::sqrt(z));
  std::string bwd;
  try {
    y.backward();
  } catch (const Error& e) {
    bwd = e.what();
  }
  EXPECT_NE(bwd.find("the backward of 'sqrt' produced inf in the gradient of its input 0"), std::string::npos) << bwd;
  EXPECT_TRUE(autograd::all_finite(x));
  EXPECT_FALSE(autograd::all_finite(Tensor::from(std::vector<float>{1, std::nanf("")}, {2})));
}
