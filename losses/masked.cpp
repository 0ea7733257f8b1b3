#include "losses/masked.h"

namespace loom {

PatchStats patch_stats(const Tensor& patches) {
  if (patches.dim() != 3 || patches.size(2) < 2)
    throw OpError(str_cat("patch_stats: patches must be [B, N, P] with P >= 2, got ", patches.describe()));
  Tensor mean = ops::mean(patches, {2}, true);
  Tensor centred = ops::sub(patches, mean);
  return {mean, ops::mul(ops::sum(ops::mul(centred, centred), {2}, true), 1.0 / double(patches.size(2) - 1))};
}

Tensor mae_target(const Tensor& patches, bool norm_pix) {
  PatchStats st = patch_stats(patches);  // also checks the shape
  if (!norm_pix) return patches;
  return ops::mul(ops::sub(patches, st.mean), ops::rsqrt(ops::add(st.var, 1e-6)));
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
