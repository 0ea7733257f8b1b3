// Contrastive losses between paired embeddings: CLIP's symmetric InfoNCE (open_clip's ClipLoss with
// local_loss, optionally with same-label positives) and the VSE++ hardest-negative triplet loss.
#pragma once
#include <cmath>
#include "core/ops.h"

namespace loom {

struct ContrastiveOptions {
  bool same_label_positives = false;
  double max_logit_scale = std::log(100.0);
};

// Symmetric InfoNCE as open_clip's ClipLoss with local_loss: this process's rows (img_local, txt_local [n, E],
// already L2-normalised) against all gathered columns (img_all, txt_all [N, E]); row i's positive is column
// offset + i. logit_scale is the learnable log-scale (scalar), used as exp(min(logit_scale, max_logit_scale)).
// With same_label_positives, every column whose label equals the row's label is a positive (soft target
// spread evenly over them); labels_local [n] / labels_all [N] i64 are required then.
// Result: (mean_i CE(image row i) + mean_i CE(text row i)) / 2, a scalar.
Tensor clip_loss(const Tensor& img_local, const Tensor& txt_local, const Tensor& img_all, const Tensor& txt_all,
                 int64_t offset, const Tensor& logit_scale, const Tensor& labels_local = {},
                 const Tensor& labels_all = {}, const ContrastiveOptions& opt = {});
// Single process: local == all, offset 0.
Tensor clip_loss(const Tensor& img, const Tensor& txt, const Tensor& logit_scale, const Tensor& labels = {},
                 const ContrastiveOptions& opt = {});

// Bidirectional hinge triplet loss with the hardest in-batch negative (VSE++, Faghri et al. 2018):
// s = img·txtᵀ, loss = mean_i [m + max_{j≠i} s_ij - s_ii]₊ + mean_j [m + max_{i≠j} s_ij - s_jj]₊.
// (VSE++ sums over the batch; the mean keeps the scale independent of the batch size.) n >= 2.
Tensor triplet_loss(const Tensor& img, const Tensor& txt, double margin = 0.2);

}  // namespace loom
