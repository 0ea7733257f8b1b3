// Reductions: sum, mean, amax, logsumexp (differentiable), argmax (not).
#include <cmath>
#include "core/ops/common.h"

namespace loom::ops {
using namespace detail;
using kernels::cpu::Reduce;

namespace {

// Runs the kernel; returns the keepdim result.
Tensor reduce_keepdim(Reduce k, const Tensor& x, uint32_t mask) {
  Tensor out = Tensor::empty(reduced_shape(x.shape(), mask, true), x.dtype(), x.device());
  if (x.numel() == 0) {
    out.fill_(k == Reduce::sum ? 0.0 : -INFINITY);
    return out;
  }
  LOOM_KERNEL(out.device(), reduce, k, x.view_desc(), mask, out.view_desc());
  return out;
}

Tensor drop_dims(const Tensor& kept, const Shape& x_shape, uint32_t mask, bool keepdim) {
  return keepdim ? kept : kept.reshape(reduced_shape(x_shape, mask, false));
}

}  // namespace

Tensor sum(const Tensor& x_in, const std::vector<int>& dims, bool keepdim) {
  const Tensor x = autocast_f32(x_in);
  LOOM_OP_SCOPE("sum");
  check_float_operands("sum", {{"x", x}});
  const uint32_t mask = dims_mask("sum", dims, x.dim());
  Tensor out = reduce_keepdim(Reduce::sum, x, mask);
  const Shape xs = x.shape(), ks = out.shape();
  out = autograd::record("sum", {x}, out, [xs, ks](const Tensor& g) {
    return std::vector<Tensor>{g.reshape(ks).expand(xs)};
  });
  return drop_dims(out, xs, mask, keepdim);
}

Tensor mean(const Tensor& x_in, const std::vector<int>& dims, bool keepdim) {
  const Tensor x = autocast_f32(x_in);
  LOOM_OP_SCOPE("mean");
  check_float_operands("mean", {{"x", x}});
  const uint32_t mask = dims_mask("mean", dims, x.dim());
  int64_t count = 1;
  for (int d = 0; d < x.dim(); ++d) if (mask >> d & 1u) count *= x.shape()[d];
  return mul(sum(x, dims, keepdim), 1.0 / double(count));
}

Tensor amax(const Tensor& x, const std::vector<int>& dims, bool keepdim) {
  LOOM_OP_SCOPE("amax");
  check_float_operands("amax", {{"x", x}});
  const uint32_t mask = dims_mask("amax", dims, x.dim());
  if (x.numel() == 0) fail("amax", "cannot reduce an empty tensor", {{"x", x}});
  Tensor out = reduce_keepdim(Reduce::amax, x, mask);
  const Shape xs = x.shape();
  Tensor xv = x.detach(), mv = out.detach();
  std::vector<int> rdims;
  for (int d = 0; d < x.dim(); ++d) if (mask >> d & 1u) rdims.push_back(d);
  out = autograd::record("amax", {x}, out, [xv, mv, rdims](const Tensor& g) {
    // Ties share the gradient evenly, as PyTorch's amax does.
    Tensor hit = eq(xv, mv).to(xv.dtype());
    Tensor count = rdims.empty() ? hit : sum(hit, rdims, true);
    return std::vector<Tensor>{mul(hit, div(g, count))};
  });
  return drop_dims(out, xs, mask, keepdim);
}

Tensor logsumexp(const Tensor& x_in, const std::vector<int>& dims, bool keepdim) {
  const Tensor x = autocast_f32(x_in);
  LOOM_OP_SCOPE("logsumexp");
  check_float_operands("logsumexp", {{"x", x}});
  if (dims.empty()) fail("logsumexp", "needs at least one dim", {{"x", x}});
  const uint32_t mask = dims_mask("logsumexp", dims, x.dim());
  Tensor out = reduce_keepdim(Reduce::logsumexp, x, mask);
  const Shape xs = x.shape();
  Tensor xv = x.detach(), lv = out.detach();
  out = autograd::record("logsumexp", {x}, out, [xv, lv](const Tensor& g) {
    return std::vector<Tensor>{mul(g, exp(sub(xv, lv)))};
  });
  return drop_dims(out, xs, mask, keepdim);
}

Tensor argmax(const Tensor& x, int dim, bool keepdim) {
  check_float_operands("argmax", {{"x", x}});
  const int d = wrap_dim("argmax", dim, x.dim());
  if (x.numel() == 0) fail("argmax", "cannot reduce an empty tensor", {{"x", x}});
  if (x.dim() == 0) return Tensor::zeros({}, DType::i64);
  const uint32_t mask = 1u << d;
  Tensor out = Tensor::empty(reduced_shape(x.shape(), mask, true), DType::i64, x.device());
  LOOM_KERNEL(out.device(), argmax, x.view_desc(), d, out.view_desc());
  return keepdim ? out : out.reshape(reduced_shape(x.shape(), mask, false));
}

}  // namespace loom::ops
