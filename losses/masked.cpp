#include "losses/masked.h"

namespace loom {

Tensor mae_target(const Tensor& patches, bool norm_pix) {
  if (patches.dim() != 3 || patches.size(2) < 2)
    throw OpError(str_cat("mae_target: patches must be [B, N, P] with P >= 2, got ", patches.describe()));
  if (!norm_pix) return patches;
  const int64_t P = patches.size(2);
  Tensor mean = ops::mean(patches, {2}, true);
  Tensor centred = ops::sub(patches, mean);
  Tensor var = ops::mul(ops::sum(ops::mul(centred, centred), {2}, true), 1.0 / double(P - 1));
  return ops::mul(centred, ops::rsqrt(ops::add(var, 1e-6)));
}

Tensor masked_mse(const Tensor& pred, const Tensor& target, const Tensor& mask) {
  if (pred.dim() != 3 || pred.shape() != target.shape() || mask.dim() != 2 || mask.size(0) != pred.size(0) ||
      mask.size(1) != pred.size(1))
    throw OpError(str_cat("masked_mse: pred and target must be [B, N, P] and mask [B, N], got pred: ", pred.describe(),
                          ", target: ", target.describe(), ", mask: ", mask.describe()));
  Tensor d = ops::sub(pred, target);
  Tensor per_patch = ops::mean(ops::mul(d, d), {2});  // [B, N]
  Tensor m = mask.detach().to(per_patch.dtype());
  return ops::div(ops::sum(ops::mul(per_patch, m)), ops::sum(m));
}

}  // namespace loom
