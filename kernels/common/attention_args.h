// What the fused attention kernels of both backends take (kernels/cpu/attention.cpp, the CPU's
// blocked kernel; kernels/cuda/attention.cu, flash attention): one struct, so core/ reaches either
// through the same entry (LOOM_KERNELS_ATTENTION in kernels/kernel_list.h).
#pragma once
#include "kernels/common/view.h"

namespace loom::kernels {

// The accumulation dtype of lse, dq and delta is f64 for f64 inputs and f32 otherwise.
struct AttentionArgs {
  View q, k, v, out;   // [B, H, S, D] (v and out [.., Dv]): any strides with a unit-stride last dim
  View lse;            // [B, H, Sq] contiguous, accumulation dtype: each query's log-sum-exp of its
                       // scaled scores (-inf on the CPU, +inf on CUDA, for a query that sees no key)
  View key_padding;    // bool [B, Sk], true = hidden key; null data: none
  View bias;           // additive, q's dtype, expanded to [B, H, Sq, Sk] (stride 0 where broadcast);
                       // null data: none. It gets no gradient: a bias that needs one is composed.
  bool causal = false; // query i sees keys j <= i
  double scale = 1.0;
  // backward only
  View dout, dk, dv;   // dout like out; dk, dv like k, v (written)
  View dq;             // like q, accumulation dtype, zeroed by the caller (a backend may add into it)
  View delta;          // [B, H, Sq] contiguous, accumulation dtype: scratch a backend may use
};

}  // namespace loom::kernels
