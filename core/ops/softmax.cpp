// softmax and log_softmax along any dim (moved last when it is not already the last, contiguous dim).
#include "core/ops/common.h"

namespace loom::ops {
using namespace detail;

namespace {

Tensor softmax_impl(const char* name, const Tensor& x_in, int dim, bool log) {
  const Tensor x = autocast_f32(x_in);
  LOOM_OP_SCOPE(name);
  check_float_operands(name, {{"x", x}});
  if (x.dim() == 0) return log ? mul(x, 0.0) : add(mul(x, 0.0), 1.0);
  const int d = wrap_dim(name, dim, x.dim()), last = x.dim() - 1;
  Tensor xt = (d == last ? x.detach() : x.detach().transpose(d, last)).contiguous();
  Tensor yt = Tensor::empty(xt.shape(), xt.dtype(), xt.device());
  LOOM_KERNEL(yt.device(), softmax, xt.view_desc(), yt.view_desc(), log);
  Tensor y = d == last ? yt : yt.transpose(d, last);
  // The rule keeps the probabilities through a detached handle: for the last dim yt *is* the output,
  // and capturing it would make output -> grad_fn -> rule -> output a cycle that is never freed.
  Tensor ys = yt.detach();
  return autograd::record(name, {x}, y, [ys, d, last, log](const Tensor& g) {
    Tensor gt = (d == last ? g : g.transpose(d, last)).contiguous();
    Tensor dx = Tensor::empty(gt.shape(), gt.dtype(), gt.device());
    LOOM_KERNEL(dx.device(), softmax_backward, ys.view_desc(), gt.view_desc(), dx.view_desc(), log);
    return std::vector<Tensor>{d == last ? dx : dx.transpose(d, last)};
  });
}

}  // namespace

Tensor softmax(const Tensor& x, int dim) { return softmax_impl("softmax", x, dim, false); }
Tensor log_softmax(const Tensor& x, int dim) { return softmax_impl("log_softmax", x, dim, true); }

}  // namespace loom::ops
