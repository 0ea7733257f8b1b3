// Losses: cross_entropy fused with log-softmax (no probabilities kept), mse_loss.
#include <cmath>
#include "core/ops/common.h"

namespace loom::ops {
using namespace detail;

Tensor cross_entropy(const Tensor& logits_in, const Tensor& targets, int64_t ignore_index, double label_smoothing) {
  const Tensor logits = autocast_f32(logits_in);
  LOOM_OP_SCOPE("cross_entropy");
  check_float_operands("cross_entropy", {{"logits", logits}});
  check_defined("cross_entropy", {{"targets", targets}});
  check_device("cross_entropy", {{"logits", logits}, {"targets", targets}});
  check_index_dtype("cross_entropy", {"targets", targets});
  if (logits.dim() < 1) fail("cross_entropy", "logits need a class dim", {{"logits", logits}});
  const int64_t c = logits.shape().back();
  Shape rows_shape(logits.shape().begin(), logits.shape().end() - 1);
  if (!(targets.shape() == rows_shape))
    fail("cross_entropy", str_cat("targets must have shape ", rows_shape, " (logits without the class dim)"),
         {{"logits", logits}, {"targets", targets}});
  if (!(label_smoothing >= 0.0 && label_smoothing <= 1.0))
    fail("cross_entropy", str_cat("label_smoothing must be in [0, 1], got ", label_smoothing), {{"logits", logits}});
  if (c == 0) fail("cross_entropy", "there are no classes", {{"logits", logits}});
  Tensor x = logits.detach().contiguous(), t = targets.contiguous();
  check_index_range("cross_entropy", "cross_entropy targets", t, c, {{"logits", logits}, {"targets", targets}}, ignore_index);
  const int64_t rows = t.numel();
  const DType st = stat_dtype(x.dtype());
  Tensor losses = Tensor::empty({rows}, st, x.device()), lse = Tensor::empty({rows}, st, x.device());
  LOOM_KERNEL(x.device(), cross_entropy_forward, x.view_desc(), t.view_desc(), ignore_index, label_smoothing, losses.view_desc(),
                                      lse.view_desc());
  // Mean over kept rows; with none kept the mean is 0/0 = NaN, as in PyTorch. The count and the
  // mean stay on the tensors' device: no read-back, so a GPU step does not wait for the loss.
  Tensor kept;
  {
    NoGradGuard ng;
    kept = sum(logical_not(eq(t, double(ignore_index))).to(st));
  }
  Tensor out = div(sum(losses), kept).to(x.dtype());
  return autograd::record("cross_entropy", {logits}, out, [x, t, lse, ignore_index, label_smoothing, kept](const Tensor& g) {
    Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    LOOM_KERNEL(x.device(), cross_entropy_backward, x.view_desc(), t.view_desc(), lse.view_desc(), ignore_index, label_smoothing,
                                         1.0, dx.view_desc());
    return std::vector<Tensor>{mul(dx, div(g.to(kept.dtype()), kept).to(dx.dtype()))};
  });
}

Tensor mse_loss(const Tensor& input_in, const Tensor& target_in) {
  const Tensor input = autocast_f32(input_in);
  const Tensor target = autocast_f32(target_in);
  LOOM_OP_SCOPE("mse_loss");
  check_float_operands("mse_loss", {{"input", input}, {"target", target}});
  if (!(input.shape() == target.shape())) fail("mse_loss", "input and target shapes differ", {{"input", input}, {"target", target}});
  Tensor d = sub(input, target);
  return mean(mul(d, d));
}

}  // namespace loom::ops
