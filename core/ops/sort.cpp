// argsort and topk along any dim (moved last for the kernel).
#include "core/ops/common.h"

namespace loom::ops {
using namespace detail;

Tensor argsort(const Tensor& x, int dim, bool descending) {
  LOOM_OP_SCOPE("argsort");
  check_defined("argsort", {{"x", x}});
  check_device("argsort", {{"x", x}});
  if (x.dim() == 0) return Tensor::zeros({}, DType::i64);
  const int d = wrap_dim("argsort", dim, x.dim()), last = x.dim() - 1;
  Tensor xt = (d == last ? x.detach() : x.detach().transpose(d, last)).contiguous();
  Tensor out = Tensor::empty(xt.shape(), DType::i64, x.device());
  LOOM_KERNEL(out.device(), argsort, xt.view_desc(), descending, out.view_desc());
  return d == last ? out : out.transpose(d, last).contiguous();
}

TopK topk(const Tensor& x, int64_t k, int dim, bool largest) {
  check_float_operands("topk", {{"x", x}});
  const int d = wrap_dim("topk", dim, x.dim());
  const int64_t n = x.dim() ? x.shape()[d] : 1;
  if (k < 0 || k > n) fail("topk", str_cat("k = ", k, " is outside [0, ", n, "]"), {{"x", x}});
  if (x.dim() == 0) return {x, Tensor::zeros({}, DType::i64)};
  Tensor idx = argsort(x, d, largest).narrow(d, 0, k).contiguous();
  return {gather(x, d, idx), idx};
}

}  // namespace loom::ops
