// Shared by the CUDA kernel files: the current stream, launch sizes, strided indexing,
// warp and block reductions. Device-side only helpers; nothing here allocates.
#pragma once
#include <cuda_runtime.h>
#include <cfloat>
#include <cstdint>
#include <cmath>
#include "kernels/common/dtype.h"
#include "kernels/common/view.h"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/cuda.h"

namespace loom::kernels::cuda {

inline cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items: enough to fill the GPU, capped for 32-bit grids.
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > 65535LL * 8) b = 65535LL * 8;
  return unsigned(b);
}

// Launch-time check: a bad configuration surfaces here, not at the next synchronising call.
#define LOOM_CUDA_LAUNCH_CHECK() LOOM_CUDA_CHECK(cudaGetLastError())

// Element offsets of N operands over a common shape, passed by value to kernels. Size-1 dims are
// dropped and mergeable dims merged on the host so the per-element division loop is short.
template <int N>
struct Strided {
  int ndim = 0;
  int64_t shape[kMaxDims];
  int64_t strides[N][kMaxDims];

  // Offsets of linear (row-major) element i in each operand.
  __device__ __forceinline__ void offsets(int64_t i, int64_t (&off)[N]) const {
    for (int k = 0; k < N; ++k) off[k] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t s = shape[d];
      const int64_t q = i / s, r = i - q * s;
      i = q;
      for (int k = 0; k < N; ++k) off[k] += r * strides[k][d];
    }
  }
};

template <int N>
Strided<N> make_strided(int ndim, const int64_t* shape, const View* const (&views)[N]) {
  Strided<N> g;
  for (int d = 0; d < ndim; ++d) {
    if (shape[d] == 1) continue;
    bool merge = g.ndim > 0;
    for (int k = 0; k < N && merge; ++k) merge = g.strides[k][g.ndim - 1] == views[k]->strides[d] * shape[d];
    if (merge) {
      g.shape[g.ndim - 1] *= shape[d];
      for (int k = 0; k < N; ++k) g.strides[k][g.ndim - 1] = views[k]->strides[d];
    } else {
      g.shape[g.ndim] = shape[d];
      for (int k = 0; k < N; ++k) g.strides[k][g.ndim] = views[k]->strides[d];
      ++g.ndim;
    }
  }
  return g;  // ndim 0: a single element at offset 0
}

// ---- reductions within a warp / block (blockDim.x a multiple of 32, at most 1024) ----
template <class A> __device__ __forceinline__ A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class A> __device__ __forceinline__ A warp_max(A v) {
  for (int o = 16; o > 0; o >>= 1) { A w = __shfl_xor_sync(0xffffffffu, v, o); v = w > v ? w : v; }
  return v;
}
// Every thread of the block gets the result. `scratch` holds 32 values; callers reuse it only after
// the returned value has been read (the trailing barrier makes reuse safe).
template <class A> __device__ __forceinline__ A block_sum(A v, A* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : A(0);
  v = warp_sum(v);
  __syncthreads();
  return v;
}
template <class A> __device__ __forceinline__ A block_max(A v, A* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : A(-INFINITY);
  v = warp_max(v);
  __syncthreads();
  return v;
}

// Stream-ordered scratch memory, released on the stream even when a later call throws. It comes
// from the allocator core/ registers (the caching allocator: counted in memory statistics, freed
// and retried on exhaustion), or from cudaMallocAsync when none is registered.
struct Scratch {
  void* p = nullptr;
  cudaStream_t s;
  Scratch(size_t nbytes, cudaStream_t s_) : s(s_) {
    if (nbytes) p = scratch_malloc(nbytes, s);
  }
  ~Scratch() {
    if (p) scratch_free(p, s);  // never throws
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// Offsets of arrays carved from one Scratch buffer, 256-byte aligned as cudaMalloc's are.
inline size_t align_up(size_t n) { return (n + 255) & ~size_t(255); }

// Loads/stores through the compute type (bf16/f16 as f32) on the device.
template <class T> __device__ __forceinline__ acc_t<T> ld(const T* p) { return load(*p); }
template <class T, class A> __device__ __forceinline__ void st(T* p, A v) { *p = store<T>(v); }

}  // namespace loom::kernels::cuda
