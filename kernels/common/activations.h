// Activation formulas and their derivatives, written once for the CPU and CUDA kernels. Each is
// generic over the arithmetic type A (float, double) and a math policy M that supplies exp_, erf_ and
// tanh_ for A: the CPU's (kernels/cpu/elementwise.cpp, its vectorisable exp and erf) and the device's
// (kernels/cuda/elementwise.cu). Both backends thus compute the same expression in the same order.
#pragma once

#if defined(__CUDACC__)
#define LOOM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LOOM_HOST_DEVICE [[gnu::always_inline]] inline
#endif

namespace loom::kernels::formulas {

template <class M, class A> LOOM_HOST_DEVICE A sigmoid(A x) { return A(1) / (A(1) + M::exp_(-x)); }

// GELU, x·Φ(x), and its tanh approximation.
template <class M, class A> LOOM_HOST_DEVICE A gelu_erf(A x) {
  return A(0.5) * x * (A(1) + M::erf_(x * A(0.70710678118654752440)));
}
template <class M, class A> LOOM_HOST_DEVICE A gelu_tanh(A x) {
  const A k = A(0.79788456080286535588), c = A(0.044715);
  return A(0.5) * x * (A(1) + M::tanh_(k * (x + c * x * x * x)));
}
template <class M, class A> LOOM_HOST_DEVICE A gelu_erf_grad(A x) {
  return A(0.5) * (A(1) + M::erf_(x * A(0.70710678118654752440))) + x * M::exp_(A(-0.5) * x * x) * A(0.39894228040143267794);
}
template <class M, class A> LOOM_HOST_DEVICE A gelu_tanh_grad(A x) {
  const A k = A(0.79788456080286535588), c = A(0.044715);
  const A t = M::tanh_(k * (x + c * x * x * x));
  return A(0.5) * (A(1) + t) + A(0.5) * x * (A(1) - t * t) * k * (A(1) + A(3) * c * x * x);
}

// QuickGELU, x·σ(1.702x): the activation of OpenAI's CLIP towers (open_clip's QuickGELU), and its derivative.
template <class M, class A> LOOM_HOST_DEVICE A quick_gelu(A x) { return x * sigmoid<M>(A(1.702) * x); }
template <class M, class A> LOOM_HOST_DEVICE A quick_gelu_grad(A x) {
  const A s = sigmoid<M>(A(1.702) * x);
  return s + A(1.702) * x * s * (A(1) - s);
}

}  // namespace loom::kernels::formulas
