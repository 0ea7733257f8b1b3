// Fused AdamW on the CPU: one pass over each tensor's four buffers.
#define LOOM_DEFINING_OPTIM  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include <cmath>
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/loops.h"

namespace loom::kernels::cpu {
namespace {

template <class T>
void adamw_tensor(const AdamWTensor& t, double b1, double b2, double eps) {
  T* p = static_cast<T*>(t.param);
  const T* g = static_cast<const T*>(t.grad);
  T* m = static_cast<T*>(t.exp_avg);
  T* v = static_cast<T*>(t.exp_avg_sq);
  const T decay = T(t.decay), tb1 = T(b1), tb2 = T(b2), step = T(t.step_size), te = T(eps), rbc2 = T(t.rbc2);
  parallel_range(t.numel, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const T gi = g[i];
      m[i] = tb1 * m[i] + (T(1) - tb1) * gi;
      v[i] = tb2 * v[i] + (T(1) - tb2) * gi * gi;
      p[i] = p[i] * decay - step * m[i] / (std::sqrt(v[i]) * rbc2 + te);
    }
  });
}

}  // namespace

void adamw(DType dtype, const AdamWTensor* tensors, int64_t count, double beta1, double beta2, double eps) {
  for (int64_t k = 0; k < count; ++k) {
    switch (dtype) {
      case DType::f32: adamw_tensor<float>(tensors[k], beta1, beta2, eps); break;
      case DType::f64: adamw_tensor<double>(tensors[k], beta1, beta2, eps); break;
      default: unsupported_dtype("adamw", dtype);
    }
  }
}

LOOM_KERNELS_OPTIM(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cpu
