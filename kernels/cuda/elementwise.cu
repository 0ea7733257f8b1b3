// Elementwise CUDA kernels. For now: fill (zeros/ones/full on the device).
#include <cstdint>
#include "kernels/common/dtype.h"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/cuda.h"

namespace loom::kernels::cuda {
namespace {

template <class T>
__global__ void fill_kernel(T* p, int64_t n, T v) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] = v;
}

template <class T>
void launch_fill(const View& dst, double value) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  const int threads = 256;
  const int blocks = int(std::min<int64_t>((n + threads - 1) / threads, 65535));
  fill_kernel<T><<<blocks, threads>>>(dst.ptr<T>(), n, store<T>(acc_t<T>(value)));
  LOOM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void fill(const View& dst, double value) {
  if (!dst.contiguous()) throw std::invalid_argument("cuda::fill: destination must be contiguous");
  dispatch_all(dst.dtype, "cuda::fill", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type; launch_fill<scalar_t>(dst, value); });
}

}  // namespace loom::kernels::cuda
