// Masked-modelling losses: MAE's pixel reconstruction loss over the masked patches.
#pragma once
#include "core/ops.h"

namespace loom {

// Per-patch mean and unbiased variance over the P values of patches [B, N, P] (each [B, N, 1]).
struct PatchStats { Tensor mean, var; };
PatchStats patch_stats(const Tensor& patches);

// target [B, N, P] normalised per patch when norm_pix: (t - mean) / sqrt(var + 1e-6), with the
// unbiased variance over the P values, as MAE's norm_pix_loss.
Tensor mae_target(const Tensor& patches, bool norm_pix);
// Mean squared error per patch, averaged over the masked patches: sum(mean_P((pred - target)²) * mask) / sum(mask).
// pred, target [B, N, P]; mask [B, N] (1 = masked) with at least one masked patch.
Tensor masked_mse(const Tensor& pred, const Tensor& target, const Tensor& mask);

}  // namespace loom
