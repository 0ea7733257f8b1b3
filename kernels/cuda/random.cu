// Random fills and dropout on the GPU from the same counter-based Philox streams as the CPU:
// element i uses counter (offset + i), so a tensor drawn on either device holds the same numbers
// (up to the last bits of the device's log/cos in the normal transform; f64 uniforms, 53 bits from
// integer arithmetic, match bit for bit).
#define LOOM_DEFINING_RANDOM  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include <type_traits>
#include "kernels/common/philox.h"
#include "kernels/cuda/launch.cuh"

namespace loom::kernels::cuda {
namespace {

template <class T>
__global__ void uniform_kernel(T* out, int64_t n, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same_v<T, double>) out[i] = philox_uniform_f64(seed, offset, uint64_t(i));
    else out[i] = store<T>(acc_t<T>(philox_uniform(seed, offset, uint64_t(i))));
  }
}

template <class T>
__global__ void normal_kernel(T* out, int64_t n, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = store<T>(acc_t<T>(philox_normal(seed, offset, uint64_t(i))));
}

template <class T>
__global__ void dropout_kernel(const T* x, T* y, uint8_t* mask, int64_t n, float p, acc_t<T> scale, uint64_t seed,
                               uint64_t offset) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const bool keep = philox_uniform(seed, offset, uint64_t(i)) >= p;
    y[i] = store<T>(keep ? load(x[i]) * scale : A(0));
    if (mask) mask[i] = keep;
  }
}

}  // namespace

void uniform(const View& out, uint64_t seed, uint64_t offset) {
  const int64_t n = out.numel();
  if (n == 0) return;
  dispatch_float(out.dtype, "cuda::rand", [&](auto tag) {
    using T = typename decltype(tag)::type;
    uniform_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(out.ptr<T>(), n, seed, offset);
    LOOM_CUDA_LAUNCH_CHECK();
  });
}

void normal(const View& out, uint64_t seed, uint64_t offset) {
  const int64_t n = out.numel();
  if (n == 0) return;
  dispatch_float(out.dtype, "cuda::randn", [&](auto tag) {
    using T = typename decltype(tag)::type;
    normal_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(out.ptr<T>(), n, seed, offset);
    LOOM_CUDA_LAUNCH_CHECK();
  });
}

void dropout(const View& x, double p, uint64_t seed, uint64_t offset, const View& y, const View& mask) {
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch_float(x.dtype, "cuda::dropout", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    dropout_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(x.ptr<T>(), y.ptr<T>(), mask.ptr<uint8_t>(), n, float(p),
                                                               A(1.0 / (1.0 - p)), seed, offset);
    LOOM_CUDA_LAUNCH_CHECK();
  });
}

LOOM_KERNELS_RANDOM(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cuda
