// Stable argsort along the last dim of contiguous [rows, n]; the CUDA twin of kernels/cpu/sort.cpp.
//
// Each value is mapped to an unsigned key whose ascending order is the CPU's `less` (-0 and +0 equal,
// every NaN equal and above +inf); descending complements the key, which is exactly the CPU's stable
// sort with less(b, a): greater first, ties in index order. The keys are then sorted with cub's
// radix sort, which is stable, so ties keep index order:
//  - when the row number and the key fit together in 64 bits (all but 64-bit dtypes with several
//    rows), one sort of (row, key) pairs;
//  - otherwise two sorts: by key over all rows, then by row (stable, so each row stays sorted).
// Work is O(rows * n * key bits / 8) with O(rows * n) scratch, whatever the row length.
#define LOOM_DEFINING_SORT  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include <cub/device/device_radix_sort.cuh>
#include <cstdint>
#include <type_traits>
#include "kernels/common/dtype.h"
#include "kernels/cuda/launch.cuh"

namespace loom::kernels::cuda {
namespace {

// Order-preserving keys (see above) and their widths in bits.
__device__ __forceinline__ uint64_t sort_key(float v) {
  if (v != v) return 0xffc00000u;  // one key for every NaN, above +inf (0xff800000)
  if (v == 0.0f) v = 0.0f;         // -0 sorts equal to +0
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ uint64_t sort_key(double v) {
  if (v != v) return 0xfff8000000000000ull;
  if (v == 0.0) v = 0.0;
  const uint64_t u = uint64_t(__double_as_longlong(v));
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}
// bf16 and f16 are sign-magnitude like f32, so the same mapping on their 16 bits works.
__device__ __forceinline__ uint64_t half_key(uint16_t bits, float f, uint16_t nan_bits) {
  if (f != f) bits = nan_bits;
  else if (f == 0.0f) bits = 0;
  return (bits & 0x8000u) ? uint16_t(~bits) : uint16_t(bits | 0x8000u);
}
__device__ __forceinline__ uint64_t sort_key(bf16 v) { return half_key(v.bits, float(v), 0x7fc0u); }
__device__ __forceinline__ uint64_t sort_key(f16 v) { return half_key(v.bits, float(v), 0x7e00u); }
__device__ __forceinline__ uint64_t sort_key(int32_t v) { return uint32_t(v) ^ 0x80000000u; }
__device__ __forceinline__ uint64_t sort_key(int64_t v) { return uint64_t(v) ^ 0x8000000000000000ull; }
__device__ __forceinline__ uint64_t sort_key(uint8_t v) { return v; }
__device__ __forceinline__ uint64_t sort_key(bool v) { return v ? 1u : 0u; }

template <class T> constexpr int key_bits() {
  return std::is_same<T, bool>::value ? 1 : int(sizeof(T)) * 8;
}

// keys[i] = (row << row_shift) | key, or the key alone when row_shift is 0 (one row, or two passes).
// vals[i] = index within the row when rows share the key (one pass), else the flat index.
template <class T>
__global__ void argsort_keys_kernel(const T* x, int64_t total, int64_t n, bool descending, int row_shift,
                                    uint64_t key_mask, uint64_t* keys, int64_t* vals) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t k = sort_key(x[i]);
    if (descending) k = ~k & key_mask;
    if (row_shift > 0) {
      const int64_t r = i / n;
      keys[i] = (uint64_t(r) << row_shift) | k;
      vals[i] = i - r * n;
    } else {
      keys[i] = k;
      vals[i] = i;
    }
  }
}

// Second pass of the two-sort path: key = row of each flat index, value = index within the row.
__global__ void argsort_rows_kernel(const int64_t* flat, int64_t total, int64_t n, uint64_t* keys, int64_t* vals) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t f = flat[i], r = f / n;
    keys[i] = uint64_t(r);
    vals[i] = f - r * n;
  }
}

inline int bit_width(uint64_t v) { int b = 0; while (b < 64 && (v >> b) != 0) ++b; return b; }

// Stable radix sort of (key, value) pairs on bits [0, end_bit); with temp == nullptr, sizes temp.
void sort_pairs(void* temp, size_t& temp_bytes, const uint64_t* keys_in, uint64_t* keys_out, const int64_t* vals_in,
                int64_t* vals_out, int64_t total, int end_bit, cudaStream_t s) {
  LOOM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, vals_in, vals_out, total, 0,
                                                  end_bit, s));
}
size_t sort_temp_bytes(int64_t total, int end_bit, cudaStream_t s) {
  size_t bytes = 0;
  sort_pairs(nullptr, bytes, nullptr, nullptr, nullptr, nullptr, total, end_bit, s);
  return bytes;
}

}  // namespace

void argsort(const View& x, bool descending, const View& out) {
  dispatch_all(x.dtype, "cuda::argsort", [&](auto tag_) {
    using T = typename decltype(tag_)::type;
    const int64_t n = x.ndim ? x.shape[x.ndim - 1] : 1, rows = n ? x.numel() / n : 0, total = rows * n;
    if (total == 0) return;
    cudaStream_t s = stream();
    int64_t* op = out.ptr<int64_t>();
    if (n == 1) {  // every row is just [0]
      LOOM_CUDA_CHECK(cudaMemsetAsync(op, 0, size_t(total) * sizeof(int64_t), s));
      return;
    }
    constexpr int kb = key_bits<T>();
    const uint64_t key_mask = kb == 64 ? ~0ull : (1ull << kb) - 1;
    const int row_bits = bit_width(uint64_t(rows - 1));
    const bool one_pass = kb + row_bits <= 64;

    const size_t arr = align_up(size_t(total) * 8);
    size_t temp_bytes = sort_temp_bytes(total, one_pass ? kb + row_bits : kb, s);
    if (!one_pass) {
      const size_t second = sort_temp_bytes(total, row_bits, s);
      if (second > temp_bytes) temp_bytes = second;
    }
    Scratch buf((one_pass ? 3 : 4) * arr + align_up(temp_bytes), s);
    char* base = static_cast<char*>(buf.p);
    auto* keys_in = reinterpret_cast<uint64_t*>(base);
    auto* keys_out = reinterpret_cast<uint64_t*>(base + arr);
    auto* vals_in = reinterpret_cast<int64_t*>(base + 2 * arr);
    void* temp = base + (one_pass ? 3 : 4) * arr;

    argsort_keys_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(x.ptr<T>(), total, n, descending,
                                                                   one_pass ? kb * (row_bits > 0) : 0, key_mask,
                                                                   keys_in, vals_in);
    LOOM_CUDA_LAUNCH_CHECK();
    if (one_pass) {
      sort_pairs(temp, temp_bytes, keys_in, keys_out, vals_in, op, total, kb + row_bits, s);
      return;
    }
    auto* flat = reinterpret_cast<int64_t*>(base + 3 * arr);
    sort_pairs(temp, temp_bytes, keys_in, keys_out, vals_in, flat, total, kb, s);
    argsort_rows_kernel<<<blocks_for(total), kThreads, 0, s>>>(flat, total, n, keys_in, vals_in);
    LOOM_CUDA_LAUNCH_CHECK();
    sort_pairs(temp, temp_bytes, keys_in, keys_out, vals_in, op, total, row_bits, s);
  });
}

LOOM_KERNELS_SORT(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cuda
