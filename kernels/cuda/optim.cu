// Fused multi-tensor AdamW: one launch updates up to kTensorsPerLaunch parameter tensors, with the
// tensor list passed by value in the kernel arguments (under the classic 4 KiB limit). Each block
// owns one chunk of one tensor; blocks find their tensor by the chunk offsets. Master weights and
// moments are f32 (f64 for f64 parameters); the arithmetic matches the CPU kernel's.
#define LOOM_DEFINING_OPTIM  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include "kernels/cuda/launch.cuh"

namespace loom::kernels::cuda {
namespace {

constexpr int kTensorsPerLaunch = 48;
constexpr int64_t kChunk = 8192;  // elements per block

struct AdamWBatch {
  AdamWTensor t[kTensorsPerLaunch];
  int64_t first_block[kTensorsPerLaunch + 1];  // prefix sums of each tensor's chunk count
  int count;
};

template <class T>
__global__ void adamw_kernel(AdamWBatch batch, T b1, T b2, T eps) {
  const int64_t block = blockIdx.x;
  int k = 0;
  while (k + 1 < batch.count && batch.first_block[k + 1] <= block) ++k;  // at most 48 steps, uniform per block
  const AdamWTensor& t = batch.t[k];
  T* p = static_cast<T*>(t.param);
  const T* g = static_cast<const T*>(t.grad);
  T* m = static_cast<T*>(t.exp_avg);
  T* v = static_cast<T*>(t.exp_avg_sq);
  const T decay = T(t.decay), step = T(t.step_size), rbc2 = T(t.rbc2);
  const int64_t lo = (block - batch.first_block[k]) * kChunk;
  const int64_t hi = lo + kChunk < t.numel ? lo + kChunk : t.numel;
  for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
    const T gi = g[i];
    const T mi = b1 * m[i] + (T(1) - b1) * gi;
    const T vi = b2 * v[i] + (T(1) - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step * mi / (sqrt(vi) * rbc2 + eps);
  }
}

template <class T>
void adamw_typed(const AdamWTensor* tensors, int64_t count, double b1, double b2, double eps) {
  // One launch per kTensorsPerLaunch non-empty tensors: the cursor k moves past the empty ones it
  // skips, so a tensor is never in two launches (stepping the start by 48 would update some twice).
  for (int64_t k = 0; k < count;) {
    AdamWBatch batch{};
    batch.count = 0;
    batch.first_block[0] = 0;
    for (; k < count && batch.count < kTensorsPerLaunch; ++k) {
      if (tensors[k].numel == 0) continue;
      batch.t[batch.count] = tensors[k];
      batch.first_block[batch.count + 1] = batch.first_block[batch.count] + (tensors[k].numel + kChunk - 1) / kChunk;
      ++batch.count;
    }
    const int64_t blocks = batch.first_block[batch.count];
    if (blocks == 0) continue;
    adamw_kernel<T><<<unsigned(blocks), kThreads, 0, stream()>>>(batch, T(b1), T(b2), T(eps));
    LOOM_CUDA_LAUNCH_CHECK();
  }
}

}  // namespace

void adamw(DType dtype, const AdamWTensor* tensors, int64_t count, double beta1, double beta2, double eps) {
  switch (dtype) {
    case DType::f32: return adamw_typed<float>(tensors, count, beta1, beta2, eps);
    case DType::f64: return adamw_typed<double>(tensors, count, beta1, beta2, eps);
    default: unsupported_dtype("cuda::adamw", dtype);
  }
}

LOOM_KERNELS_OPTIM(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cuda
