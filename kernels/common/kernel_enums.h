// Operation codes and operands shared by the CPU and CUDA kernel APIs (kernels/cpu/cpu.h,
// kernels/cuda/cuda.h), so core/ can hand the same arguments to either backend.
#pragma once
#include <cstdint>

namespace loom::kernels {

// out = op(x; a, b): pow uses a as exponent, clamp uses [a, b], *_scalar use a.
enum class Unary {
  neg, exp, log, sqrt, rsqrt, pow, tanh, sigmoid, relu, gelu_erf, gelu_tanh, quick_gelu, clamp,
  add_scalar, mul_scalar, rsub_scalar, rdiv_scalar, logical_not
};

enum class Binary {
  add, sub, mul, div, eq, ne, lt, le, gt, ge,
  gelu_erf_backward, gelu_tanh_backward,  // a = upstream gradient, b = gelu input
  quick_gelu_backward,                    // a = upstream gradient, b = quick_gelu input
  step_backward,                          // a * (b > 0), the relu rule
};

enum class Reduce { sum, amax, logsumexp };

// One GEMM operand: row-major storage, optionally used transposed.
struct GemmOperand {
  const void* data;
  bool trans;   // use the operand transposed
  int64_t ld;   // leading dimension (row stride) of the stored matrix
};

// One parameter tensor for the fused AdamW step (contiguous; all four buffers of the same dtype).
// Per-tensor terms are precomputed on the host: decay = 1 - lr*weight_decay, step_size = lr / (1 - b1^t),
// rbc2 = 1 / sqrt(1 - b2^t), with t the tensor's own step count.
struct AdamWTensor {
  void* param;
  const void* grad;
  void* exp_avg;
  void* exp_avg_sq;
  int64_t numel;
  double decay;
  double step_size;
  double rbc2;
};

}  // namespace loom::kernels
