#include "kernels/cuda/check.cuh"
#include "kernels/cuda/cuda.h"

namespace loom::kernels::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

void* device_malloc(size_t nbytes, int device) {
  LOOM_CUDA_CHECK(cudaSetDevice(device));
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, nbytes);
  if (err != cudaSuccess) {
    size_t free_b = 0, total_b = 0;
    cudaGetLastError();
    cudaMemGetInfo(&free_b, &total_b);
    throw std::runtime_error("CUDA out of memory on cuda:" + std::to_string(device) + ": asked " +
                             std::to_string(nbytes) + " bytes, " + std::to_string(free_b) + " of " +
                             std::to_string(total_b) + " free (" + cudaGetErrorString(err) + ")");
  }
  return p;
}

void device_free(void* ptr, int device) {
  LOOM_CUDA_CHECK(cudaSetDevice(device));
  LOOM_CUDA_CHECK(cudaFree(ptr));
}

void memcpy(void* dst, const void* src, size_t nbytes, CopyKind kind) {
  const cudaMemcpyKind k = kind == CopyKind::host_to_device   ? cudaMemcpyHostToDevice
                           : kind == CopyKind::device_to_host ? cudaMemcpyDeviceToHost
                                                              : cudaMemcpyDeviceToDevice;
  LOOM_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, k));
}

}  // namespace loom::kernels::cuda
