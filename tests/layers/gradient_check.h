// Gradient checks of layers against central differences in f64 (tests/layers).
#pragma once
#include <gtest/gtest.h>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>
#include "core/autograd.h"
#include "layers/module.h"

namespace loom::testing_layers {

// Checks d(sum(f() * R))/d(leaf) by autograd against central differences, for every leaf given.
// f must be deterministic (reset any generator inside it).
inline void gradient_check(const std::function<Tensor()>& f, const std::vector<std::pair<std::string, Tensor>>& leaves,
                    double tol = 1e-6) {
  for (const auto& [n, t] : leaves) {
    ASSERT_EQ(t.dtype(), DType::f64) << n;
    Tensor(t).zero_grad();
  }
  Tensor out = f();
  std::mt19937 rng(42);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<double> R(size_t(out.numel()));
  for (double& r : R) r = u(rng);
  Tensor Rt = Tensor::from(R, out.shape(), DType::f64);
  ops::sum(ops::mul(out, Rt)).backward();
  auto loss = [&] {
    std::vector<double> o = f().to_vector<double>();
    double s = 0;
    for (size_t i = 0; i < o.size(); ++i) s += o[i] * R[i];
    return s;
  };
  const double eps = 1e-6;
  for (const auto& [name, t] : leaves) {
    Tensor g = t.grad();
    ASSERT_TRUE(g.defined()) << name << " got no gradient";
    std::vector<double> got = g.to_vector<double>();
    NoGradGuard ng;
    ASSERT_TRUE(t.is_contiguous());
    double* p = t.data_ptr<double>();
    int bad = 0;
    for (size_t j = 0; j < got.size(); ++j) {
      const double x0 = p[j];
      p[j] = x0 + eps;
      const double lp = loss();
      p[j] = x0 - eps;
      const double lm = loss();
      p[j] = x0;
      const double num = (lp - lm) / (2 * eps);
      if (std::abs(num - got[j]) > tol * (1 + std::abs(num)) && ++bad <= 3)
        ADD_FAILURE() << name << "[" << j << "]: autograd " << got[j] << ", numeric " << num;
    }
    EXPECT_EQ(bad, 0) << name;
  }
}

// Moves biases and LayerNorm parameters off their 0/1 init so every gradient path is exercised.
inline void perturb(Module& m, Generator& gen) {
  NoGradGuard ng;
  for (auto& [n, p] : m.named_parameters()) p.add_(ops::mul(ops::randn(p.shape(), gen, p.dtype()), 0.2));
}

}  // namespace loom::testing_layers
