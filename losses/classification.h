// Classification losses beside cross_entropy (core/ops.h): multi-label binary cross-entropy
// (AudioSet, AudioMAE's and AST's fine-tuning) and cross-entropy against soft targets (mixup/CutMix).
#pragma once
#include "core/ops.h"

namespace loom {

// logits and targets [N, C] (targets 0 or 1, the logits' dtype): mean over N and C of
// -(y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))) = log(1 + e^x) - x y, with log(1 + e^x) as a
// two-term logsumexp, so that large |x| neither overflows nor loses the gradient (torch's
// BCEWithLogitsLoss with mean reduction).
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& targets);

// logits and targets [N, C] (each target row a distribution, e.g. two classes mixed by lambda): the
// mean over rows of -sum_c t_c log softmax(x)_c (timm's SoftTargetCrossEntropy).
Tensor soft_target_cross_entropy(const Tensor& logits, const Tensor& targets);

}  // namespace loom
