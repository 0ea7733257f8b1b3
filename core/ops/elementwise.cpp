// Elementwise ops with broadcasting: arithmetic, unary math, activations, clamp, where, comparisons.
#include <cmath>
#include <cmath>
#include "core/ops/common.h"

namespace loom::ops {
using namespace detail;
using kernels::cpu::Binary;
using kernels::cpu::Unary;

Shape broadcast_shapes(const char* op, const Tensor& a, const Tensor& b) {
  Shape out;
  if (!broadcast_shape(a.shape(), b.shape(), out)) fail(op, "shapes do not broadcast", {{"a", a}, {"b", b}});
  return out;
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  const int lead = g.dim() - shape.size();
  bool ok = lead >= 0;
  for (int d = 0; ok && d < shape.size(); ++d) ok = shape[d] == 1 || shape[d] == g.shape()[d + lead];
  if (!ok) throw OpError(str_cat("sum_to: ", g.describe(), " does not broadcast from shape ", shape));
  std::vector<int> dims;
  for (int d = 0; d < g.dim(); ++d)
    if (d < lead || (shape[d - lead] == 1 && g.shape()[d] != 1)) dims.push_back(d);
  Tensor s = dims.empty() ? g : sum(g, dims, true);
  return s.reshape(shape);
}

namespace {

Tensor binary_kernel(Binary k, const Tensor& a, const Tensor& b, const Shape& shape, DType out_dtype) {
  Tensor out = Tensor::empty(shape, out_dtype, a.device());
  LOOM_KERNEL(out.device(), binary, k, broadcast_view(a, shape), broadcast_view(b, shape), out.view_desc());
  return out;
}

Tensor unary_kernel(Unary k, const Tensor& x, double p0 = 0, double p1 = 0) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  LOOM_KERNEL(out.device(), unary, k, x.view_desc(), out.view_desc(), p0, p1);
  return out;
}

// a ∘ b for the four arithmetic ops; checks, broadcast, and the gradient rule.
Tensor arithmetic(const char* name, Binary k, const Tensor& a_in, const Tensor& b_in) {
  Tensor a = a_in, b = b_in;
  autocast_promote({&a, &b});
  LOOM_OP_SCOPE(name);
  check_float_operands(name, {{"a", a}, {"b", b}});
  const Shape shape = broadcast_shapes(name, a, b);
  Tensor out = binary_kernel(k, a, b, shape, a.dtype());
  const Shape sa = a.shape(), sb = b.shape();
  switch (k) {
    case Binary::add:
      return autograd::record(name, {a, b}, out, [sa, sb](const Tensor& g) {
        return std::vector<Tensor>{sum_to(g, sa), sum_to(g, sb)};
      });
    case Binary::sub:
      return autograd::record(name, {a, b}, out, [sa, sb](const Tensor& g) {
        return std::vector<Tensor>{sum_to(g, sa), sum_to(neg(g), sb)};
      });
    case Binary::mul: {
      const bool ga = a.requires_grad(), gb = b.requires_grad();
      Tensor sa_val = gb ? a.detach() : Tensor(), sb_val = ga ? b.detach() : Tensor();
      return autograd::record(name, {a, b}, out, [sa, sb, sa_val, sb_val](const Tensor& g) {
        return std::vector<Tensor>{sb_val.defined() ? sum_to(mul(g, sb_val), sa) : Tensor(),
                                   sa_val.defined() ? sum_to(mul(g, sa_val), sb) : Tensor()};
      });
    }
    default: {  // div
      Tensor av = a.detach(), bv = b.detach();
      return autograd::record(name, {a, b}, out, [sa, sb, av, bv](const Tensor& g) {
        Tensor ga = div(g, bv);
        return std::vector<Tensor>{sum_to(ga, sa), sum_to(neg(mul(ga, div(av, bv))), sb)};
      });
    }
  }
}

// y = f(x) with gradient g * dfdx, where dfdx is computed from (x, y) when needed.
template <class Rule>
Tensor unary(const char* name, Unary k, const Tensor& x, Rule rule, double p0 = 0, double p1 = 0) {
  LOOM_OP_SCOPE(name);
  check_float_operands(name, {{"x", x}});
  Tensor y = unary_kernel(k, x, p0, p1);
  if (!x.requires_grad() || !autograd::grad_enabled()) return y;
  Tensor xs = x.detach(), ys = y.detach();
  return autograd::record(name, {x}, y, [xs, ys, rule](const Tensor& g) { return std::vector<Tensor>{rule(g, xs, ys)}; });
}

Tensor compare(const char* name, Binary k, const Tensor& a, const Tensor& b) {
  LOOM_OP_SCOPE(name);
  check_defined(name, {{"a", a}, {"b", b}});
  check_device(name, {{"a", a}, {"b", b}});
  check_same_dtype(name, {{"a", a}, {"b", b}});
  return binary_kernel(k, a, b, broadcast_shapes(name, a, b), DType::boolean);
}

Tensor scalar_like(double v, const Tensor& t) { return Tensor::scalar(v, t.dtype(), t.device()); }

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return arithmetic("add", Binary::add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return arithmetic("sub", Binary::sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return arithmetic("mul", Binary::mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return arithmetic("div", Binary::div, a, b); }

Tensor add(const Tensor& a, double b) {
  return unary("add_scalar", Unary::add_scalar, a, [](const Tensor& g, const Tensor&, const Tensor&) { return g; }, b);
}
Tensor mul(const Tensor& a, double b) {
  return unary("mul_scalar", Unary::mul_scalar, a, [b](const Tensor& g, const Tensor&, const Tensor&) { return mul(g, b); }, b);
}
Tensor rsub(double a, const Tensor& b) {
  return unary("rsub", Unary::rsub_scalar, b, [](const Tensor& g, const Tensor&, const Tensor&) { return neg(g); }, a);
}
Tensor rdiv(double a, const Tensor& b) {  // d(a/b)/db = -a/b² = -y/b
  return unary("rdiv", Unary::rdiv_scalar, b,
               [](const Tensor& g, const Tensor& x, const Tensor& y) { return neg(mul(g, div(y, x))); }, a);
}
Tensor neg(const Tensor& x) {
  return unary("neg", Unary::neg, x, [](const Tensor& g, const Tensor&, const Tensor&) { return neg(g); });
}
Tensor exp(const Tensor& x) {
  return unary("exp", Unary::exp, x, [](const Tensor& g, const Tensor&, const Tensor& y) { return mul(g, y); });
}
Tensor log(const Tensor& x) {
  return unary("log", Unary::log, x, [](const Tensor& g, const Tensor& x, const Tensor&) { return div(g, x); });
}
Tensor sqrt(const Tensor& x) {
  return unary("sqrt", Unary::sqrt, x, [](const Tensor& g, const Tensor&, const Tensor& y) { return div(mul(g, 0.5), y); });
}
Tensor rsqrt(const Tensor& x) {  // d/dx x^-1/2 = -y³/2
  return unary("rsqrt", Unary::rsqrt, x,
               [](const Tensor& g, const Tensor&, const Tensor& y) { return mul(g, mul(pow(y, 3.0), -0.5)); });
}
Tensor pow(const Tensor& x, double p) {
  return unary("pow", Unary::pow, x,
               [p](const Tensor& g, const Tensor& x, const Tensor&) { return mul(g, mul(pow(x, p - 1.0), p)); }, p);
}
Tensor tanh(const Tensor& x) {
  return unary("tanh", Unary::tanh, x,
               [](const Tensor& g, const Tensor&, const Tensor& y) { return mul(g, rsub(1.0, mul(y, y))); });
}
Tensor sigmoid(const Tensor& x) {
  return unary("sigmoid", Unary::sigmoid, x,
               [](const Tensor& g, const Tensor&, const Tensor& y) { return mul(g, mul(y, rsub(1.0, y))); });
}
Tensor relu(const Tensor& x) {
  return unary("relu", Unary::relu, x, [](const Tensor& g, const Tensor& x, const Tensor&) {
    return binary_kernel(Binary::step_backward, g, x, g.shape(), g.dtype());
  });
}
Tensor gelu(const Tensor& x, GeluApprox approx) {
  const bool erf = approx == GeluApprox::erf;
  return unary(erf ? "gelu" : "gelu_tanh", erf ? Unary::gelu_erf : Unary::gelu_tanh, x,
               [erf](const Tensor& g, const Tensor& x, const Tensor&) {
                 return binary_kernel(erf ? Binary::gelu_erf_backward : Binary::gelu_tanh_backward, g, x, g.shape(),
                                      g.dtype());
               });
}

Tensor quick_gelu(const Tensor& x) {
  return unary("quick_gelu", Unary::quick_gelu, x, [](const Tensor& g, const Tensor& x, const Tensor&) {
    return binary_kernel(Binary::quick_gelu_backward, g, x, g.shape(), g.dtype());
  });
}

Tensor clamp(const Tensor& x, std::optional<double> lo, std::optional<double> hi) {
  LOOM_OP_SCOPE("clamp");
  const double a = lo.value_or(-INFINITY), b = hi.value_or(INFINITY);
  if (a > b) throw OpError(str_cat("clamp: min ", a, " is greater than max ", b));
  return unary("clamp", Unary::clamp, x, [a, b](const Tensor& g, const Tensor& x, const Tensor&) {
    Tensor inside = ops::where(ge(x, scalar_like(a, x)), le(x, scalar_like(b, x)), Tensor::scalar(0, DType::boolean, x.device()));
    return ops::where(inside, g, Tensor::zeros({}, g.dtype(), g.device()));
  }, a, b);
}

Tensor where(const Tensor& cond, const Tensor& a_in, const Tensor& b_in) {
  Tensor a = a_in, b = b_in;
  autocast_promote({&a, &b});
  LOOM_OP_SCOPE("where");
  check_defined("where", {{"cond", cond}, {"a", a}, {"b", b}});
  check_device("where", {{"cond", cond}, {"a", a}, {"b", b}});
  if (cond.dtype() != DType::boolean) fail("where", "cond must be bool", {{"cond", cond}});
  check_same_dtype("where", {{"a", a}, {"b", b}});
  Shape shape = broadcast_shapes("where", a, b);
  if (!broadcast_shape(cond.shape(), Shape(shape), shape))
    fail("where", "cond does not broadcast with a and b", {{"cond", cond}, {"a", a}, {"b", b}});
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  LOOM_KERNEL(out.device(), where, broadcast_view(cond, shape), broadcast_view(a, shape), broadcast_view(b, shape), out.view_desc());
  if (!is_floating(a.dtype())) return out;
  const Shape sa = a.shape(), sb = b.shape();
  Tensor c = cond.detach();
  return autograd::record("where", {a, b}, out, [c, sa, sb](const Tensor& g) {
    Tensor zero = Tensor::zeros({}, g.dtype(), g.device());
    return std::vector<Tensor>{sum_to(where(c, g, zero), sa), sum_to(where(c, zero, g), sb)};
  });
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  LOOM_OP_SCOPE("masked_fill");
  check_float_operands("masked_fill", {{"x", x}});
  check_defined("masked_fill", {{"mask", mask}});
  if (mask.dtype() != DType::boolean) fail("masked_fill", "mask must be bool", {{"x", x}, {"mask", mask}});
  if (!(broadcast_shapes("masked_fill", x, mask) == x.shape()))
    fail("masked_fill", "mask must broadcast to x's shape", {{"x", x}, {"mask", mask}});
  return where(mask, scalar_like(value, x), x);
}

Tensor eq(const Tensor& a, const Tensor& b) { return compare("eq", Binary::eq, a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare("ne", Binary::ne, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare("lt", Binary::lt, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return compare("le", Binary::le, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare("gt", Binary::gt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare("ge", Binary::ge, a, b); }
Tensor eq(const Tensor& a, double b) { return eq(a, scalar_like(b, a)); }
Tensor lt(const Tensor& a, double b) { return lt(a, scalar_like(b, a)); }
Tensor gt(const Tensor& a, double b) { return gt(a, scalar_like(b, a)); }

Tensor logical_not(const Tensor& x) {
  check_defined("logical_not", {{"x", x}});
  check_device("logical_not", {{"x", x}});
  Tensor out = Tensor::empty(x.shape(), DType::boolean, x.device());
  LOOM_KERNEL(out.device(), unary, Unary::logical_not, x.view_desc(), out.view_desc(), 0.0, 0.0);
  return out;
}

}  // namespace loom::ops
