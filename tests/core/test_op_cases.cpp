// The op-case table, in the style of ggml's tests/test-backend-ops.cpp: one table of cases, each a
// loom forward and an independent reference (tests/core/reference.h). Every case is run
//   - forward in f64 and f32 (and bf16 for a subset) against the reference,
//   - gradient in f64 (differentiable cases) against central differences,
// and a second table lists bad calls that must throw loom::OpError naming the op.
// Dropout and the random ops are checked statistically at the end. Compiled a second time with
// LOOM_OP_CASES_ON_CUDA (test_cuda_op_cases), the same table runs on the GPU instead.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/device.h"
#include "core/ops.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "reference.h"

using namespace loom;
namespace ops = loom::ops;
using ref::Ref;

namespace {

// ============================================================================================
// Input specs
// ============================================================================================

// How an input reaches the op: as a fresh contiguous tensor or as a view of a bigger/other base.
enum class Layout {
  contig,      // the base itself
  transposed,  // base has the last two dims swapped; the op sees base.transpose(-1, -2)
  sliced,      // base is 3 longer along `ldim`; the op sees base.narrow(ldim, 1, n)
  expanded,    // base has size 1 along `ldim`; the op sees base.expand(shape)
};

// What values an input holds. Float kinds take the dtype under test; the others are never
// differentiated.
enum class Kind {
  normal,        // ±[0.1, 1.0]
  positive,      // [0.5, 2.0]
  grid,          // 0.2k + 0.1 ± 0.05: never within 0.05 of a multiple of 0.2 (kinks of relu/clamp)
  distinct,      // all values at least 0.08 apart (amax/argmax/sort/topk without ties)
  ints,          // from {-2, -1, 1, 2} (ties for comparisons and stable sorting)
  index,         // i64 in [0, hi)
  index_ignore,  // i64 in [0, hi), element 1 set to -100
  mask,          // bool, element 0 true and element 1 false, the rest random
  fixed,         // the given values, dtype `fixed_dtype`
};

struct In {
  std::vector<int64_t> shape;  // the shape the op sees
  Kind kind = Kind::normal;
  Layout layout = Layout::contig;
  int ldim = -1;
  int64_t hi = 0;
  DType fixed_dtype = DType::i64;
  std::vector<double> fixed;

  In T() const { In c = *this; c.layout = Layout::transposed; return c; }
  In S(int d = -1) const { In c = *this; c.layout = Layout::sliced; c.ldim = d; return c; }
  In E(int d = 0) const { In c = *this; c.layout = Layout::expanded; c.ldim = d; return c; }
  bool is_float() const {
    switch (kind) {
      case Kind::index: case Kind::index_ignore: case Kind::mask: return false;
      case Kind::fixed: return is_floating(fixed_dtype);
      default: return true;
    }
  }
  DType dtype(DType float_dtype) const {
    switch (kind) {
      case Kind::index: case Kind::index_ignore: return DType::i64;
      case Kind::mask: return DType::boolean;
      case Kind::fixed: return fixed_dtype;
      default: return float_dtype;
    }
  }
};

In X(std::vector<int64_t> s) { In i; i.shape = std::move(s); return i; }
In Pos(std::vector<int64_t> s) { In i = X(std::move(s)); i.kind = Kind::positive; return i; }
In Grid(std::vector<int64_t> s) { In i = X(std::move(s)); i.kind = Kind::grid; return i; }
In Dist(std::vector<int64_t> s) { In i = X(std::move(s)); i.kind = Kind::distinct; return i; }
In Ints(std::vector<int64_t> s) { In i = X(std::move(s)); i.kind = Kind::ints; return i; }
In Idx(std::vector<int64_t> s, int64_t hi) { In i = X(std::move(s)); i.kind = Kind::index; i.hi = hi; return i; }
In IdxIgn(std::vector<int64_t> s, int64_t hi) { In i = Idx(std::move(s), hi); i.kind = Kind::index_ignore; return i; }
In Mask(std::vector<int64_t> s) { In i = X(std::move(s)); i.kind = Kind::mask; return i; }
In Fixed(std::vector<int64_t> s, DType dt, std::vector<double> v) {
  In i = X(std::move(s));
  i.kind = Kind::fixed;
  i.fixed_dtype = dt;
  i.fixed = std::move(v);
  return i;
}

std::vector<int64_t> base_shape(const In& in) {
  std::vector<int64_t> s = in.shape;
  int n = int(s.size());
  switch (in.layout) {
    case Layout::contig: break;
    case Layout::transposed: std::swap(s[size_t(n - 1)], s[size_t(n - 2)]); break;
    case Layout::sliced: s[size_t(ref::wrap(in.ldim, n))] += 3; break;
    case Layout::expanded: s[size_t(ref::wrap(in.ldim, n))] = 1; break;
  }
  return s;
}

Tensor apply_layout(const Tensor& base, const In& in) {
  int n = int(in.shape.size());
  switch (in.layout) {
    case Layout::contig: return base;
    case Layout::transposed: return base.transpose(-1, -2);
    case Layout::sliced: {
      int d = ref::wrap(in.ldim, n);
      return base.narrow(d, 1, in.shape[size_t(d)]);
    }
    case Layout::expanded: return base.expand(Shape(in.shape));
  }
  return base;
}

Ref apply_layout(const Ref& base, const In& in) {
  int n = int(in.shape.size());
  switch (in.layout) {
    case Layout::contig: return base;
    case Layout::transposed: return ref::transpose(base, -1, -2);
    case Layout::sliced: {
      int d = ref::wrap(in.ldim, n);
      return ref::narrow(base, d, 1, in.shape[size_t(d)]);
    }
    case Layout::expanded: return ref::broadcast_to(base, in.shape);
  }
  return base;
}

std::vector<double> gen_values(const In& in, int64_t n, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> v(static_cast<size_t>(n));
  switch (in.kind) {
    case Kind::normal:
      for (double& x : v) x = (u(rng) < 0.5 ? -1.0 : 1.0) * (0.1 + 0.9 * u(rng));
      break;
    case Kind::positive:
      for (double& x : v) x = 0.5 + 1.5 * u(rng);
      break;
    case Kind::grid: {
      std::uniform_int_distribution<int> k(-8, 7);
      for (double& x : v) x = 0.2 * k(rng) + 0.1 + 0.1 * (u(rng) - 0.5);
      break;
    }
    case Kind::distinct: {
      std::vector<int64_t> perm(static_cast<size_t>(n));
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      for (int64_t i = 0; i < n; ++i)
        v[size_t(i)] = double(perm[size_t(i)] - n / 2) * 0.1 + 0.05 + 0.02 * (u(rng) - 0.5);
      break;
    }
    case Kind::ints: {
      const double choices[4] = {-2.0, -1.0, 1.0, 2.0};
      std::uniform_int_distribution<int> k(0, 3);
      for (double& x : v) x = choices[k(rng)];
      break;
    }
    case Kind::index:
    case Kind::index_ignore: {
      std::uniform_int_distribution<int64_t> k(0, in.hi - 1);
      for (double& x : v) x = double(k(rng));
      if (in.kind == Kind::index_ignore && n > 1) v[1] = -100.0;
      break;
    }
    case Kind::mask: {
      for (double& x : v) x = u(rng) < 0.5 ? 1.0 : 0.0;
      if (n > 0) v[0] = 1.0;
      if (n > 1) v[1] = 0.0;
      break;
    }
    case Kind::fixed:
      v = in.fixed;
      break;
  }
  return v;
}

double round_to(double x, DType dt) {
  switch (dt) {
    case DType::f32: return double(float(x));
    case DType::bf16: return double(float(bf16(float(x))));
    case DType::f16: return double(float(f16(float(x))));
    default: return x;
  }
}

// A fresh contiguous tensor holding `v` (already representable in `dt`).
Tensor make_tensor(const std::vector<double>& v, const std::vector<int64_t>& shape, DType dt) {
  Shape s(shape);
  switch (dt) {
    case DType::f64: return Tensor::from(v, s, DType::f64);
    case DType::f32: case DType::bf16: case DType::f16: {
      std::vector<float> f(v.begin(), v.end());
      return Tensor::from(f, s, dt);
    }
    case DType::boolean: {
      std::vector<bool> b;
      for (double x : v) b.push_back(x != 0.0);
      return Tensor::from(b, s, DType::boolean);
    }
    default: {
      std::vector<int64_t> i;
      for (double x : v) i.push_back(int64_t(x));
      return Tensor::from(i, s, dt);
    }
  }
}

// ============================================================================================
// Op cases
// ============================================================================================

using Fwd = std::function<Tensor(const std::vector<Tensor>&)>;
using RefFn = std::function<Ref(const std::vector<Ref>&)>;

struct OpCase {
  std::string name;
  std::vector<In> ins;
  Fwd fwd;
  RefFn ref;
  bool grad = true;                 // run the gradient check (float inputs only)
  bool device_grad = false;         // too large for central differences: gradients only compared across devices
  bool bf16 = false;                // also run forward in bf16
  std::optional<DType> out_dtype;   // fixed output dtype; else the float dtype under test
  double rtol64 = 1e-10, atol64 = 1e-10;
  double rtol32 = 1e-5, atol32 = 1e-5;
  double rtol16 = 1e-2, atol16 = 1e-2;
  double gtol = 1e-6;

