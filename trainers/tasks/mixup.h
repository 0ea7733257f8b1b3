// Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of a batch as timm's Mixup does them, for
// task classify: each example paired with the batch's reverse order (example i with B-1-i), one
// lambda ~ Beta(alpha, alpha) per batch; mixup blends the inputs, CutMix pastes a box of the partner
// (area about 1 - lambda, lambda then the exact kept area), and the targets blend by lambda. On
// spectrograms [B, 1, F, T] mixup is AudioMAE's. Draws come from the caller's generator only, so a
// resumed run mixes as the uninterrupted one.
#pragma once
#include "core/ops.h"
#include "core/rng.h"

namespace loom {

struct MixSpec {
  double mixup_alpha = 0, cutmix_alpha = 0;  // 0: off
  double prob = 1.0;                         // a batch is mixed with this probability
  double switch_prob = 0.5;                  // both on: CutMix with this probability, else mixup
  bool on() const { return mixup_alpha > 0 || cutmix_alpha > 0; }
};

// One draw in [0, 1) and one Beta(alpha, alpha) draw (Marsaglia-Tsang gammas), from `gen`.
double uniform01(Generator& gen);
double sample_beta(double alpha, Generator& gen);

struct Mixed {
  Tensor inputs, targets;  // the mixed batch and its soft targets [B, C]
  double lambda = 1.0;     // the share of each example's own input (1: not mixed)
  bool cutmix = false;
  int64_t box[4] = {0, 0, 0, 0};  // CutMix: rows [y0, y1), columns [x0, x1) taken from the partner
};
// inputs [B, C, H, W] (images or spectrograms), targets [B, K] (one-hot, smoothed or multi-hot).
Mixed mix_batch(const Tensor& inputs, const Tensor& targets, const MixSpec& spec, Generator& gen);

}  // namespace loom
