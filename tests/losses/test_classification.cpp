// Multi-label binary cross-entropy (losses/classification.h): against a double-precision reference at
// ordinary and extreme logits, its f64 gradient (x = 0 included, where a |x| formulation would have
// a kink), and the bad-input error.
#include <gtest/gtest.h>
#include <cmath>
#include <string>
#include "core/autograd.h"
#include "losses/classification.h"
#include "tests/layers/gradient_check.h"

using namespace loom;

TEST(MultiLabelLoss, MatchesTheReferenceEvenAtLargeLogits) {
  const std::vector<double> x = {0.3, -1.2, 0.0, 50.0, -50.0, 700.0, -700.0, 2.5};
  const std::vector<double> y = {1, 0, 1, 0, 1, 1, 0, 0};
  double want = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    // log(1 + e^x) - x y, with log1p(e^-|x|) + max(x, 0) for log(1 + e^x)
    want += std::log1p(std::exp(-std::abs(x[i]))) + std::max(x[i], 0.0) - x[i] * y[i];
  }
  want /= double(x.size());
  const Tensor got64 = binary_cross_entropy_with_logits(Tensor::from(x, {2, 4}, DType::f64), Tensor::from(y, {2, 4}, DType::f64));
  EXPECT_NEAR(got64.item<double>(), want, 1e-12);
  const Tensor got32 = binary_cross_entropy_with_logits(Tensor::from(x, {2, 4}).to(DType::f32), Tensor::from(y, {2, 4}).to(DType::f32));
  EXPECT_TRUE(std::isfinite(got32.item<double>()));
  EXPECT_NEAR(got32.item<double>(), want, 1e-4 * want);
}

TEST(Gradient, MultiLabelLossF64) {
  Generator gen(3);
  Tensor x = ops::randn({3, 5}, gen, DType::f64);
  {
    NoGradGuard ng;
    x.data_ptr<double>()[0] = 0.0;  // sigmoid(0) - y, not the kink of max(x, 0)
    x.data_ptr<double>()[1] = 30.0;
  }
  x.set_requires_grad(true);
  const Tensor y = ops::gt(ops::randn({3, 5}, gen, DType::f64), 0.0).to(DType::f64);
  loom::testing_layers::gradient_check([&] { return binary_cross_entropy_with_logits(x, y); }, {{"logits", x}});
  // The gradient is (sigmoid(x) - y) / (N C) everywhere.
  x.zero_grad();
  binary_cross_entropy_with_logits(x, y).backward();
  const std::vector<double> g = x.grad().to_vector<double>(), xv = x.to_vector<double>(), yv = y.to_vector<double>();
  for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], (1 / (1 + std::exp(-xv[i])) - yv[i]) / 15.0, 1e-14) << i;
}

TEST(MultiLabelLoss, RefusesTargetsOfAnotherShape) {
  try {
    binary_cross_entropy_with_logits(Tensor::zeros({2, 3}), Tensor::zeros({2, 4}));
    ADD_FAILURE() << "no error";
  } catch (const OpError& e) {
    EXPECT_NE(std::string(e.what()).find("binary_cross_entropy_with_logits: logits f32[2,3] and targets f32[2,4]"), std::string::npos)
        << e.what();
  }
}

TEST(SoftTargetLoss, IsCrossEntropyAgainstADistributionWithItsGradient) {
  const std::vector<double> x = {0.5, -1.0, 2.0, 0.0, 3.0, -2.0}, t = {0.7, 0.3, 0.0, 0.1, 0.1, 0.8};
  double want = 0;
  for (int r = 0; r < 2; ++r) {
    double lse = 0;
    for (int c = 0; c < 3; ++c) lse += std::exp(x[size_t(r * 3 + c)]);
    lse = std::log(lse);
    for (int c = 0; c < 3; ++c) want -= t[size_t(r * 3 + c)] * (x[size_t(r * 3 + c)] - lse);
  }
  want /= 2;
  Tensor xt = Tensor::from(x, {2, 3}, DType::f64);
  xt.set_requires_grad(true);
  const Tensor tt = Tensor::from(t, {2, 3}, DType::f64);
  EXPECT_NEAR(soft_target_cross_entropy(xt, tt).item<double>(), want, 1e-12);
  loom::testing_layers::gradient_check([&] { return soft_target_cross_entropy(xt, tt); }, {{"logits", xt}});
  // A one-hot target is the ordinary cross-entropy.
  const Tensor hard = Tensor::from(std::vector<int64_t>{0, 2}, {2});
  const Tensor onehot = Tensor::from(std::vector<double>{1, 0, 0, 0, 0, 1}, {2, 3}, DType::f64);
  EXPECT_NEAR(soft_target_cross_entropy(xt, onehot).item<double>(), ops::cross_entropy(xt, hard).item<double>(), 1e-12);
}