  OpCase& nograd() { grad = false; return *this; }
  OpCase& grad_across_devices_only() { grad = false; device_grad = true; return *this; }
  OpCase& with_bf16() { bf16 = true; return *this; }
  OpCase& out(DType d) { out_dtype = d; return *this; }
  OpCase& tol32(double r, double a) { rtol32 = r; atol32 = a; return *this; }
  OpCase& tol16(double r, double a) { rtol16 = r; atol16 = a; return *this; }
  OpCase& tolgrad(double t) { gtol = t; return *this; }
};

void PrintTo(const OpCase& c, std::ostream* os) { *os << c.name; }

#define FWD(...) [](const std::vector<Tensor>& x) -> Tensor { return __VA_ARGS__; }
#define REF(...) [](const std::vector<Ref>& r) -> Ref { return __VA_ARGS__; }

Ref cmp(const Ref& a, const Ref& b, bool (*f)(double, double)) {
  return ref::zip(a, b, [f](double x, double y) { return f(x, y) ? 1.0 : 0.0; });
}
Ref undefined_ref() { return Ref{}; }

ops::AttentionOptions attn_opts(bool causal, Tensor mask = Tensor(), Tensor bias = Tensor(),
                                std::optional<double> scale = std::nullopt) {
  ops::AttentionOptions o;
  o.causal = causal;
  o.key_padding_mask = std::move(mask);
  o.bias = std::move(bias);
  o.scale = scale;
  return o;
}

// One AdamW step (step 3, weight decay 0.1, lr 1e-2, betas 0.9/0.98, eps 1e-8) on copies of
// x = {param, grad, exp_avg, exp_avg_sq}; returns the updated param (0), exp_avg (1) or exp_avg_sq (2).
Tensor adamw_result(const std::vector<Tensor>& x, int which) {
  NoGradGuard ng;
  Tensor p = x[0].clone(), m = x[2].clone(), v = x[3].clone();
  ops::adamw_step({{p, x[1].contiguous(), m, v, 3, 0.1}}, 1e-2, 0.9, 0.98, 1e-8);
  return which == 0 ? p : which == 1 ? m : v;
}
Ref adamw_reference(const std::vector<Ref>& r, int which) {
  const double lr = 1e-2, wd = 0.1, b1 = 0.9, b2 = 0.98, eps = 1e-8;
  const double bc1 = 1 - b1 * b1 * b1, bc2 = 1 - b2 * b2 * b2;
  Ref m = ref::zip(r[2], r[1], [=](double m0, double g) { return b1 * m0 + (1 - b1) * g; });
  Ref v = ref::zip(r[3], r[1], [=](double v0, double g) { return b2 * v0 + (1 - b2) * g * g; });
  if (which == 1) return m;
  if (which == 2) return v;
  Ref step = ref::zip(m, v, [=](double mi, double vi) { return (lr / bc1) * mi / (std::sqrt(vi) / std::sqrt(bc2) + eps); });
  return ref::zip(r[0], step, [=](double p, double u) { return p * (1 - lr * wd) - u; });
}

std::vector<OpCase> make_cases() {
  std::vector<OpCase> t;
  auto add = [&t](std::string name, std::vector<In> ins, Fwd f, RefFn r) -> OpCase& {
    OpCase c;
    c.name = std::move(name);
    c.ins = std::move(ins);
    c.fwd = std::move(f);
    c.ref = std::move(r);
    t.push_back(std::move(c));
    return t.back();
  };
  using ref::map;
  const DType B = DType::boolean, I64 = DType::i64;

  // ---- binary elementwise with broadcasting and views ----
  add("add_same", {X({3, 4}), X({3, 4})}, FWD(ops::add(x[0], x[1])), REF(ref::add(r[0], r[1]))).with_bf16();
  add("add_bcast_row", {X({3, 4}), X({4})}, FWD(ops::add(x[0], x[1])), REF(ref::add(r[0], r[1]))).with_bf16();
  add("add_bcast_outer", {X({3, 1}), X({1, 4})}, FWD(ops::add(x[0], x[1])), REF(ref::add(r[0], r[1])));
  add("add_bcast_3d", {X({2, 1, 4}), X({3, 1})}, FWD(ops::add(x[0], x[1])), REF(ref::add(r[0], r[1])));
  add("add_bcast_scalar_tensor", {X({2, 3}), X({})}, FWD(ops::add(x[0], x[1])), REF(ref::add(r[0], r[1])));
  add("add_transposed", {X({3, 4}).T(), X({3, 4})}, FWD(ops::add(x[0], x[1])), REF(ref::add(r[0], r[1])));
  add("add_sliced", {X({3, 4}).S(), X({3, 4}).S(0)}, FWD(ops::add(x[0], x[1])), REF(ref::add(r[0], r[1])));
  add("add_expanded", {X({3, 4}).E(0), X({3, 4})}, FWD(ops::add(x[0], x[1])), REF(ref::add(r[0], r[1])));
  add("add_both_transposed_3d", {X({2, 3, 4}).T(), X({2, 3, 4}).T()}, FWD(ops::add(x[0], x[1])),
      REF(ref::add(r[0], r[1])));
  add("sub_bcast", {X({2, 3, 4}), X({3, 1})}, FWD(ops::sub(x[0], x[1])), REF(ref::sub(r[0], r[1]))).with_bf16();
  add("sub_transposed", {X({4, 3}).T(), X({4, 3}).S()}, FWD(ops::sub(x[0], x[1])), REF(ref::sub(r[0], r[1])));
  add("mul_same", {X({3, 4}), X({3, 4})}, FWD(ops::mul(x[0], x[1])), REF(ref::mul(r[0], r[1]))).with_bf16();
  add("mul_bcast", {X({2, 3}), X({2, 1})}, FWD(ops::mul(x[0], x[1])), REF(ref::mul(r[0], r[1])));
  add("mul_bcast_both", {X({4, 1, 3}), X({2, 1})}, FWD(ops::mul(x[0], x[1])), REF(ref::mul(r[0], r[1])));
  add("mul_sliced_transposed", {X({3, 4}).S(0), X({3, 4}).T()}, FWD(ops::mul(x[0], x[1])),
      REF(ref::mul(r[0], r[1])));
  add("mul_self", {X({3, 4})}, FWD(ops::mul(x[0], x[0])), REF(ref::mul(r[0], r[0])));
  add("div_same", {X({3, 4}), Pos({3, 4})}, FWD(ops::div(x[0], x[1])), REF(ref::div(r[0], r[1]))).with_bf16();
  add("div_bcast", {X({3, 4}), Pos({4})}, FWD(ops::div(x[0], x[1])), REF(ref::div(r[0], r[1])));
  add("div_bcast_numerator", {X({4}), Pos({3, 4})}, FWD(ops::div(x[0], x[1])), REF(ref::div(r[0], r[1])));
  add("div_transposed", {X({3, 4}).T(), Pos({3, 4}).E(1)}, FWD(ops::div(x[0], x[1])), REF(ref::div(r[0], r[1])));

  // ---- scalar forms ----
  add("add_scalar", {X({3, 4})}, FWD(ops::add(x[0], 0.7)), REF(ref::add(r[0], 0.7))).with_bf16();
  add("add_scalar_expanded", {X({3, 4}).E(0)}, FWD(ops::add(x[0], -1.25)), REF(ref::add(r[0], -1.25)));
  add("mul_scalar", {X({3, 4})}, FWD(ops::mul(x[0], -1.3)), REF(ref::mul(r[0], -1.3))).with_bf16();
  add("mul_scalar_transposed", {X({3, 4}).T()}, FWD(ops::mul(x[0], 2.5)), REF(ref::mul(r[0], 2.5)));
  add("rsub", {X({3, 4})}, FWD(ops::rsub(2.0, x[0])), REF(map(r[0], [](double v) { return 2.0 - v; })));
  add("rdiv", {Pos({3, 4})}, FWD(ops::rdiv(1.5, x[0])), REF(map(r[0], [](double v) { return 1.5 / v; })));
  add("rdiv_sliced", {Pos({2, 3}).S()}, FWD(ops::rdiv(-0.5, x[0])),
      REF(map(r[0], [](double v) { return -0.5 / v; })));
  add("operators_expr", {X({3, 4}), Pos({4})},
      FWD((x[0] + x[1]) * x[0] - x[1] / 2.0 + 1.0 - (2.0 * x[0]) / x[1] + (0.5 - x[0]) * 3.0 + 1.0 / x[1] - -x[0]),
      REF(ref::zip(r[0], r[1], [](double a, double b) {
        return (a + b) * a - b / 2.0 + 1.0 - (2.0 * a) / b + (0.5 - a) * 3.0 + 1.0 / b - -a;
      })));

  // ---- unary ----
  add("neg", {X({3, 4})}, FWD(ops::neg(x[0])), REF(map(r[0], [](double v) { return -v; }))).with_bf16();
  add("exp", {X({3, 4})}, FWD(ops::exp(x[0])), REF(map(r[0], [](double v) { return std::exp(v); }))).with_bf16();
  add("exp_transposed", {X({2, 3, 4}).T()}, FWD(ops::exp(x[0])), REF(map(r[0], [](double v) { return std::exp(v); })));
  add("log", {Pos({3, 4})}, FWD(ops::log(x[0])), REF(map(r[0], [](double v) { return std::log(v); }))).with_bf16();
  add("log_sliced", {Pos({3, 4}).S()}, FWD(ops::log(x[0])), REF(map(r[0], [](double v) { return std::log(v); })));
  add("sqrt", {Pos({3, 4})}, FWD(ops::sqrt(x[0])), REF(map(r[0], [](double v) { return std::sqrt(v); }))).with_bf16();
  add("sqrt_expanded", {Pos({3, 4}).E(1)}, FWD(ops::sqrt(x[0])),
      REF(map(r[0], [](double v) { return std::sqrt(v); })));
  add("rsqrt", {Pos({3, 4})}, FWD(ops::rsqrt(x[0])), REF(map(r[0], [](double v) { return 1.0 / std::sqrt(v); })))
      .with_bf16();
  add("pow_2", {X({3, 4})}, FWD(ops::pow(x[0], 2.0)), REF(map(r[0], [](double v) { return v * v; }))).with_bf16();
  add("pow_3_transposed", {X({3, 4}).T()}, FWD(ops::pow(x[0], 3.0)),
      REF(map(r[0], [](double v) { return v * v * v; })));
  add("pow_1_5", {Pos({3, 4})}, FWD(ops::pow(x[0], 1.5)), REF(map(r[0], [](double v) { return std::pow(v, 1.5); })));
  add("pow_neg_0_5", {Pos({3, 4})}, FWD(ops::pow(x[0], -0.5)),
      REF(map(r[0], [](double v) { return std::pow(v, -0.5); })));
  add("pow_0_5_sliced", {Pos({3, 4}).S(0)}, FWD(ops::pow(x[0], 0.5)),
      REF(map(r[0], [](double v) { return std::sqrt(v); })));
  add("tanh", {X({3, 4})}, FWD(ops::tanh(x[0])), REF(map(r[0], [](double v) { return std::tanh(v); }))).with_bf16();
  add("tanh_transposed", {X({3, 4}).T()}, FWD(ops::tanh(x[0])), REF(map(r[0], [](double v) { return std::tanh(v); })));
  add("sigmoid", {X({3, 4})}, FWD(ops::sigmoid(x[0])), REF(map(r[0], ref::sigmoid))).with_bf16();
  add("sigmoid_sliced", {X({2, 5}).S()}, FWD(ops::sigmoid(x[0])), REF(map(r[0], ref::sigmoid)));
  add("relu", {Grid({3, 4})}, FWD(ops::relu(x[0])), REF(map(r[0], [](double v) { return v > 0 ? v : 0.0; })))
      .with_bf16();
  add("relu_transposed", {Grid({4, 5}).T()}, FWD(ops::relu(x[0])),
      REF(map(r[0], [](double v) { return v > 0 ? v : 0.0; })));
  add("gelu_erf", {X({3, 4})}, FWD(ops::gelu(x[0])), REF(map(r[0], ref::gelu_erf))).with_bf16();
  add("gelu_erf_wide", {Grid({4, 5})}, FWD(ops::gelu(x[0], ops::GeluApprox::erf)), REF(map(r[0], ref::gelu_erf)));
  add("gelu_tanh", {X({3, 4})}, FWD(ops::gelu(x[0], ops::GeluApprox::tanh)), REF(map(r[0], ref::gelu_tanh)))
      .with_bf16();
  add("gelu_tanh_wide", {Grid({4, 5})}, FWD(ops::gelu(x[0], ops::GeluApprox::tanh)), REF(map(r[0], ref::gelu_tanh)));
  add("gelu_transposed", {X({3, 4}).T()}, FWD(ops::gelu(x[0])), REF(map(r[0], ref::gelu_erf)));
  add("quick_gelu", {X({3, 4})}, FWD(ops::quick_gelu(x[0])), REF(map(r[0], [](double v) { return v / (1 + std::exp(-1.702 * v)); })))
      .with_bf16();
  add("quick_gelu_transposed", {X({3, 4}).T()}, FWD(ops::quick_gelu(x[0])),
      REF(map(r[0], [](double v) { return v / (1 + std::exp(-1.702 * v)); })));
  add("clamp_both", {Grid({4, 5})}, FWD(ops::clamp(x[0], -0.6, 0.4)),
      REF(map(r[0], [](double v) { return std::min(std::max(v, -0.6), 0.4); })))
      .with_bf16();
  add("clamp_min", {Grid({4, 5})}, FWD(ops::clamp(x[0], -0.2, std::nullopt)),
      REF(map(r[0], [](double v) { return std::max(v, -0.2); })));
  add("clamp_max", {Grid({4, 5})}, FWD(ops::clamp(x[0], std::nullopt, 0.6)),
      REF(map(r[0], [](double v) { return std::min(v, 0.6); })));
  add("clamp_transposed", {Grid({4, 5}).T()}, FWD(ops::clamp(x[0], -1.0, 0.8)),
      REF(map(r[0], [](double v) { return std::min(std::max(v, -1.0), 0.8); })));

  // ---- where / masked_fill ----
  add("where_bcast", {Mask({3, 1}), X({3, 4}), X({4})}, FWD(ops::where(x[0], x[1], x[2])),
      REF(ref::zip3(r[0], r[1], r[2], [](double c, double a, double b) { return c != 0 ? a : b; })));
  add("where_same", {Mask({3, 4}), X({3, 4}), X({3, 4})}, FWD(ops::where(x[0], x[1], x[2])),
      REF(ref::zip3(r[0], r[1], r[2], [](double c, double a, double b) { return c != 0 ? a : b; })))
      .with_bf16();
  add("where_transposed", {Mask({3, 4}).T(), X({3, 4}).T(), X({3, 4}).S()}, FWD(ops::where(x[0], x[1], x[2])),
      REF(ref::zip3(r[0], r[1], r[2], [](double c, double a, double b) { return c != 0 ? a : b; })));
  add("where_from_compare", {X({3, 4}), X({3, 4})}, FWD(ops::where(ops::gt(x[0], x[1]), x[0], x[1])),
      REF(ref::zip(r[0], r[1], [](double a, double b) { return std::max(a, b); })));
  add("masked_fill", {X({3, 4}), Mask({1, 4})}, FWD(ops::masked_fill(x[0], x[1], -2.5)),
      REF(ref::zip(r[0], r[1], [](double a, double m) { return m != 0 ? -2.5 : a; })))
      .with_bf16();
  add("masked_fill_3d", {X({2, 3, 4}), Mask({3, 1})}, FWD(ops::masked_fill(x[0], x[1], 0.75)),
      REF(ref::zip(r[0], r[1], [](double a, double m) { return m != 0 ? 0.75 : a; })));
  add("masked_fill_transposed", {X({3, 4}).T(), Mask({3, 4})}, FWD(ops::masked_fill(x[0], x[1], 1e4)),
      REF(ref::zip(r[0], r[1], [](double a, double m) { return m != 0 ? 1e4 : a; })));

  // ---- comparisons (bool, no gradient) ----
  add("eq", {Ints({3, 4}), Ints({3, 4})}, FWD(ops::eq(x[0], x[1])),
      REF(cmp(r[0], r[1], [](double a, double b) { return a == b; }))).out(B).nograd();
  add("ne_bcast", {Ints({3, 4}), Ints({4})}, FWD(ops::ne(x[0], x[1])),
      REF(cmp(r[0], r[1], [](double a, double b) { return a != b; }))).out(B).nograd();
  add("lt_bcast", {Grid({3, 4}), Grid({3, 1})}, FWD(ops::lt(x[0], x[1])),
      REF(cmp(r[0], r[1], [](double a, double b) { return a < b; }))).out(B).nograd();
  add("le", {Ints({3, 4}), Ints({3, 4})}, FWD(ops::le(x[0], x[1])),
      REF(cmp(r[0], r[1], [](double a, double b) { return a <= b; }))).out(B).nograd();
  add("gt_transposed", {Grid({3, 4}).T(), Grid({3, 4})}, FWD(ops::gt(x[0], x[1])),
      REF(cmp(r[0], r[1], [](double a, double b) { return a > b; }))).out(B).nograd();
  add("ge_bcast_3d", {Ints({2, 3, 4}), Ints({3, 1})}, FWD(ops::ge(x[0], x[1])),
      REF(cmp(r[0], r[1], [](double a, double b) { return a >= b; }))).out(B).nograd();
  add("eq_scalar", {Ints({3, 4})}, FWD(ops::eq(x[0], 1.0)),
      REF(map(r[0], [](double a) { return a == 1.0 ? 1.0 : 0.0; }))).out(B).nograd();
  add("lt_scalar", {Grid({3, 4})}, FWD(ops::lt(x[0], 0.4)),
      REF(map(r[0], [](double a) { return a < 0.4 ? 1.0 : 0.0; }))).out(B).nograd();
  add("gt_scalar_sliced", {Grid({3, 4}).S()}, FWD(ops::gt(x[0], -0.6)),
      REF(map(r[0], [](double a) { return a > -0.6 ? 1.0 : 0.0; }))).out(B).nograd();
  add("logical_not", {Mask({3, 4})}, FWD(ops::logical_not(x[0])),
      REF(map(r[0], [](double a) { return a != 0 ? 0.0 : 1.0; }))).out(B).nograd();
  add("logical_not_of_compare", {Grid({3, 4})}, FWD(ops::logical_not(ops::lt(x[0], 0.0))),
      REF(map(r[0], [](double a) { return a < 0.0 ? 0.0 : 1.0; }))).out(B).nograd();

  // ---- sum_to ----
  add("sum_to", {X({2, 3, 4})}, FWD(ops::sum_to(x[0], Shape{3, 1})),
      REF(ref::reshape(ref::sum(r[0], {0, 2}, true), {3, 1})));
  add("sum_to_same", {X({2, 3})}, FWD(ops::sum_to(x[0], Shape{2, 3})), REF(r[0]));

  // ---- reductions ----
  add("sum_all", {X({3, 4})}, FWD(ops::sum(x[0])), REF(ref::sum(r[0]))).with_bf16();
  add("sum_dim0", {X({3, 4})}, FWD(ops::sum(x[0], {0})), REF(ref::sum(r[0], {0})));
  add("sum_dims_keepdim", {X({2, 3, 4})}, FWD(ops::sum(x[0], {0, 2}, true)), REF(ref::sum(r[0], {0, 2}, true)));
  add("sum_neg_dim", {X({2, 3, 4})}, FWD(ops::sum(x[0], {-1})), REF(ref::sum(r[0], {-1})));
  add("sum_transposed", {X({3, 4}).T()}, FWD(ops::sum(x[0], {1})), REF(ref::sum(r[0], {1})));
  add("sum_expanded", {X({3, 4}).E(0)}, FWD(ops::sum(x[0], {0})), REF(ref::sum(r[0], {0})));
  add("sum_sliced_all_keepdim", {X({3, 4}).S()}, FWD(ops::sum(x[0], {}, true)), REF(ref::sum(r[0], {}, true)));
  add("mean_all", {X({3, 4})}, FWD(ops::mean(x[0])), REF(ref::mean(r[0]))).with_bf16();
  add("mean_dim1_keepdim", {X({2, 3, 4})}, FWD(ops::mean(x[0], {1}, true)), REF(ref::mean(r[0], {1}, true)));
  add("mean_sliced", {X({2, 5}).S()}, FWD(ops::mean(x[0], {-1})), REF(ref::mean(r[0], {-1})));
  add("mean_dims_transposed", {X({2, 3, 4}).T()}, FWD(ops::mean(x[0], {0, 1})), REF(ref::mean(r[0], {0, 1})));
  add("amax_all", {Dist({3, 4})}, FWD(ops::amax(x[0])), REF(ref::amax(r[0])));
  add("amax_dim1", {Dist({3, 5})}, FWD(ops::amax(x[0], {1})), REF(ref::amax(r[0], {1})));
  add("amax_dims_keepdim", {Dist({2, 3, 4})}, FWD(ops::amax(x[0], {0, 2}, true)), REF(ref::amax(r[0], {0, 2}, true)));
  add("amax_transposed", {Dist({3, 4}).T()}, FWD(ops::amax(x[0], {-1})), REF(ref::amax(r[0], {-1})));
  add("logsumexp_dim1", {X({3, 4})}, FWD(ops::logsumexp(x[0], {1})), REF(ref::logsumexp(r[0], {1})));
  add("logsumexp_dims_keepdim", {X({2, 3, 4})}, FWD(ops::logsumexp(x[0], {0, 2}, true)),
      REF(ref::logsumexp(r[0], {0, 2}, true)));
  add("logsumexp_transposed", {X({3, 4}).T()}, FWD(ops::logsumexp(x[0], {-1})), REF(ref::logsumexp(r[0], {-1})));
  add("logsumexp_large", {X({2, 4})}, FWD(ops::logsumexp(ops::mul(x[0], 400.0), {1})),
      REF(ref::logsumexp(ref::mul(r[0], 400.0), {1}))).tol32(1e-5, 1e-3).tolgrad(1e-5);
  add("argmax_dim1", {Dist({3, 5})}, FWD(ops::argmax(x[0], 1)), REF(ref::argmax(r[0], 1))).out(I64).nograd();
  add("argmax_dim0_keepdim", {Dist({4, 3})}, FWD(ops::argmax(x[0], 0, true)), REF(ref::argmax(r[0], 0, true)))
      .out(I64).nograd();
  add("argmax_transposed", {Dist({3, 4}).T()}, FWD(ops::argmax(x[0], -1)), REF(ref::argmax(r[0], -1)))
      .out(I64).nograd();

  // ---- matmul / linear ----
  add("matmul_2d", {X({3, 4}), X({4, 5})}, FWD(ops::matmul(x[0], x[1])), REF(ref::matmul(r[0], r[1])));
  add("matmul_batched", {X({2, 3, 4}), X({2, 4, 2})}, FWD(ops::matmul(x[0], x[1])), REF(ref::matmul(r[0], r[1])));
  add("matmul_bcast_batch", {X({2, 1, 3, 4}), X({3, 4, 2})}, FWD(ops::matmul(x[0], x[1])),
      REF(ref::matmul(r[0], r[1])));
  add("matmul_bcast_2d_rhs", {X({2, 3, 4}), X({4, 5})}, FWD(ops::matmul(x[0], x[1])), REF(ref::matmul(r[0], r[1])));
  add("matmul_b_transposed", {X({3, 4}), X({4, 5}).T()}, FWD(ops::matmul(x[0], x[1])), REF(ref::matmul(r[0], r[1])));
  add("matmul_a_transposed_batched", {X({2, 3, 4}).T(), X({2, 4, 3})}, FWD(ops::matmul(x[0], x[1])),
      REF(ref::matmul(r[0], r[1])));
  add("matmul_sliced", {X({3, 4}).S(), X({4, 3}).S(0)}, FWD(ops::matmul(x[0], x[1])), REF(ref::matmul(r[0], r[1])));
  add("matmul_expanded_batch", {X({3, 3, 4}).E(0), X({3, 4, 2})}, FWD(ops::matmul(x[0], x[1])),
      REF(ref::matmul(r[0], r[1])));
  add("matmul_vec_mat", {X({4}), X({4, 3})}, FWD(ops::matmul(x[0], x[1])), REF(ref::matmul(r[0], r[1])));
  add("matmul_mat_vec", {X({3, 4}), X({4})}, FWD(ops::matmul(x[0], x[1])), REF(ref::matmul(r[0], r[1])));
  add("matmul_vec_vec", {X({5}), X({5})}, FWD(ops::matmul(x[0], x[1])), REF(ref::matmul(r[0], r[1])));
  add("matmul_batched_vec", {X({2, 3, 4}), X({4})}, FWD(ops::matmul(x[0], x[1])), REF(ref::matmul(r[0], r[1])));
  add("linear_bias", {X({2, 3, 4}), X({5, 4}), X({5})}, FWD(ops::linear(x[0], x[1], x[2])),
      REF(ref::linear(r[0], r[1], r[2])));
  add("linear_nobias", {X({3, 4}), X({5, 4})}, FWD(ops::linear(x[0], x[1])),
      REF(ref::linear(r[0], r[1], undefined_ref())));
  add("linear_gelu", {X({2, 3, 4}), X({5, 4}), X({5})}, FWD(ops::linear(x[0], x[1], x[2], ops::Activation::gelu)),
      REF(ref::linear(r[0], r[1], r[2], ref::Act::gelu)));
  add("linear_gelu_tanh", {X({3, 4}), X({5, 4}), X({5})},
      FWD(ops::linear(x[0], x[1], x[2], ops::Activation::gelu_tanh)),
      REF(ref::linear(r[0], r[1], r[2], ref::Act::gelu_tanh)));
  add("linear_gelu_nobias", {X({3, 4}), X({2, 4})}, FWD(ops::linear(x[0], x[1], Tensor(), ops::Activation::gelu)),
      REF(ref::linear(r[0], r[1], undefined_ref(), ref::Act::gelu)));
  add("linear_w_transposed", {X({3, 4}), X({5, 4}).T(), X({5})}, FWD(ops::linear(x[0], x[1], x[2])),
      REF(ref::linear(r[0], r[1], r[2])));
  add("linear_x_sliced", {X({3, 4}).S(), X({2, 4}), X({2}).S()}, FWD(ops::linear(x[0], x[1], x[2])),
      REF(ref::linear(r[0], r[1], r[2])));
  add("linear_x_1d", {X({4}), X({3, 4}), X({3})}, FWD(ops::linear(x[0], x[1], x[2])),
      REF(ref::linear(r[0], r[1], r[2])));

  // ---- softmax / normalisation ----
  add("softmax_last", {X({3, 5})}, FWD(ops::softmax(x[0], -1)), REF(ref::softmax(r[0], -1))).with_bf16();
  add("softmax_dim0", {X({4, 3})}, FWD(ops::softmax(x[0], 0)), REF(ref::softmax(r[0], 0)));
  add("softmax_mid_3d", {X({2, 3, 4})}, FWD(ops::softmax(x[0], 1)), REF(ref::softmax(r[0], 1)));
  add("softmax_transposed", {X({3, 4}).T()}, FWD(ops::softmax(x[0], -1)), REF(ref::softmax(r[0], -1)));
  add("softmax_sliced", {X({3, 4}).S()}, FWD(ops::softmax(x[0], -1)), REF(ref::softmax(r[0], -1)));
  add("softmax_large_logits", {X({2, 4})}, FWD(ops::softmax(ops::mul(x[0], 300.0), -1)),
      REF(ref::softmax(ref::mul(r[0], 300.0), -1))).tol32(1e-4, 1e-5).tolgrad(1e-5);
  add("log_softmax_last", {X({3, 5})}, FWD(ops::log_softmax(x[0], -1)), REF(ref::log_softmax(r[0], -1)));
  add("log_softmax_mid_3d", {X({2, 3, 4})}, FWD(ops::log_softmax(x[0], 1)), REF(ref::log_softmax(r[0], 1)));
  add("log_softmax_transposed", {X({3, 4}).T()}, FWD(ops::log_softmax(x[0], 0)), REF(ref::log_softmax(r[0], 0)));
  add("layer_norm_affine", {X({2, 3, 5}), X({5}), X({5})}, FWD(ops::layer_norm(x[0], x[1], x[2])),
      REF(ref::layer_norm(r[0], r[1], r[2], 1e-5))).tol32(1e-4, 1e-5);
  add("layer_norm_noaffine", {X({3, 6})}, FWD(ops::layer_norm(x[0], Tensor(), Tensor())),
      REF(ref::layer_norm(r[0], undefined_ref(), undefined_ref(), 1e-5))).tol32(1e-4, 1e-5);
  add("layer_norm_weight_only", {X({3, 4}), X({4})}, FWD(ops::layer_norm(x[0], x[1], Tensor())),
      REF(ref::layer_norm(r[0], r[1], undefined_ref(), 1e-5))).tol32(1e-4, 1e-5);
  add("layer_norm_eps", {X({4, 3}), X({3}), X({3})}, FWD(ops::layer_norm(x[0], x[1], x[2], 0.1)),
      REF(ref::layer_norm(r[0], r[1], r[2], 0.1))).tol32(1e-4, 1e-5);
  add("layer_norm_sliced", {X({3, 4}).S(), X({4}).S(), X({4})}, FWD(ops::layer_norm(x[0], x[1], x[2])),
      REF(ref::layer_norm(r[0], r[1], r[2], 1e-5))).tol32(1e-4, 1e-5);
  // More rows than one chunk of the GPU's weight/bias-gradient sums, and a row longer than one warp
  // handles (1024): other kernel paths on the GPU, forward against the reference there.
  add("layer_norm_many_rows", {X({130, 3}), X({3}), X({3})}, FWD(ops::layer_norm(x[0], x[1], x[2])),
      REF(ref::layer_norm(r[0], r[1], r[2], 1e-5))).tol32(1e-4, 1e-5).grad_across_devices_only();
  add("layer_norm_long_rows", {X({2, 1500}), X({1500}), X({1500})}, FWD(ops::layer_norm(x[0], x[1], x[2])),
      REF(ref::layer_norm(r[0], r[1], r[2], 1e-5))).tol32(1e-4, 1e-5).grad_across_devices_only();
  add("layer_norm_transposed", {X({4, 5}).T(), X({5}), X({5})}, FWD(ops::layer_norm(x[0], x[1], x[2])),
      REF(ref::layer_norm(r[0], r[1], r[2], 1e-5))).tol32(1e-4, 1e-5);
  add("l2_normalize_last", {X({3, 4})}, FWD(ops::l2_normalize(x[0])), REF(ref::l2_normalize(r[0], -1, 1e-12)));
  add("l2_normalize_dim0", {X({3, 4})}, FWD(ops::l2_normalize(x[0], 0)), REF(ref::l2_normalize(r[0], 0, 1e-12)));
  add("l2_normalize_mid_transposed", {X({2, 3, 4}).T()}, FWD(ops::l2_normalize(x[0], 1)),
      REF(ref::l2_normalize(r[0], 1, 1e-12)));
  add("l2_normalize_eps_dominates", {X({3, 4})}, FWD(ops::l2_normalize(x[0], -1, 10.0)),
      REF(ref::l2_normalize(r[0], -1, 10.0)));

  // ---- losses ----
  add("cross_entropy", {X({4, 5}), Idx({4}, 5)}, FWD(ops::cross_entropy(x[0], x[1])),
      REF(ref::cross_entropy(r[0], r[1])));
  add("cross_entropy_ignore", {X({5, 4}), IdxIgn({5}, 4)}, FWD(ops::cross_entropy(x[0], x[1], -100)),
      REF(ref::cross_entropy(r[0], r[1], -100)));
  add("cross_entropy_ignore_custom", {X({5, 4}), Fixed({5}, I64, {0, 1, 2, 0, 3})},
      FWD(ops::cross_entropy(x[0], x[1], 0)), REF(ref::cross_entropy(r[0], r[1], 0)));
  add("cross_entropy_smoothing", {X({4, 5}), Idx({4}, 5)}, FWD(ops::cross_entropy(x[0], x[1], -100, 0.1)),
      REF(ref::cross_entropy(r[0], r[1], -100, 0.1)));
  add("cross_entropy_smoothing_ignore", {X({5, 4}), IdxIgn({5}, 4)},
      FWD(ops::cross_entropy(x[0], x[1], -100, 0.25)), REF(ref::cross_entropy(r[0], r[1], -100, 0.25)));
  add("cross_entropy_3d", {X({2, 3, 4}), Idx({2, 3}, 4)}, FWD(ops::cross_entropy(x[0], x[1])),
      REF(ref::cross_entropy(r[0], r[1])));
  add("cross_entropy_transposed", {X({4, 3}).T(), Idx({4}, 3)}, FWD(ops::cross_entropy(x[0], x[1])),
      REF(ref::cross_entropy(r[0], r[1])));
  add("mse_loss", {X({3, 4}), X({3, 4})}, FWD(ops::mse_loss(x[0], x[1])), REF(ref::mse_loss(r[0], r[1])));
  add("mse_loss_views", {X({3, 4}).T(), X({3, 4}).S()}, FWD(ops::mse_loss(x[0], x[1])),
      REF(ref::mse_loss(r[0], r[1])));

  // ---- attention ----
  add("sdpa_basic", {X({1, 2, 3, 4}), X({1, 2, 3, 4}), X({1, 2, 3, 4})},
      FWD(ops::scaled_dot_product_attention(x[0], x[1], x[2])),
      REF(ref::sdpa(r[0], r[1], r[2], false, undefined_ref(), undefined_ref())));
  add("sdpa_rect_dv", {X({2, 2, 2, 4}), X({2, 2, 3, 4}), X({2, 2, 3, 3})},
      FWD(ops::scaled_dot_product_attention(x[0], x[1], x[2])),
      REF(ref::sdpa(r[0], r[1], r[2], false, undefined_ref(), undefined_ref())));
  add("sdpa_causal", {X({1, 2, 4, 3}), X({1, 2, 4, 3}), X({1, 2, 4, 3})},
      FWD(ops::scaled_dot_product_attention(x[0], x[1], x[2], attn_opts(true, Tensor(), Tensor(), std::nullopt))),
      REF(ref::sdpa(r[0], r[1], r[2], true, undefined_ref(), undefined_ref())));
  add("sdpa_causal_rect", {X({1, 2, 2, 3}), X({1, 2, 4, 3}), X({1, 2, 4, 3})},
      FWD(ops::scaled_dot_product_attention(x[0], x[1], x[2], attn_opts(true, Tensor(), Tensor(), std::nullopt))),
      REF(ref::sdpa(r[0], r[1], r[2], true, undefined_ref(), undefined_ref())));
  add("sdpa_padding", {X({2, 1, 3, 4}), X({2, 1, 4, 4}), X({2, 1, 4, 2}), Fixed({2, 4}, B, {0, 1, 0, 0, 0, 0, 1, 1})},
      FWD(ops::scaled_dot_product_attention(x[0], x[1], x[2], attn_opts(false, x[3], Tensor(), std::nullopt))),
      REF(ref::sdpa(r[0], r[1], r[2], false, r[3], undefined_ref())));
  add("sdpa_bias", {X({2, 2, 3, 2}), X({2, 2, 3, 2}), X({2, 2, 3, 2}), X({2, 3, 3})},
      FWD(ops::scaled_dot_product_attention(x[0], x[1], x[2], attn_opts(false, Tensor(), x[3], std::nullopt))),
      REF(ref::sdpa(r[0], r[1], r[2], false, undefined_ref(), r[3])));
  add("sdpa_bias_bcast_batch", {X({2, 1, 3, 4}), X({2, 1, 3, 4}), X({2, 1, 3, 4}), X({1, 1, 3, 3})},
      FWD(ops::scaled_dot_product_attention(x[0], x[1], x[2], attn_opts(true, Tensor(), x[3], std::nullopt))),
      REF(ref::sdpa(r[0], r[1], r[2], true, undefined_ref(), r[3])));
  add("sdpa_scale", {X({1, 2, 3, 4}), X({1, 2, 3, 4}), X({1, 2, 3, 4})},
      FWD(ops::scaled_dot_product_attention(x[0], x[1], x[2], attn_opts(false, Tensor(), Tensor(), 1.7))),
      REF(ref::sdpa(r[0], r[1], r[2], false, undefined_ref(), undefined_ref(), 1.7)));
  add("sdpa_fully_masked_row",
      {X({2, 1, 3, 2}), X({2, 1, 3, 2}), X({2, 1, 3, 2}), Fixed({2, 3}, B, {1, 0, 0, 0, 0, 1})},
      FWD(ops::scaled_dot_product_attention(x[0], x[1], x[2],
                                            attn_opts(true, x[3], Tensor(), std::nullopt))),
      REF(ref::sdpa(r[0], r[1], r[2], true, r[3], undefined_ref())));
  add("sdpa_k_transposed", {X({1, 2, 3, 4}), X({1, 2, 3, 4}).T(), X({1, 2, 3, 4}).S()},
      FWD(ops::scaled_dot_product_attention(x[0], x[1], x[2])),
      REF(ref::sdpa(r[0], r[1], r[2], false, undefined_ref(), undefined_ref())));
  add("sdpa_q_expanded_heads", {X({1, 3, 3, 4}).E(1), X({1, 3, 3, 4}), X({1, 3, 3, 4})},
      FWD(ops::scaled_dot_product_attention(x[0], x[1], x[2], attn_opts(true, Tensor(), Tensor(), std::nullopt))),
      REF(ref::sdpa(r[0], r[1], r[2], true, undefined_ref(), undefined_ref())));

  // The packed q/k/v entry (the fused CPU kernel; blocks of more than 64 queries: test_large_shapes.cpp).
  static const auto packed_ref = [](const Ref& qkv, bool causal, const Ref& mask) {
    auto part = [&](int64_t i) { return ref::permute(ref::select(qkv, 2, i), {0, 2, 1, 3}); };
    return ref::permute(ref::sdpa(part(0), part(1), part(2), causal, mask, undefined_ref()), {0, 2, 1, 3});
  };
  add("self_attention_packed", {X({1, 2, 3, 2, 3})}, FWD(ops::self_attention_packed(x[0])),
      REF(packed_ref(r[0], false, undefined_ref())));
  add("self_attention_packed_causal_padding", {X({2, 2, 3, 2, 2}), Fixed({2, 2}, B, {0, 1, 1, 0})},
      FWD(ops::self_attention_packed(x[0], attn_opts(true, x[1], Tensor(), std::nullopt))),
      REF(packed_ref(r[0], true, r[1])));
  add("self_attention_packed_strided", {X({2, 3, 2, 2, 2}).T()},  // not contiguous: copied first
      FWD(ops::self_attention_packed(x[0].transpose(1, 2))),
      REF(packed_ref(ref::transpose(r[0], 1, 2), false, undefined_ref())));

  // ---- indexing ----
  add("embedding", {X({5, 3}), Idx({2, 3}, 5)}, FWD(ops::embedding(x[0], x[1])), REF(ref::embedding(r[0], r[1])));
  add("embedding_1d_repeats", {X({4, 2}), Fixed({6}, I64, {3, 0, 3, 1, 3, 0})}, FWD(ops::embedding(x[0], x[1])),
      REF(ref::embedding(r[0], r[1])));
  add("embedding_sliced_weight", {X({6, 3}).S(), Idx({4}, 6)}, FWD(ops::embedding(x[0], x[1])),
      REF(ref::embedding(r[0], r[1])));
  add("cat_dim0", {X({2, 3}), X({1, 3})}, FWD(ops::cat({x[0], x[1]}, 0)), REF(ref::cat({r[0], r[1]}, 0)));
  add("cat_dim1_three", {X({2, 1}), X({2, 3}), X({2, 2})}, FWD(ops::cat({x[0], x[1], x[2]}, 1)),
      REF(ref::cat({r[0], r[1], r[2]}, 1)));
  add("cat_neg_dim_views", {X({2, 3}).T(), X({2, 4}).S()}, FWD(ops::cat({x[0], x[1]}, -1)),
      REF(ref::cat({r[0], r[1]}, -1)));
  add("cat_3d_mid", {X({2, 1, 3}), X({2, 2, 3}).E(0)}, FWD(ops::cat({x[0], x[1]}, 1)), REF(ref::cat({r[0], r[1]}, 1)));
  add("cat_same_input_twice", {X({2, 3})}, FWD(ops::cat({x[0], x[0]}, 0)), REF(ref::cat({r[0], r[0]}, 0)));
  add("stack_dim0", {X({2, 3}), X({2, 3})}, FWD(ops::stack({x[0], x[1]}, 0)), REF(ref::stack({r[0], r[1]}, 0)));
  add("stack_last_three", {X({2, 3}), X({2, 3}).T(), X({2, 3}).S()}, FWD(ops::stack({x[0], x[1], x[2]}, -1)),
      REF(ref::stack({r[0], r[1], r[2]}, -1)));
  add("stack_mid", {X({3, 2}), X({3, 2})}, FWD(ops::stack({x[0], x[1]}, 1)), REF(ref::stack({r[0], r[1]}, 1)));
  add("gather_dim0", {X({3, 4}), Idx({2, 4}, 3)}, FWD(ops::gather(x[0], 0, x[1])), REF(ref::gather(r[0], 0, r[1])));
  add("gather_dim1", {X({3, 4}), Idx({3, 6}, 4)}, FWD(ops::gather(x[0], 1, x[1])), REF(ref::gather(r[0], 1, r[1])));
  add("gather_3d_neg_dim", {X({2, 3, 4}), Idx({2, 3, 2}, 4)}, FWD(ops::gather(x[0], -1, x[1])),
      REF(ref::gather(r[0], -1, r[1])));
  add("gather_transposed", {X({3, 4}).T(), Idx({3, 2}, 4)}, FWD(ops::gather(x[0], 1, x[1])),
      REF(ref::gather(r[0], 1, r[1])));
  add("index_select_dim0", {X({4, 3}), Idx({5}, 4)}, FWD(ops::index_select(x[0], 0, x[1])),
      REF(ref::index_select(r[0], 0, r[1])));
  add("index_select_last", {X({2, 3, 4}), Idx({3}, 4)}, FWD(ops::index_select(x[0], -1, x[1])),
      REF(ref::index_select(r[0], -1, r[1])));
  add("index_select_sliced", {X({4, 3}).S(0), Idx({2}, 4)}, FWD(ops::index_select(x[0], 0, x[1])),
      REF(ref::index_select(r[0], 0, r[1])));
  add("scatter_add_dim0", {X({3, 4}), Idx({2, 4}, 3), X({2, 4})}, FWD(ops::scatter_add(x[0], 0, x[1], x[2])),
      REF(ref::scatter_add(r[0], 0, r[1], r[2])));
  add("scatter_add_dim1_dups", {X({3, 4}), Idx({3, 6}, 4), X({3, 6})}, FWD(ops::scatter_add(x[0], 1, x[1], x[2])),
      REF(ref::scatter_add(r[0], 1, r[1], r[2])));
  add("scatter_add_views", {X({3, 4}).T(), Idx({3, 2}, 4), X({3, 2}).S()},
      FWD(ops::scatter_add(x[0], -1, x[1], x[2])), REF(ref::scatter_add(r[0], -1, r[1], r[2])));

  // ---- patchify ----
  add("patchify", {X({1, 2, 4, 4})}, FWD(ops::patchify(x[0], 2)), REF(ref::patchify(r[0], 2)));
  add("patchify_rect_batch", {X({2, 1, 4, 6})}, FWD(ops::patchify(x[0], 2)), REF(ref::patchify(r[0], 2)));
  add("patchify_3ch_p1", {X({1, 3, 2, 3})}, FWD(ops::patchify(x[0], 1)), REF(ref::patchify(r[0], 1)));
  add("patchify_transposed", {X({1, 2, 4, 4}).T()}, FWD(ops::patchify(x[0], 4)), REF(ref::patchify(r[0], 4)));
  add("unpatchify", {X({1, 4, 8})}, FWD(ops::unpatchify(x[0], 2, 2, 4, 4)), REF(ref::unpatchify(r[0], 2, 2, 4, 4)));
  add("unpatchify_rect", {X({2, 6, 4})}, FWD(ops::unpatchify(x[0], 2, 1, 4, 6)),
      REF(ref::unpatchify(r[0], 2, 1, 4, 6)));
  add("unpatchify_sliced", {X({1, 4, 12}).S()}, FWD(ops::unpatchify(x[0], 2, 3, 4, 4)),
      REF(ref::unpatchify(r[0], 2, 3, 4, 4)));
  add("extract_patches_overlapping", {X({1, 1, 5, 7})}, FWD(ops::extract_patches(x[0], 3, 2)),
      REF(ref::extract_patches(r[0], 3, 2)));
  add("extract_patches_uncovered_edge_2ch", {X({1, 2, 6, 5}).T()}, FWD(ops::extract_patches(x[0], 2, 3)),
      REF(ref::extract_patches(r[0], 2, 3)));
  add("extract_patches_stride_is_patch", {X({1, 2, 4, 6})}, FWD(ops::extract_patches(x[0], 2, 2)),
      REF(ref::patchify(r[0], 2)));
  add("patchify_roundtrip", {X({2, 2, 2, 4})}, FWD(ops::unpatchify(ops::patchify(x[0], 2), 2, 2, 2, 4)), REF(r[0]));

  // ---- the fused AdamW update (in place, so each case updates copies and returns one of them) ----
  add("adamw_param", {X({3, 4}), X({3, 4}), X({3, 4}), Pos({3, 4})}, FWD(adamw_result(x, 0)),
      REF(adamw_reference(r, 0))).nograd().tol32(1e-5, 1e-6);
  add("adamw_exp_avg", {X({3, 4}), X({3, 4}), X({3, 4}), Pos({3, 4})}, FWD(adamw_result(x, 1)),
      REF(adamw_reference(r, 1))).nograd();
  add("adamw_exp_avg_sq", {X({3, 4}), X({3, 4}), X({3, 4}), Pos({3, 4})}, FWD(adamw_result(x, 2)),
      REF(adamw_reference(r, 2))).nograd();

  // ---- sorting ----
  add("argsort_asc", {Dist({3, 5})}, FWD(ops::argsort(x[0])), REF(ref::argsort(r[0], -1, false))).out(I64).nograd();
  add("argsort_desc", {Dist({3, 5})}, FWD(ops::argsort(x[0], -1, true)), REF(ref::argsort(r[0], -1, true)))
      .out(I64).nograd();
  add("argsort_stable_ties_asc", {Ints({3, 8})}, FWD(ops::argsort(x[0], 1)), REF(ref::argsort(r[0], 1, false)))
      .out(I64).nograd();
  add("argsort_stable_ties_desc", {Ints({3, 8})}, FWD(ops::argsort(x[0], 1, true)), REF(ref::argsort(r[0], 1, true)))
      .out(I64).nograd();
  add("argsort_dim0", {Dist({5, 3})}, FWD(ops::argsort(x[0], 0)), REF(ref::argsort(r[0], 0, false))).out(I64).nograd();
  // f64 keys with several rows do not fit beside the row number in 64 bits: the GPU's two-sort path.
  add("argsort_f64_rows", {Fixed({3, 4}, DType::f64, {0.5, -1.0, 2.0, 0.25, 3.0, -2.5, 0.0, 1.5, -0.75, 4.0, 1.0, -3.0})},
      FWD(ops::argsort(x[0], -1, true)), REF(ref::argsort(r[0], -1, true))).out(I64).nograd();
  add("argsort_transposed", {Dist({4, 5}).T()}, FWD(ops::argsort(x[0], -1, true)),
      REF(ref::argsort(r[0], -1, true))).out(I64).nograd();
  add("topk_values", {Dist({3, 5})}, FWD(ops::topk(x[0], 2).values), REF(ref::topk(r[0], 2, -1, true).first));
  add("topk_indices", {Dist({3, 5})}, FWD(ops::topk(x[0], 2).indices), REF(ref::topk(r[0], 2, -1, true).second))
      .out(I64).nograd();
  add("topk_smallest_values", {Dist({3, 5})}, FWD(ops::topk(x[0], 3, -1, false).values),
      REF(ref::topk(r[0], 3, -1, false).first));
  add("topk_smallest_indices", {Dist({3, 5})}, FWD(ops::topk(x[0], 3, -1, false).indices),
      REF(ref::topk(r[0], 3, -1, false).second)).out(I64).nograd();
  add("topk_dim0_values", {Dist({5, 3})}, FWD(ops::topk(x[0], 3, 0).values), REF(ref::topk(r[0], 3, 0, true).first));
  add("topk_transposed_values", {Dist({4, 5}).T()}, FWD(ops::topk(x[0], 1).values),
      REF(ref::topk(r[0], 1, -1, true).first));

  // ---- views on Tensor (differentiable) ----
  add("view", {X({2, 6})}, FWD(x[0].view({3, 4})), REF(ref::reshape(r[0], {3, 4})));
  add("view_of_row_slice", {X({4, 3}).S(0)}, FWD(x[0].view({12})), REF(ref::reshape(r[0], {12})));
  add("reshape_minus1", {X({2, 3, 4})}, FWD(x[0].reshape({-1, 4})), REF(ref::reshape(r[0], {-1, 4})));
  add("reshape_transposed_copies", {X({3, 4}).T()}, FWD(x[0].reshape({2, 6})), REF(ref::reshape(r[0], {2, 6})));
  add("reshape_expanded", {X({3, 4}).E(0)}, FWD(x[0].reshape({4, 3})), REF(ref::reshape(r[0], {4, 3})));
  add("permute_3d", {X({2, 3, 4})}, FWD(x[0].permute({2, 0, 1})), REF(ref::permute(r[0], {2, 0, 1})));
  add("permute_neg_dims", {X({2, 3, 4})}, FWD(x[0].permute({-1, -3, -2})), REF(ref::permute(r[0], {2, 0, 1})));
  add("transpose", {X({2, 3, 4})}, FWD(x[0].transpose(0, 2)), REF(ref::transpose(r[0], 0, 2)));
  add("transpose_sliced", {X({3, 4}).S()}, FWD(x[0].transpose(0, 1)), REF(ref::transpose(r[0], 0, 1)));
  add("narrow", {X({4, 5})}, FWD(x[0].narrow(1, 1, 3)), REF(ref::narrow(r[0], 1, 1, 3)));
  add("narrow_of_transposed", {X({4, 5}).T()}, FWD(x[0].narrow(0, 2, 2)), REF(ref::narrow(r[0], 0, 2, 2)));
  add("slice_step2", {X({6, 4})}, FWD(x[0].slice(0, 1, 6, 2)), REF(ref::slice(r[0], 0, 1, 6, 2)));
  add("slice_step3_last", {X({2, 7})}, FWD(x[0].slice(-1, 0, 7, 3)), REF(ref::slice(r[0], -1, 0, 7, 3)));
  add("select", {X({3, 4, 2})}, FWD(x[0].select(1, 2)), REF(ref::select(r[0], 1, 2)));
  add("select_sliced", {X({3, 4}).S(0)}, FWD(x[0].select(0, 1)), REF(ref::select(r[0], 0, 1)));
  add("expand", {X({3, 1})}, FWD(x[0].expand({3, 4})), REF(ref::expand(r[0], {3, 4})));
  add("expand_keep_dims", {X({1, 3, 1})}, FWD(x[0].expand({2, -1, 4})), REF(ref::expand(r[0], {2, -1, 4})));
  add("squeeze", {X({3, 1, 4})}, FWD(x[0].squeeze(1)), REF(ref::squeeze(r[0], 1)));
  add("unsqueeze", {X({3, 4})}, FWD(x[0].unsqueeze(1)), REF(ref::unsqueeze(r[0], 1)));
  add("unsqueeze_front_transposed", {X({3, 4}).T()}, FWD(x[0].unsqueeze(0)), REF(ref::unsqueeze(r[0], 0)));
  add("flatten_all", {X({2, 3, 4})}, FWD(x[0].flatten()), REF(ref::flatten(r[0])));
  add("flatten_tail", {X({2, 3, 4})}, FWD(x[0].flatten(1)), REF(ref::flatten(r[0], 1)));
  add("flatten_head_transposed", {X({2, 3, 4}).T()}, FWD(x[0].flatten(0, 1)), REF(ref::flatten(r[0], 0, 1)));
  add("contiguous_of_transposed", {X({3, 4}).T()}, FWD(x[0].contiguous()), REF(r[0]));
  add("contiguous_of_expanded", {X({3, 4}).E(1)}, FWD(x[0].contiguous()), REF(r[0]));
  add("clone", {X({3, 4})}, FWD(x[0].clone()), REF(r[0]));
  add("clone_sliced", {X({3, 4}).S()}, FWD(x[0].clone()), REF(r[0]));
  add("to_f64", {X({3, 4}).T()}, FWD(ops::mul(x[0].to(DType::f64), 2.0)), REF(ref::mul(r[0], 2.0))).out(DType::f64);
  add("to_f32_roundtrip", {X({3, 4})}, FWD(x[0].to(DType::f32).to(x[0].dtype())),
      REF(map(r[0], [](double v) { return double(float(v)); }))).nograd();
  add("view_chain", {X({3, 4}).T()}, FWD(x[0].narrow(1, 1, 2).unsqueeze(0).expand({2, -1, -1}).reshape({6, 2})),
      REF(ref::reshape(ref::expand(ref::unsqueeze(ref::narrow(r[0], 1, 1, 2), 0), {2, -1, -1}), {6, 2})));
  add("view_chain_into_matmul", {X({2, 6}), X({3, 4})},
      FWD(ops::matmul(x[0].view({2, 3, 2}).permute({0, 2, 1}), x[1])),
      REF(ref::matmul(ref::permute(ref::reshape(r[0], {2, 3, 2}), {0, 2, 1}), r[1])));
  add("select_then_sum", {X({3, 4})}, FWD(ops::add(x[0].select(0, 0), x[0].select(0, 2))),
      REF(ref::add(ref::select(r[0], 0, 0), ref::select(r[0], 0, 2))));

  // ---- compositions (several ops in one graph) ----
  add("mlp_block", {X({3, 4}), X({5, 4}), X({5}), X({2, 5})},
      FWD(ops::linear(ops::layer_norm(ops::linear(x[0], x[1], x[2], ops::Activation::gelu), Tensor(), Tensor()), x[3])),
      REF(ref::linear(ref::layer_norm(ref::linear(r[0], r[1], r[2], ref::Act::gelu), undefined_ref(),
                                      undefined_ref(), 1e-5),
                      r[3], undefined_ref())))
      .tol32(1e-4, 1e-4);
  add("softmax_weighted_sum", {X({2, 3}), X({3, 4})}, FWD(ops::matmul(ops::softmax(x[0], -1), x[1])),
      REF(ref::matmul(ref::softmax(r[0], -1), r[1])));

  return t;
}

const std::vector<OpCase>& all_cases() {
  static const std::vector<OpCase> cases = make_cases();
  return cases;
}

std::vector<OpCase> select_cases(bool (*keep)(const OpCase&)) {
  std::vector<OpCase> out;
  for (const OpCase& c : all_cases())
    if (keep(c)) out.push_back(c);
  return out;
}
bool has_float_input(const OpCase& c) {
  return std::any_of(c.ins.begin(), c.ins.end(), [](const In& in) { return in.is_float(); });
}

std::string case_name(const testing::TestParamInfo<OpCase>& info) { return info.param.name; }

uint32_t seed_of(const std::string& s) {
  uint32_t h = 2166136261u;  // FNV-1a: stable across platforms, unlike std::hash
  for (char ch : s) h = (h ^ uint8_t(ch)) * 16777619u;
  return h;
}

// ============================================================================================
// Running a case
// ============================================================================================

struct Built {
  std::vector<Tensor> bases;                  // what was allocated (leaves for the gradient check)
  std::vector<std::vector<double>> base_vals; // their values (as stored, i.e. rounded to the dtype)
  std::vector<Ref> ref_inputs;                // what the op sees, as references
};

Built build(const OpCase& c, DType float_dtype) {
  std::mt19937 rng(seed_of(c.name));
  Built b;
  for (const In& in : c.ins) {
    DType dt = in.dtype(float_dtype);
    std::vector<int64_t> bs = base_shape(in);
    std::vector<double> vals = gen_values(in, ref::numel(bs), rng);
    for (double& v : vals) v = round_to(v, dt);
    b.bases.push_back(make_tensor(vals, bs, dt));
    b.ref_inputs.push_back(apply_layout(Ref{bs, vals}, in));
    b.base_vals.push_back(std::move(vals));
  }
  return b;
}

std::vector<Tensor> op_inputs(const OpCase& c, const std::vector<Tensor>& bases) {
  std::vector<Tensor> xs;
  for (size_t i = 0; i < c.ins.size(); ++i) xs.push_back(apply_layout(bases[i], c.ins[i]));
  return xs;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? "," : "") << s[i];
  return os.str() + "]";
}

