// ops::adamw_step, the fused AdamW update: against the textbook scalar formula (f64 and f32, several
// steps, per-parameter step counts and weight decays, mixed dtypes in one call), bit for bit against
// the CPU kernel it dispatches to, and its operand checks.
#include <gtest/gtest.h>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>
#include "core/autograd.h"
#include "core/ops.h"
#include "kernels/cpu/cpu.h"

using namespace loom;
namespace ops = loom::ops;

namespace {

// One parameter's state in plain doubles, updated by the formula as the AdamW paper and PyTorch
// write it: bias-corrected moments, decoupled weight decay.
struct Scalar {
  std::vector<double> p, m, v;
  void step(const std::vector<double>& g, double lr, double wd, double b1, double b2, double eps, int64_t t) {
    const double bc1 = 1 - std::pow(b1, double(t)), bc2 = 1 - std::pow(b2, double(t));
    for (size_t i = 0; i < p.size(); ++i) {
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const double mhat = m[i] / bc1, vhat = v[i] / bc2;
      p[i] = p[i] - lr * wd * p[i] - lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
};

struct Param {
  Tensor p, m, v;
  Scalar ref;
  int64_t steps = 0;
  double wd;
};

Param make_param(const Shape& shape, DType dt, double wd, uint64_t seed) {
  Generator g(seed);
  Param q{ops::randn(shape, g, dt).set_requires_grad(), Tensor::zeros(shape, dt), Tensor::zeros(shape, dt), {}, 0, wd};
  q.ref = {q.p.to_vector<double>(), std::vector<double>(size_t(shape.numel())), std::vector<double>(size_t(shape.numel()))};
  return q;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << what << " at " << i;
}

// Runs `steps` updates; parameter k skips (gets no gradient on) the first skip[k] steps, so step
// counts differ. Gradients are drawn in the parameter's dtype and fed to both sides as the same values.
void run_against_formula(std::vector<Param>& ps, const std::vector<int>& skip, int steps, double tol) {
  const double b1 = 0.9, b2 = 0.98, eps = 1e-8;
  Generator gg(1234);
  NoGradGuard ng;
  for (int s = 0; s < steps; ++s) {
    const double lr = 0.01 * (s + 1);
    std::vector<ops::AdamWParam> batch;
    for (size_t k = 0; k < ps.size(); ++k) {
      if (s < skip[k]) continue;
      Param& q = ps[k];
      Tensor g = ops::randn(q.p.shape(), gg, q.p.dtype());
      ++q.steps;
      q.ref.step(g.to_vector<double>(), lr, q.wd, b1, b2, eps, q.steps);
      batch.push_back({q.p, g, q.m, q.v, q.steps, q.wd});
    }
    ops::adamw_step(batch, lr, b1, b2, eps);
  }
  for (size_t k = 0; k < ps.size(); ++k) {
    const std::string what = "param " + std::to_string(k) + " (" + ps[k].p.describe() + ")";
    expect_close(ps[k].p.to_vector<double>(), ps[k].ref.p, tol, what + " value");
    expect_close(ps[k].m.to_vector<double>(), ps[k].ref.m, tol, what + " exp_avg");
    expect_close(ps[k].v.to_vector<double>(), ps[k].ref.v, tol, what + " exp_avg_sq");
  }
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.numel() == b.numel() &&
         std::memcmp(a.raw_data(), b.raw_data(), size_t(a.numel()) * dtype_size(a.dtype())) == 0;
}

}  // namespace

TEST(AdamWStep, MatchesScalarFormulaF64) {
  std::vector<Param> ps;
  ps.push_back(make_param({4, 3}, DType::f64, 0.05, 1));
  ps.push_back(make_param({7}, DType::f64, 0.0, 2));
  ps.push_back(make_param({}, DType::f64, 0.1, 3));
  ps.push_back(make_param({2, 2, 5}, DType::f64, 0.05, 4));
  run_against_formula(ps, {0, 0, 2, 5}, 8, 1e-12);
}

TEST(AdamWStep, MatchesScalarFormulaF32) {
  std::vector<Param> ps;
  ps.push_back(make_param({33, 9}, DType::f32, 0.05, 5));
  ps.push_back(make_param({9}, DType::f32, 0.0, 6));
  run_against_formula(ps, {0, 3}, 6, 2e-5);
}

TEST(AdamWStep, MixesDtypesAndEmptyTensorsInOneCall) {
  std::vector<Param> ps;
  ps.push_back(make_param({5, 2}, DType::f32, 0.05, 7));
  ps.push_back(make_param({6}, DType::f64, 0.05, 8));
  ps.push_back(make_param({0, 3}, DType::f32, 0.05, 9));
  ps.push_back(make_param({3}, DType::f64, 0.0, 10));
  run_against_formula(ps, {0, 0, 0, 1}, 4, 2e-5);
  ops::adamw_step({}, 0.1, 0.9, 0.999, 1e-8);  // nothing to update
}

// The op hands the kernel exactly the per-tensor terms an optimizer computed by hand before it
// existed (decay = 1 - lr·wd, step_size = lr / (1 - b1^t), rbc2 = 1 / sqrt(1 - b2^t)): trained
// results and resumed runs stay bitwise identical.
TEST(AdamWStep, BitwiseEqualToTheKernelWithHostTerms) {
  for (DType dt : {DType::f32, DType::f64}) {
    Generator g(21);
    Tensor p = ops::randn({40, 25}, g, dt), m = ops::mul(ops::randn({40, 25}, g, dt), 0.1);
    Tensor v = ops::mul(ops::exp(ops::randn({40, 25}, g, dt)), 0.01), grad = ops::randn({40, 25}, g, dt);
    Tensor p2 = p.clone(), m2 = m.clone(), v2 = v.clone();
    const double lr = 3e-3, wd = 0.05, b1 = 0.9, b2 = 0.98, eps = 1e-8;
    const int64_t t = 17;
    ops::adamw_step({{p, grad, m, v, t, wd}}, lr, b1, b2, eps);
    const double bc1 = 1.0 - std::pow(b1, double(t)), bc2 = 1.0 - std::pow(b2, double(t));
    kernels::AdamWTensor k{p2.raw_data(), grad.raw_data(), m2.raw_data(), v2.raw_data(), p2.numel(), 1.0 - lr * wd,
                           lr / bc1, 1.0 / std::sqrt(bc2)};
    kernels::cpu::adamw(dt, &k, 1, b1, b2, eps);
    EXPECT_TRUE(bitwise_equal(p, p2)) << dtype_name(dt);
    EXPECT_TRUE(bitwise_equal(m, m2)) << dtype_name(dt);
    EXPECT_TRUE(bitwise_equal(v, v2)) << dtype_name(dt);
  }
}

TEST(AdamWStep, BadCallsNameTheTensor) {
  auto zeros = [](const Shape& s, DType dt = DType::f32) { return Tensor::zeros(s, dt); };
  auto error_of = [](std::vector<ops::AdamWParam> ps, double b1 = 0.9, double b2 = 0.999, double eps = 1e-8) {
    try {
      ops::adamw_step(ps, 0.1, b1, b2, eps);
    } catch (const OpError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  auto expect_error = [](const std::string& e, const std::string& want) {
    EXPECT_NE(e.find("adamw_step: "), std::string::npos) << e;
    EXPECT_NE(e.find(want), std::string::npos) << "want '" << want << "' in: " << e;
  };
  const ops::AdamWParam good{zeros({2, 3}), zeros({2, 3}), zeros({2, 3}), zeros({2, 3}), 1, 0.0};
  EXPECT_EQ(error_of({good, good}), "no error");

  ops::AdamWParam e = good;
  e.grad = Tensor();
  expect_error(error_of({good, e}), "params[1].grad is undefined");
  e = good;
  e.exp_avg = zeros({3, 2}).transpose(0, 1);
  expect_error(error_of({e}), "params[0].exp_avg is not contiguous");
  e = good;
  e.exp_avg_sq = zeros({6});
  expect_error(error_of({e}), "params[0].exp_avg_sq has shape [6], not the parameter's [2,3]");
  e = good;
  e.grad = zeros({2, 3}, DType::f64);
  expect_error(error_of({e}), "params[0].grad is f64, not the parameter's f32");
  e = {zeros({2}, DType::bf16), zeros({2}, DType::bf16), zeros({2}, DType::bf16), zeros({2}, DType::bf16), 1, 0.0};
  expect_error(error_of({e}), "params[0].param must be f32 or f64");
  e = good;
  e.step = 0;
  expect_error(error_of({e}), "params[0].step must be >= 1");
  e = good;
  e.exp_avg_sq = e.exp_avg;
  expect_error(error_of({e}), "params[0].exp_avg_sq shares storage with params[0].exp_avg");
  expect_error(error_of({good}, 1.0), "beta1 must be in [0, 1)");
  expect_error(error_of({good}, 0.9, -0.1), "beta2 must be in [0, 1)");
  expect_error(error_of({good}, 0.9, 0.999, -1.0), "eps must be >= 0");

  // A parameter that requires grad is updated in place only under NoGradGuard, as optimizers do.
  e = good;
  e.param = zeros({2, 3}).set_requires_grad();
  expect_error(error_of({e}), "params[0].param requires grad");
  NoGradGuard ng;
  EXPECT_EQ(error_of({e}), "no error");
}
