// Mixed precision (train.precision: bf16) as an explicit per-op policy, in the manner of PyTorch's
// autocast but with one short table instead of per-op lists:
//
//   lower to the compute dtype   matmul, linear, scaled_dot_product_attention, self_attention_packed
//                                (f32 operands cast to bf16; the GEMMs and attention run in bf16 with
//                                f32 accumulation; the output is bf16)
//   raise to f32                 layer_norm, softmax, log_softmax, logsumexp, l2_normalize, sum, mean,
//                                cross_entropy, mse_loss (statistics, normalisations and losses in f32)
//   promote to the wider dtype   add, sub, mul, div, where, cat, stack (a bf16 branch added to the f32
//                                residual stream gives f32, as PyTorch's type promotion)
//   everything else              runs in the dtype it is given
//
// The casts are ordinary differentiable Tensor::to calls, so gradients reach the f32 master weights
// in f32 and the optimizer state stays f32. Backward runs with autocast off: every backward op sees
// the dtypes its forward chose. Outside a guard (the default) no op casts anything, and operands of
// different dtypes remain an error.
#pragma once
#include <optional>
#include "core/tensor.h"

namespace loom {

class AutocastGuard {
 public:
  // Ops on this thread compute in `dtype` (bf16 or f16) while the guard lives; nullopt turns autocast off.
  explicit AutocastGuard(std::optional<DType> dtype);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  std::optional<DType> previous_;
};

// The compute dtype of the innermost guard on this thread, or nullopt.
std::optional<DType> autocast_dtype();

namespace ops::detail {
// t cast to the compute dtype when autocast is on and t is f32; otherwise t.
Tensor autocast_lower(const Tensor& t);
// t cast to f32 when autocast is on and t is bf16 or f16; otherwise t.
Tensor autocast_f32(const Tensor& t);
// Under autocast, floating operands of different dtypes all cast to the widest; otherwise unchanged.
void autocast_promote(std::initializer_list<Tensor*> operands);
void autocast_promote(std::vector<Tensor>& operands);
}  // namespace ops::detail

}  // namespace loom