// Compares element by element: |got - want| <= atol + rtol * |want| (NaN never passes).
void expect_close(const std::vector<double>& got, const std::vector<double>& want, double rtol, double atol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double err = std::fabs(got[i] - want[i]);
    bool ok = err <= atol + rtol * std::fabs(want[i]);
    if (!ok) {
      worst = std::max(worst, std::isnan(err) ? INFINITY : err);
      if (++bad <= 5) ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", want " << want[i];
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " elements off (worst " << worst << ")";
}

#ifndef LOOM_OP_CASES_ON_CUDA
void run_forward(const OpCase& c, DType dt, double rtol, double atol) {
  Built b = build(c, dt);
  Ref want = c.ref(b.ref_inputs);
  Tensor out = c.fwd(op_inputs(c, b.bases));
  ASSERT_TRUE(out.defined());
  ASSERT_EQ(out.shape().vec(), want.shape)
      << "got " << shape_str(out.shape().vec()) << ", want " << shape_str(want.shape);
  EXPECT_EQ(out.dtype(), c.out_dtype.value_or(dt))
      << "output dtype " << dtype_name(out.dtype()) << ", want " << dtype_name(c.out_dtype.value_or(dt));
  expect_close(out.to_vector<double>(), want.v, rtol, atol, c.name + " forward " + std::string(dtype_name(dt)));
  // The op must not have written into its inputs.
  for (size_t i = 0; i < b.bases.size(); ++i)
    EXPECT_EQ(b.bases[i].to_vector<double>(), b.base_vals[i]) << "input " << i << " was modified";
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// L = sum(out * R): autograd gradient of every float leaf against central differences.
void run_gradient(const OpCase& c) {
  Built b = build(c, DType::f64);
  for (size_t i = 0; i < c.ins.size(); ++i)
    if (c.ins[i].is_float()) b.bases[i].set_requires_grad(true);

  Tensor out = c.fwd(op_inputs(c, b.bases));
  ASSERT_TRUE(out.defined());
  ASSERT_EQ(out.dtype(), DType::f64);
  ASSERT_TRUE(out.requires_grad()) << "output of a differentiable op does not require grad";

  std::mt19937 rng(seed_of(c.name) ^ 0x9e3779b9u);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> R(static_cast<size_t>(out.numel()));
  for (double& r : R) r = u(rng);
  Tensor Rt = Tensor::from(R, out.shape(), DType::f64);
  Tensor L = ops::sum(ops::mul(out, Rt));
  ASSERT_EQ(L.numel(), 1);
  L.backward();

  const double eps = 1e-6;
  int checked = 0;
  for (size_t i = 0; i < c.ins.size(); ++i) {
    if (!c.ins[i].is_float()) continue;
    Tensor g = b.bases[i].grad();
    ASSERT_TRUE(g.defined()) << "input " << i << " got no gradient";
    ASSERT_EQ(g.shape(), b.bases[i].shape()) << "input " << i;
    std::vector<double> got = g.to_vector<double>();
    std::vector<double> num(got.size());
    {
      NoGradGuard guard;
      double* p = b.bases[i].data_ptr<double>();
      for (size_t j = 0; j < num.size(); ++j) {
        double x0 = p[j];
        p[j] = x0 + eps;
        double lp = dot(c.fwd(op_inputs(c, b.bases)).to_vector<double>(), R);
        p[j] = x0 - eps;
        double lm = dot(c.fwd(op_inputs(c, b.bases)).to_vector<double>(), R);
        p[j] = x0;
        num[j] = (lp - lm) / (2 * eps);
      }
    }
    expect_close(got, num, c.gtol, c.gtol, c.name + " gradient of input " + std::to_string(i));
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

// ============================================================================================
// Parameterized suites
// ============================================================================================

class OpForwardF64 : public testing::TestWithParam<OpCase> {};
class OpForwardF32 : public testing::TestWithParam<OpCase> {};
class OpForwardBF16 : public testing::TestWithParam<OpCase> {};
class OpGradient : public testing::TestWithParam<OpCase> {};

TEST_P(OpForwardF64, MatchesReference) {
  const OpCase& c = GetParam();
  run_forward(c, DType::f64, c.rtol64, c.atol64);
}
TEST_P(OpForwardF32, MatchesReference) {
  const OpCase& c = GetParam();
  run_forward(c, DType::f32, c.rtol32, c.atol32);
}
TEST_P(OpForwardBF16, MatchesReference) {
  const OpCase& c = GetParam();
  run_forward(c, DType::bf16, c.rtol16, c.atol16);
}
TEST_P(OpGradient, MatchesCentralDifferences) { run_gradient(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Ops, OpForwardF64, testing::ValuesIn(all_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(Ops, OpForwardF32, testing::ValuesIn(all_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(Ops, OpForwardBF16,
                         testing::ValuesIn(select_cases([](const OpCase& c) { return c.bf16; })), case_name);
INSTANTIATE_TEST_SUITE_P(Ops, OpGradient,
                         testing::ValuesIn(select_cases([](const OpCase& c) { return c.grad && has_float_input(c); })),
                         case_name);

TEST(OpCaseTable, NamesAreUniqueAndValid) {
  std::set<std::string> seen;
  for (const OpCase& c : all_cases()) {
    EXPECT_TRUE(seen.insert(c.name).second) << "duplicate case " << c.name;
    for (char ch : c.name) EXPECT_TRUE(std::isalnum(uint8_t(ch)) || ch == '_') << c.name;
  }
  EXPECT_GE(all_cases().size(), 150u);
}

// The suites run with LOOM_POISON_ALLOC=1 (tests/CMakeLists.txt): an output buffer holds NaN until
// the op writes it, so an element a kernel skips fails its comparison.
TEST(OpCaseTable, RunsOnPoisonedBuffers) {
  const char* v = std::getenv("LOOM_POISON_ALLOC");
  if (v == nullptr || std::string(v) == "0") GTEST_SKIP() << "LOOM_POISON_ALLOC is not set (ctest sets it)";
  for (DType dt : {DType::f32, DType::f64, DType::bf16})
    for (double x : Tensor::empty({3, 5}, dt).to_vector<double>()) EXPECT_TRUE(std::isnan(x)) << dtype_name(dt);
}

TEST(OpCaseTable, GradientInputsAreSmall) {
  for (const OpCase& c : all_cases())
    if (c.grad) {
      for (const In& in : c.ins) EXPECT_LE(ref::numel(base_shape(in)), 64) << c.name;
    }
}

// ============================================================================================
// Bad calls: each must throw loom::OpError whose message names the op
// ============================================================================================

struct BadCall {
  std::string name;
  std::string op;                 // must appear in what()
  std::function<void()> call;
  bool op_error = true;           // false: any loom::Error (e.g. a dim out of range), message not checked
};
void PrintTo(const BadCall& b, std::ostream* os) { *os << b.name; }

Tensor F(std::vector<int64_t> s, DType dt = DType::f32) { return Tensor::ones(Shape(s), dt); }
Tensor Ids(std::vector<int64_t> s) { return Tensor::zeros(Shape(s), DType::i64); }
Tensor Bools(std::vector<int64_t> s) { return Tensor::zeros(Shape(s), DType::boolean); }

std::vector<BadCall> make_bad_calls() {
  std::vector<BadCall> t;
  auto bad = [&t](std::string name, std::string op, std::function<void()> f, bool strict = true) {
    t.push_back(BadCall{std::move(name), std::move(op), std::move(f), strict});
  };
  bad("add_shapes", "add", [] { ops::add(F({3, 4}), F({5})); });
  bad("add_shapes_3d", "add", [] { ops::add(F({2, 3, 4}), F({3, 3, 4})); });
  bad("sub_shapes", "sub", [] { ops::sub(F({3, 4}), F({4, 3})); });
  bad("mul_shapes", "mul", [] { ops::mul(F({2, 3}), F({3, 2})); });
  bad("div_shapes", "div", [] { ops::div(F({3}), F({4})); });
  bad("operator_plus_shapes", "add", [] { (void)(F({3}) + F({2})); });
  bad("where_shapes", "where", [] { ops::where(Bools({3, 4}), F({3, 4}), F({5})); });
  bad("where_cond_not_bool", "where", [] { ops::where(F({3, 4}), F({3, 4}), F({3, 4})); });
  bad("masked_fill_mask_not_bool", "masked_fill", [] { ops::masked_fill(F({3, 4}), F({3, 4}), 0.0); });
  bad("masked_fill_mask_shape", "masked_fill", [] { ops::masked_fill(F({3, 4}), Bools({3, 5}), 0.0); });
  bad("lt_shapes", "lt", [] { ops::lt(F({3, 4}), F({2, 4})); });
  bad("eq_shapes", "eq", [] { ops::eq(F({3}), F({4})); });
  bad("exp_i64", "exp", [] { ops::exp(Ids({3})); });
  bad("log_i64", "log", [] { ops::log(Ids({3})); });
  bad("tanh_bool", "tanh", [] { ops::tanh(Bools({3})); });
  bad("softmax_i64", "softmax", [] { ops::softmax(Ids({2, 3}), -1); });
  bad("matmul_inner", "matmul", [] { ops::matmul(F({3, 4}), F({5, 6})); });
  bad("matmul_batch", "matmul", [] { ops::matmul(F({2, 3, 4}), F({3, 4, 5})); });
  bad("matmul_vec_inner", "matmul", [] { ops::matmul(F({4}), F({3})); });
  bad("matmul_dtypes", "matmul", [] { ops::matmul(F({3, 4}), F({4, 5}, DType::f64)); });
  bad("linear_in_features", "linear", [] { ops::linear(F({2, 4}), F({5, 3})); });
  bad("linear_bias_size", "linear", [] { ops::linear(F({2, 4}), F({5, 4}), F({4})); });
  bad("layer_norm_weight_size", "layer_norm", [] { ops::layer_norm(F({2, 5}), F({4}), F({5})); });
  bad("layer_norm_bias_size", "layer_norm", [] { ops::layer_norm(F({2, 5}), F({5}), F({6})); });
  bad("cross_entropy_targets_length", "cross_entropy", [] { ops::cross_entropy(F({4, 5}), Ids({3})); });
  bad("cross_entropy_targets_f32", "cross_entropy", [] { ops::cross_entropy(F({4, 5}), F({4})); });
  bad("mse_loss_shapes", "mse_loss", [] { ops::mse_loss(F({3, 4}), F({4, 3})); });
  bad("sdpa_head_dim", "attention", [] { ops::scaled_dot_product_attention(F({1, 2, 3, 4}), F({1, 2, 3, 5}), F({1, 2, 3, 4})); });
  bad("sdpa_kv_length", "attention", [] { ops::scaled_dot_product_attention(F({1, 2, 3, 4}), F({1, 2, 3, 4}), F({1, 2, 5, 4})); });
  bad("sdpa_rank", "attention", [] { ops::scaled_dot_product_attention(F({2, 3, 4}), F({2, 3, 4}), F({2, 3, 4})); });
  bad("sdpa_padding_mask_shape", "attention", [] {
    ops::AttentionOptions o;
    o.key_padding_mask = Bools({1, 4});
    ops::scaled_dot_product_attention(F({1, 2, 3, 4}), F({1, 2, 3, 4}), F({1, 2, 3, 4}), o);
  });
  bad("embedding_f32_ids", "embedding", [] { ops::embedding(F({5, 3}), F({4})); });
  bad("embedding_weight_1d", "embedding", [] { ops::embedding(F({5}), Ids({4})); });
  bad("cat_mismatched_dims", "cat", [] { ops::cat({F({2, 3}), F({2, 4})}, 0); });
  bad("cat_mismatched_rank", "cat", [] { ops::cat({F({2, 3}), F({3})}, 0); });
  bad("cat_empty", "cat", [] { ops::cat({}, 0); });
  bad("stack_mismatched", "stack", [] { ops::stack({F({2, 3}), F({3, 2})}, 0); });
  bad("gather_index_f32", "gather", [] { ops::gather(F({3, 4}), 0, F({2, 4})); });
  bad("gather_index_rank", "gather", [] { ops::gather(F({3, 4}), 0, Ids({2})); });
  bad("index_select_2d_index", "index_select", [] { ops::index_select(F({3, 4}), 0, Ids({2, 2})); });
  bad("index_select_f32_index", "index_select", [] { ops::index_select(F({3, 4}), 0, F({2})); });
  bad("scatter_add_src_shape", "scatter_add", [] { ops::scatter_add(F({3, 4}), 0, Ids({2, 4}), F({2, 3})); });
  bad("scatter_add_index_f32", "scatter_add", [] { ops::scatter_add(F({3, 4}), 0, F({2, 4}), F({2, 4})); });
  bad("patchify_not_divisible", "patchify", [] { ops::patchify(F({1, 3, 5, 4}), 2); });
  bad("patchify_rank", "patchify", [] { ops::patchify(F({3, 4, 4}), 2); });
  bad("unpatchify_tokens", "unpatchify", [] { ops::unpatchify(F({1, 3, 12}), 2, 3, 4, 4); });
  bad("unpatchify_features", "unpatchify", [] { ops::unpatchify(F({1, 4, 10}), 2, 3, 4, 4); });
  bad("topk_k_too_big", "topk", [] { ops::topk(F({2, 3}), 4); });
  bad("dropout_p_out_of_range", "dropout", [] { ops::dropout(F({4}), 1.5); });
  bad("sum_to_incompatible", "sum_to", [] { ops::sum_to(F({2, 3}), Shape{4}); });
  bad("broadcast_shapes_names_op", "myop", [] { ops::broadcast_shapes("myop", F({2}), F({3})); });
  // Out-of-range dims: any loom::Error (may come from Tensor::wrap_dim, which knows no op name).
  bad("softmax_dim_range", "softmax", [] { ops::softmax(F({2, 3}), 2); }, false);
  bad("sum_dim_range", "sum", [] { ops::sum(F({2, 3}), {3}); }, false);
  bad("argmax_dim_range", "argmax", [] { ops::argmax(F({2, 3}), -3); }, false);
  bad("cat_dim_range", "cat", [] { ops::cat({F({2, 3}), F({2, 3})}, 2); }, false);
  return t;
}

class OpBadCall : public testing::TestWithParam<BadCall> {};

TEST_P(OpBadCall, ThrowsNamingTheOp) {
  const BadCall& b = GetParam();
  if (!b.op_error) {
    EXPECT_THROW(b.call(), loom::Error);
    return;
  }
  EXPECT_THROW(b.call(), loom::OpError);
  try {
    b.call();
  } catch (const loom::OpError& e) {
    EXPECT_NE(std::string(e.what()).find(b.op), std::string::npos)
        << "message does not name '" << b.op << "': " << e.what();
  } catch (...) {
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, OpBadCall, testing::ValuesIn(make_bad_calls()),
                         [](const testing::TestParamInfo<BadCall>& info) { return info.param.name; });

// ============================================================================================
// Random ops, checked statistically
// ============================================================================================

double mean_of(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / double(v.size()); }
double var_of(const std::vector<double>& v) {
  double m = mean_of(v), s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return s / double(v.size());
}

// Positive values, none zero, so a zero in the output means "dropped".
Tensor positive_f64(int64_t n, uint64_t seed) {
  Generator g(seed);
  return ops::add(ops::rand(Shape{n}, g, DType::f64), 0.5);
}

TEST(Dropout, FractionOfZerosIsNearP) {
  for (double p : {0.1, 0.3, 0.7}) {
    Tensor x = positive_f64(40000, 1);
    Generator g(42);
    std::vector<double> y = ops::dropout(x, p, true, g).to_vector<double>();
    double zeros = double(std::count(y.begin(), y.end(), 0.0)) / double(y.size());
    double sd = std::sqrt(p * (1 - p) / double(y.size()));
    EXPECT_NEAR(zeros, p, 6 * sd) << "p = " << p;
  }
}

TEST(Dropout, KeptValuesAreScaled) {
  const double p = 0.25;
  Tensor x = positive_f64(5000, 2);
  Generator g(3);
  Tensor y = ops::dropout(x, p, true, g);
  EXPECT_EQ(y.shape(), x.shape());
  EXPECT_EQ(y.dtype(), DType::f64);
  std::vector<double> xv = x.to_vector<double>(), yv = y.to_vector<double>();
  int kept = 0;
  for (size_t i = 0; i < xv.size(); ++i) {
    if (yv[i] == 0.0) continue;
    ++kept;
    EXPECT_NEAR(yv[i], xv[i] / (1 - p), 1e-12 * xv[i] / (1 - p)) << i;
  }
  EXPECT_GT(kept, 0);
}

TEST(Dropout, KeptValuesAreScaledF32) {
  const double p = 0.5;
  Generator gx(9);
  Tensor x = ops::add(ops::rand(Shape{2000}, gx, DType::f32), 0.5);
  Generator g(4);
  std::vector<double> xv = x.to_vector<double>(), yv = ops::dropout(x, p, true, g).to_vector<double>();
  int kept = 0;
  for (size_t i = 0; i < xv.size(); ++i) {
    if (yv[i] == 0.0) continue;
    ++kept;
    EXPECT_NEAR(yv[i], xv[i] * 2.0, 1e-6 * xv[i] * 2.0) << i;
  }
  EXPECT_GT(kept, 0);
}

TEST(Dropout, SameSeedSameMaskOtherSeedOtherMask) {
  Tensor x = positive_f64(1000, 5);
  Generator g1(7), g2(7), g3(8);
  std::vector<double> a = ops::dropout(x, 0.5, true, g1).to_vector<double>();
  std::vector<double> b = ops::dropout(x, 0.5, true, g2).to_vector<double>();
  std::vector<double> c = ops::dropout(x, 0.5, true, g3).to_vector<double>();
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // The generator advanced: a second draw gives another mask.
  std::vector<double> a2 = ops::dropout(x, 0.5, true, g1).to_vector<double>();
  EXPECT_NE(a, a2);
}

TEST(Dropout, GradientIsMaskTimesScale) {
  const double p = 0.4;
  Tensor x = positive_f64(500, 6).detach();
  x.set_requires_grad(true);
  Generator g(11);
  Tensor y = ops::dropout(x, p, true, g);
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<double> R(500);
  for (double& r : R) r = u(rng);
  ops::sum(ops::mul(y, Tensor::from(R, Shape{500}, DType::f64))).backward();
  ASSERT_TRUE(x.grad().defined());
  std::vector<double> gv = x.grad().to_vector<double>(), yv = y.to_vector<double>();
  for (size_t i = 0; i < gv.size(); ++i) {
    double want = yv[i] == 0.0 ? 0.0 : R[i] / (1 - p);
    EXPECT_NEAR(gv[i], want, 1e-12) << i;
  }
}

TEST(Dropout, EvalAndPZeroAreIdentity) {
  Tensor x = positive_f64(300, 7);
  Generator g(1);
  EXPECT_EQ(ops::dropout(x, 0.5, false, g).to_vector<double>(), x.to_vector<double>());
  EXPECT_EQ(ops::dropout(x, 0.0, true, g).to_vector<double>(), x.to_vector<double>());
}

TEST(Rand, RangeMeanVariance) {
  Generator g(123);
  Tensor t = ops::rand(Shape{200, 100}, g, DType::f64);
  EXPECT_EQ(t.shape(), (Shape{200, 100}));
  EXPECT_EQ(t.dtype(), DType::f64);
  std::vector<double> v = t.to_vector<double>();
  for (double x : v) ASSERT_TRUE(x >= 0.0 && x < 1.0) << x;
  EXPECT_NEAR(mean_of(v), 0.5, 0.01);
  EXPECT_NEAR(var_of(v), 1.0 / 12.0, 0.004);
  EXPECT_GT(std::set<double>(v.begin(), v.end()).size(), v.size() * 99 / 100);  // hardly any repeats
}

TEST(Rand, F32InRangeAndDeterministic) {
  Generator g1(5), g2(5), g3(6);
  Tensor a = ops::rand(Shape{1000}, g1), b = ops::rand(Shape{1000}, g2), c = ops::rand(Shape{1000}, g3);
  EXPECT_EQ(a.dtype(), DType::f32);
  std::vector<double> av = a.to_vector<double>();
  for (double x : av) ASSERT_TRUE(x >= 0.0 && x < 1.0) << x;
  EXPECT_EQ(av, b.to_vector<double>());
  EXPECT_NE(av, c.to_vector<double>());
  uint64_t off = g1.offset();
  EXPECT_GT(off, 0u);
  EXPECT_NE(av, ops::rand(Shape{1000}, g1).to_vector<double>());  // the generator advanced
  EXPECT_GT(g1.offset(), off);
}

TEST(Randn, MeanVarianceAndTails) {
  Generator g(77);
  std::vector<double> v = ops::randn(Shape{40000}, g, DType::f64).to_vector<double>();
  EXPECT_NEAR(mean_of(v), 0.0, 0.03);
  EXPECT_NEAR(var_of(v), 1.0, 0.05);
  double within1 = double(std::count_if(v.begin(), v.end(), [](double x) { return std::fabs(x) < 1; })) / v.size();
  double within2 = double(std::count_if(v.begin(), v.end(), [](double x) { return std::fabs(x) < 2; })) / v.size();
  EXPECT_NEAR(within1, 0.6827, 0.015);
  EXPECT_NEAR(within2, 0.9545, 0.008);
  for (double x : v) ASSERT_TRUE(std::isfinite(x));
}

TEST(Randn, Deterministic) {
  Generator g1(9), g2(9), g3(10);
  std::vector<double> a = ops::randn(Shape{4, 5}, g1).to_vector<double>();
  EXPECT_EQ(a, ops::randn(Shape{4, 5}, g2).to_vector<double>());
  EXPECT_NE(a, ops::randn(Shape{4, 5}, g3).to_vector<double>());
}

TEST(Rand, ManualSeedResetsDefaultGenerator) {
  manual_seed(1234);
  std::vector<double> a = ops::rand(Shape{50}).to_vector<double>();
  std::vector<double> a2 = ops::randn(Shape{50}).to_vector<double>();
  manual_seed(1234);
  EXPECT_EQ(a, ops::rand(Shape{50}).to_vector<double>());
  EXPECT_EQ(a2, ops::randn(Shape{50}).to_vector<double>());
}

TEST(Randperm, IsAPermutation) {
  for (int64_t n : {1, 2, 7, 100}) {
    Generator g(static_cast<uint64_t>(n));
    Tensor p = ops::randperm(n, g);
    EXPECT_EQ(p.dtype(), DType::i64);
    EXPECT_EQ(p.shape(), (Shape{n}));
    std::vector<int64_t> v = p.to_vector<int64_t>();
    std::sort(v.begin(), v.end());
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(v[size_t(i)], i);
  }
}

TEST(Randperm, DeterministicAndShuffled) {
  Generator g1(3), g2(3), g3(4);
  std::vector<int64_t> a = ops::randperm(100, g1).to_vector<int64_t>();
  EXPECT_EQ(a, ops::randperm(100, g2).to_vector<int64_t>());
  EXPECT_NE(a, ops::randperm(100, g3).to_vector<int64_t>());
  std::vector<int64_t> id(100);
  std::iota(id.begin(), id.end(), 0);
  EXPECT_NE(a, id);
}

// f64 uniforms carry 53 random bits (two Philox words each), so large draws have no ties for the
// stable argsort of randperm and noise masking to break by index; 24-bit uniforms would repeat
// about n²/2^25 times (128 times in 2^16 draws).
TEST(Rand, F64HasFiftyThreeBits) {
  Generator g(11);
  (void)ops::rand(Shape{3}, g, DType::f64);  // an offset that is not zero
  const int64_t n = int64_t(1) << 16;
  std::vector<double> v = ops::rand(Shape{n}, g, DType::f64).to_vector<double>();
  for (double x : v) ASSERT_TRUE(x >= 0.0 && x < 1.0) << x;
  EXPECT_EQ(std::set<double>(v.begin(), v.end()).size(), v.size());
  int64_t fine = 0;  // values that are not multiples of 2^-24
  for (double x : v) fine += std::ldexp(x, 24) != std::floor(std::ldexp(x, 24));
  EXPECT_GT(fine, n * 99 / 100);
  int64_t lowest = 0;  // the lowest bit, 2^-53, is set about half the time
  for (double x : v) lowest += int64_t(std::ldexp(x, 53)) & 1;
  EXPECT_NEAR(double(lowest) / double(n), 0.5, 0.02);
  EXPECT_NEAR(mean_of(v), 0.5, 0.005);
}

// Successive f64 draws of odd sizes take disjoint counters (reserve rounds to whole blocks), and
// element i of a draw depends only on its counter: no value repeats across the draws, and a window
// drawn alone at a later offset equals the matching slice of one big draw.
TEST(Rand, F64DrawsUseDisjointCounters) {
  Generator g(12);
  std::vector<double> all;
  for (int64_t n : {1, 2, 3, 5, 7, 1, 4}) {
    std::vector<double> v = ops::rand(Shape{n}, g, DType::f64).to_vector<double>();
    all.insert(all.end(), v.begin(), v.end());
  }
  EXPECT_EQ(std::set<double>(all.begin(), all.end()).size(), all.size());
  Generator big(13);
  std::vector<double> full = ops::rand(Shape{64}, big, DType::f64).to_vector<double>();
  for (uint64_t k : {1u, 2u, 5u, 33u}) {
    Generator w;
    w.set_state(13, k);
    std::vector<double> win = ops::rand(Shape{9}, w, DType::f64).to_vector<double>();
    EXPECT_EQ(win, std::vector<double>(full.begin() + int64_t(k), full.begin() + int64_t(k) + 9)) << "window at " << k;
  }
}

// The 24-bit streams of f32/bf16 (and dropout) stay bit for bit what they were: trained results and
// checkpoints depend on them. Values recorded before f64 got its own 53-bit stream.
TEST(Rand, F32AndBf16NumbersUnchanged) {
  Generator g(42);
  (void)ops::rand(Shape{3}, g);  // offset 4
  EXPECT_EQ(ops::rand(Shape{6}, g).to_vector<float>(),
            (std::vector<float>{0x1.f9b642p-1f, 0x1.4ee9bp-2f, 0x1.071eb4p-1f, 0x1.d13818p-2f, 0x1.a6d804p-1f,
                                0x1.510ebap-1f}));
  Generator h(7);
  EXPECT_EQ(ops::rand(Shape{4}, h, DType::bf16).to_vector<float>(),
            (std::vector<float>{0x1.e8p-1f, 0x1.8p-1f, 0x1.d4p-4f, 0x1.5ep-4f}));
}

TEST(Randperm, LargeIsAPermutation) {
  Generator g(14);
  const int64_t n = 5000;
  std::vector<int64_t> v = ops::randperm(n, g).to_vector<int64_t>();
  std::vector<int64_t> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(sorted[size_t(i)], i);
  int64_t fixed = 0;
  for (int64_t i = 0; i < n; ++i) fixed += v[size_t(i)] == i;
  EXPECT_LT(fixed, 10);  // a uniform permutation has about one fixed point
}

TEST(RandomOps, HaveNoGradient) {
  Generator g(1);
  EXPECT_FALSE(ops::rand(Shape{3}, g).requires_grad());
  EXPECT_FALSE(ops::randn(Shape{3}, g).requires_grad());
  EXPECT_FALSE(ops::randperm(3, g).requires_grad());
}

// ============================================================================================
// Autograd bookkeeping around the ops
// ============================================================================================

TEST(OpAutograd, NoGradGuardStopsRecording) {
  Tensor x = Tensor::from(std::vector<double>{1, 2, 3}, Shape{3}, DType::f64);
  x.set_requires_grad(true);
  {
    NoGradGuard guard;
    EXPECT_FALSE(autograd::grad_enabled());
    Tensor y = ops::mul(x, 2.0);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(y.grad_fn(), nullptr);
  }
  EXPECT_TRUE(autograd::grad_enabled());
  Tensor y = ops::mul(x, 2.0);
  EXPECT_TRUE(y.requires_grad());
  EXPECT_NE(y.grad_fn(), nullptr);
}

TEST(OpAutograd, ComparisonsAndIndicesCarryNoGradient) {
  Tensor x = Tensor::from(std::vector<double>{1, 3, 2}, Shape{3}, DType::f64);
  x.set_requires_grad(true);
  EXPECT_FALSE(ops::lt(x, 2.0).requires_grad());
  EXPECT_FALSE(ops::argmax(x, 0).requires_grad());
  EXPECT_FALSE(ops::argsort(x).requires_grad());
  ops::TopK tk = ops::topk(x, 2);
  EXPECT_FALSE(tk.indices.requires_grad());
  EXPECT_TRUE(tk.values.requires_grad());
}

TEST(OpAutograd, TopkValuesGradientGoesToSelectedElements) {
  Tensor x = Tensor::from(std::vector<double>{0.5, 3.0, -1.0, 2.0}, Shape{4}, DType::f64);
  x.set_requires_grad(true);
  ops::TopK tk = ops::topk(x, 2);
  EXPECT_EQ(tk.values.to_vector<double>(), (std::vector<double>{3.0, 2.0}));
  EXPECT_EQ(tk.indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 3}));
  ops::sum(ops::mul(tk.values, Tensor::from(std::vector<double>{10, 20}, Shape{2}, DType::f64))).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 10, 0, 20}));
}

TEST(OpAutograd, GradientAccumulatesAcrossUses) {
  // y = x*x + 3x: dy/dx = 2x + 3, with x used three times in the graph.
  Tensor x = Tensor::from(std::vector<double>{1.5, -2.0}, Shape{2}, DType::f64);
  x.set_requires_grad(true);
  ops::sum(ops::add(ops::mul(x, x), ops::mul(x, 3.0))).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{6.0, -1.0}));
}

#else  // LOOM_OP_CASES_ON_CUDA: the same table on the GPU (binary test_cuda_op_cases, label gpu)

// Every case on CUDA, as ggml's test-backend-ops runs every backend against the CPU: inputs built
// on the CPU as for the f32 (and bf16) suites, copied to the device, the op run there; the output
// compared with the reference at the CPU suites' tolerances, and for differentiable cases the
// gradients of sum(out * R) compared with the CPU's. A case that builds a helper tensor on the
// CPU inside its graph fails here with a device mismatch, which is what this suite is for.
bool have_gpu() { return cuda_device_count() > 0; }

std::vector<Tensor> to_cuda(const std::vector<Tensor>& ts) {
  std::vector<Tensor> out;
  for (const Tensor& t : ts) out.push_back(t.to(Device::cuda()));
  return out;
}

void run_forward_cuda(const OpCase& c, DType dt, double rtol, double atol) {
  Built b = build(c, dt);
  Ref want = c.ref(b.ref_inputs);
  std::vector<Tensor> dev = to_cuda(b.bases);
  Tensor out = c.fwd(op_inputs(c, dev));
  ASSERT_TRUE(out.defined());
  EXPECT_TRUE(out.device() == Device::cuda()) << "output on " << out.device().str();
  ASSERT_EQ(out.shape().vec(), want.shape) << "got " << shape_str(out.shape().vec()) << ", want " << shape_str(want.shape);
  EXPECT_EQ(out.dtype(), c.out_dtype.value_or(dt));
  expect_close(out.to(Device::cpu()).to_vector<double>(), want.v, rtol, atol,
               c.name + " forward on cuda " + std::string(dtype_name(dt)));
  for (size_t i = 0; i < dev.size(); ++i)
    EXPECT_EQ(dev[i].to(Device::cpu()).to_vector<double>(), b.base_vals[i]) << "input " << i << " was modified";
}

// Leaf gradients of sum(out * R) on `device`, for the inputs built as f32.
std::vector<std::vector<double>> f32_gradients(const OpCase& c, Device device) {
  Built b = build(c, DType::f32);
  std::vector<Tensor> leaves = device.is_cpu() ? b.bases : to_cuda(b.bases);
  for (size_t i = 0; i < c.ins.size(); ++i)
    if (c.ins[i].is_float()) leaves[i].set_requires_grad(true);
  Tensor out = c.fwd(op_inputs(c, leaves));
  std::mt19937 rng(seed_of(c.name) ^ 0x9e3779b9u);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> R(static_cast<size_t>(out.numel()));
  for (double& r : R) r = u(rng);
  ops::sum(ops::mul(out, Tensor::from(R, out.shape(), DType::f32).to(device))).backward();
  std::vector<std::vector<double>> grads;
  for (size_t i = 0; i < c.ins.size(); ++i)
    if (c.ins[i].is_float()) {
      Tensor g = leaves[i].grad();
      grads.push_back(g.defined() ? g.to(Device::cpu()).to_vector<double>() : std::vector<double>());
    }
  return grads;
}

class OpCudaF32 : public testing::TestWithParam<OpCase> {};
class OpCudaBF16 : public testing::TestWithParam<OpCase> {};
class OpCudaGradient : public testing::TestWithParam<OpCase> {};

TEST_P(OpCudaF32, MatchesReference) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device on this machine";
  const OpCase& c = GetParam();
  run_forward_cuda(c, DType::f32, c.rtol32, c.atol32);
}
TEST_P(OpCudaBF16, MatchesReference) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device on this machine";
  const OpCase& c = GetParam();
  run_forward_cuda(c, DType::bf16, c.rtol16, c.atol16);
}
TEST_P(OpCudaGradient, MatchesCpu) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device on this machine";
  const OpCase& c = GetParam();
  const auto cpu = f32_gradients(c, Device::cpu()), gpu = f32_gradients(c, Device::cuda());
  ASSERT_EQ(cpu.size(), gpu.size());
  for (size_t i = 0; i < cpu.size(); ++i)
    expect_close(gpu[i], cpu[i], 10 * c.rtol32, 10 * c.atol32, c.name + " gradient on cuda of float input " + std::to_string(i));
}

INSTANTIATE_TEST_SUITE_P(Ops, OpCudaF32, testing::ValuesIn(all_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(Ops, OpCudaBF16, testing::ValuesIn(select_cases([](const OpCase& c) { return c.bf16; })),
                         case_name);
INSTANTIATE_TEST_SUITE_P(Ops, OpCudaGradient,
                         testing::ValuesIn(select_cases([](const OpCase& c) {
                           return (c.grad || c.device_grad) && has_float_input(c);
                         })),
                         case_name);
#endif  // LOOM_OP_CASES_ON_CUDA

}  // namespace
