// layer_norm (one fused op, statistics saved for backward) and l2_normalize.
#include "core/ops/common.h"

namespace loom::ops {
using namespace detail;

Tensor layer_norm(const Tensor& x_in, const Tensor& weight, const Tensor& bias, double eps) {
  const Tensor x = autocast_f32(x_in);
  LOOM_OP_SCOPE("layer_norm");
  check_float_operands("layer_norm", {{"x", x}});
  if (x.dim() < 1) fail("layer_norm", "x needs at least 1 dim", {{"x", x}});
  const int64_t c = x.shape().back();
  for (const Tensor* p : {&weight, &bias}) {
    if (!p->defined()) continue;
    check_float_operands("layer_norm", {{"x", x}, {p == &weight ? "weight" : "bias", *p}});
    if (p->dim() != 1 || p->shape()[0] != c)
      fail("layer_norm", str_cat(p == &weight ? "weight" : "bias", " must be [", c, "], the last dim of x"),
           {{"x", x}, {p == &weight ? "weight" : "bias", *p}});
  }
  if (!(eps >= 0)) fail("layer_norm", str_cat("eps must be >= 0, got ", eps), {{"x", x}});
  Tensor xc = x.detach().contiguous();
  Tensor w = weight.defined() ? weight.detach().contiguous() : Tensor();
  Tensor b = bias.defined() ? bias.detach().contiguous() : Tensor();
  const int64_t rows = c ? x.numel() / c : 0;
  const DType st = stat_dtype(x.dtype());
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({rows}, st, x.device()), rstd = Tensor::empty({rows}, st, x.device());
  LOOM_KERNEL(xc.device(), layer_norm_forward, xc.view_desc(), w.defined() ? w.view_desc() : null_view(),
                                   b.defined() ? b.view_desc() : null_view(), eps, y.view_desc(), mean.view_desc(),
                                   rstd.view_desc());
  const bool gw = weight.defined() && weight.requires_grad(), gb = bias.defined() && bias.requires_grad();
  return autograd::record("layer_norm", {x, weight, bias}, y, [xc, w, mean, rstd, c, gw, gb](const Tensor& g) {
    Tensor gc = g.contiguous();
    Tensor dx = Tensor::empty(xc.shape(), xc.dtype(), xc.device());
    Tensor dw = gw ? Tensor::empty({c}, xc.dtype(), xc.device()) : Tensor();
    Tensor db = gb ? Tensor::empty({c}, xc.dtype(), xc.device()) : Tensor();
    LOOM_KERNEL(xc.device(), layer_norm_backward, gc.view_desc(), xc.view_desc(), w.defined() ? w.view_desc() : null_view(),
                                      mean.view_desc(), rstd.view_desc(), dx.view_desc(),
                                      gw ? dw.view_desc() : null_view(), gb ? db.view_desc() : null_view());
    return std::vector<Tensor>{dx, dw, db};
  });
}

Tensor l2_normalize(const Tensor& x_in, int dim, double eps) {
  const Tensor x = autocast_f32(x_in);
  LOOM_OP_SCOPE("l2_normalize");
  check_float_operands("l2_normalize", {{"x", x}});
  const int d = wrap_dim("l2_normalize", dim, x.dim());
  // x / max(‖x‖, eps) written as x · rsqrt(max(‖x‖², eps²)), so an all-zero row gets a zero
  // gradient instead of 0/0 from the square root.
  return mul(x, rsqrt(clamp(sum(mul(x, x), {d}, true), eps * eps, std::nullopt)));
}

}  // namespace loom::ops
