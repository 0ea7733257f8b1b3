#include "losses/classification.h"
#include "core/error.h"

namespace loom {

Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& targets) {
  if (logits.dim() != 2 || targets.shape() != logits.shape() || targets.dtype() != logits.dtype())
    throw OpError(str_cat("binary_cross_entropy_with_logits: logits ", logits.describe(), " and targets ", targets.describe(),
                          " must be [N, C] of one shape and dtype"));
  // log(1 + e^x) = logsumexp(0, x): stable for any x, and its gradient is sigmoid(x) everywhere.
  const int64_t N = logits.size(0), C = logits.size(1);
  const Tensor pairs = ops::cat({Tensor::zeros({N, C, 1}, logits.dtype(), logits.device()), logits.reshape({N, C, 1})}, 2);
  return ops::mean(ops::sub(ops::logsumexp(pairs, {2}), ops::mul(logits, targets)));
}

Tensor soft_target_cross_entropy(const Tensor& logits, const Tensor& targets) {
  if (logits.dim() != 2 || targets.shape() != logits.shape() || targets.dtype() != logits.dtype())
    throw OpError(str_cat("soft_target_cross_entropy: logits ", logits.describe(), " and targets ", targets.describe(),
                          " must be [N, C] of one shape and dtype"));
  return ops::neg(ops::mean(ops::sum(ops::mul(targets, ops::log_softmax(logits, -1)), {1})));
}

}  // namespace loom
