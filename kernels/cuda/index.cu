// Indexing kernels on contiguous tensors viewed as [outer, dim, inner]; the CUDA twins of
// kernels/cpu/index.cpp. No float atomics: every output element is accumulated by one thread in
// the CPU's order, so scatter_add and embedding_backward give the same bits on every run (and the
// same bits as the CPU for in-range indices).
#define LOOM_DEFINING_INDEX  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include <cub/device/device_radix_sort.cuh>
#include <algorithm>
#include <climits>
#include <map>
#include <mutex>
#include <vector>
#include <cstdint>
#include <stdexcept>
#include <string>
#include "kernels/common/dtype.h"
#include "kernels/cuda/launch.cuh"

namespace loom::kernels::cuda {
namespace {

struct Split { int64_t outer = 1, size = 1, inner = 1; };
inline Split split_at(const View& v, int dim) {
  Split s;
  for (int d = 0; d < dim; ++d) s.outer *= v.shape[d];
  s.size = v.shape[dim];
  for (int d = dim + 1; d < v.ndim; ++d) s.inner *= v.shape[d];
  return s;
}

// Calls f(type_tag<I>) for an i32 or i64 index.
template <class F> void dispatch_index(DType t, const char* op, F&& f) {
  if (t == DType::i32) f(type_tag<int32_t>{});
  else if (t == DType::i64) f(type_tag<int64_t>{});
  else throw std::invalid_argument(std::string(op) + ": index must be i32 or i64, got " + std::string(dtype_name(t)));
}

// gather/index_select only move elements: copy them as raw bits of the same width.
template <size_t N> struct bits_of;
template <> struct bits_of<1> { using type = uint8_t; };
template <> struct bits_of<2> { using type = uint16_t; };
template <> struct bits_of<4> { using type = uint32_t; };
template <> struct bits_of<8> { using type = uint64_t; };

// ---- check_indices: the first offending position wins (atomicMin), as in the CPU's scan ----
template <class I>
__global__ void check_indices_kernel(const I* idx, int64_t n, int64_t bound, int64_t allowed,
                                     unsigned long long* first) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t v = idx[i];
    if ((v < 0 || v >= bound) && v != allowed) {
      atomicMin(first, (unsigned long long)i);
      break;  // this thread's later positions are larger
    }
  }
}

// ---- deferred checks: the first fault found by any check since the last raise, per device ----
struct IndexFault {
  unsigned long long found;  // 0 until a check finds an index out of range
  long long value, position, bound;
  unsigned int what;  // into the host's table of check names
};

template <class I>
__global__ void check_indices_deferred_kernel(const I* idx, int64_t n, int64_t bound, int64_t allowed, IndexFault* rec,
                                              unsigned int what) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t v = idx[i];
    if ((v < 0 || v >= bound) && v != allowed) {
      if (atomicCAS(&rec->found, 0ull, 1ull) == 0ull) {  // the first fault wins; later ones are not recorded
        rec->value = v;
        rec->position = i;
        rec->bound = bound;
        rec->what = what;
      }
      break;
    }
  }
}

// ---- gather: out[o, i, n] = x[o, index[o, i, n], n], one thread per output element ----
template <class U, class I>
__global__ void gather_kernel(const U* x, const I* idx, U* out, int64_t total, int64_t is_size, int64_t is_inner,
                              int64_t xs_size, int64_t xs_inner) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = k / (is_size * is_inner), n = k % is_inner, j = int64_t(idx[k]);
    // An index out of range (reported by the op's deferred check) reads nothing: a zero.
    out[k] = j >= 0 && j < xs_size ? x[(o * xs_size + j) * xs_inner + n] : U(0);
  }
}

// ---- scatter_add: one thread per (outer, inner) column, visiting the index positions in order.
// Different columns write disjoint outputs, so there are no races and no atomics. ----
template <class T, class I>
__global__ void scatter_add_kernel(T* out, const I* idx, const T* src, int64_t columns, int64_t is_size,
                                   int64_t is_inner, int64_t os_size, int64_t os_inner) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < columns; c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = c / is_inner, n = c % is_inner;
    for (int64_t i = 0; i < is_size; ++i) {
      const int64_t k = (o * is_size + i) * is_inner + n, j = int64_t(idx[k]);
      if (j < 0 || j >= os_size) continue;  // out of range (reported by the deferred check): nothing written
      T* dst = out + (o * os_size + j) * os_inner + n;
      *dst = store<T>(load(*dst) + load(src[k]));
    }
  }
}

// ---- index_select: out[o, i, n] = x[o, index[i], n] ----
template <class U, class I>
__global__ void index_select_kernel(const U* x, const I* idx, U* out, int64_t total, int64_t ni, int64_t inner,
                                    int64_t xs_size) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = k % inner, r = k / inner, i = r % ni, o = r / ni, j = int64_t(idx[i]);
    out[k] = j >= 0 && j < xs_size ? x[(o * xs_size + j) * inner + n] : U(0);  // out of range: a zero
  }
}

// ---- embedding_backward: positions are sorted by id (a stable radix sort, so equal ids keep
// position order); each run of equal ids is then summed by one block, a thread per column, in
// position order: the CPU's order of additions for every dweight element. ----
template <class I>
__global__ void embedding_keys_kernel(const I* ids, int64_t n, int64_t vocab, uint64_t* keys, int64_t* pos) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t id = ids[i];
    keys[i] = id >= 0 && id < vocab ? uint64_t(id) : uint64_t(vocab);  // out of range: a sentinel, skipped
    pos[i] = i;
  }
}

template <class T>
__global__ void embedding_segments_kernel(const uint64_t* keys, const int64_t* pos, const T* dy, T* dweight,
                                          int64_t n, int64_t d, uint64_t sentinel) {
  using A = acc_t<T>;
  for (int64_t k = blockIdx.x; k < n; k += gridDim.x) {  // block-uniform: one candidate run start per block
    const uint64_t id = keys[k];
    if (id == sentinel || (k > 0 && keys[k - 1] == id)) continue;
    T* row = dweight + int64_t(id) * d;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      T v = row[c];
      for (int64_t q = k; q < n && keys[q] == id; ++q) v = store<T>(A(load(v) + load(dy[pos[q] * d + c])));
      row[c] = v;
    }
  }
}


}  // namespace

void check_indices(const View& index, int64_t bound, const char* what, int64_t allowed) {
  const int64_t n = index.numel();
  if (n == 0) return;
  dispatch_index(index.dtype, what, [&](auto itag) {
    using I = typename decltype(itag)::type;
    cudaStream_t s = stream();
    Scratch buf(sizeof(unsigned long long), s);
    auto* first = static_cast<unsigned long long*>(buf.p);
    LOOM_CUDA_CHECK(cudaMemsetAsync(first, 0xff, sizeof(unsigned long long), s));  // ULLONG_MAX: none found
    check_indices_kernel<I><<<blocks_for(n), kThreads, 0, s>>>(index.ptr<I>(), n, bound, allowed, first);
    LOOM_CUDA_LAUNCH_CHECK();
    unsigned long long pos = 0;
    LOOM_CUDA_CHECK(cudaMemcpyAsync(&pos, first, sizeof(pos), cudaMemcpyDeviceToHost, s));
    LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
    if (pos == ULLONG_MAX) return;
    I v = 0;  // the offending value, read back only on failure
    LOOM_CUDA_CHECK(cudaMemcpyAsync(&v, index.ptr<I>() + pos, sizeof(I), cudaMemcpyDeviceToHost, s));
    LOOM_CUDA_CHECK(cudaStreamSynchronize(s));
    throw std::out_of_range(std::string(what) + ": index " + std::to_string(int64_t(v)) + " at position " +
                            std::to_string(int64_t(pos)) + " is out of range [0, " + std::to_string(bound) + ")");
  });
}

namespace {
std::mutex g_fault_mu;
std::vector<const char*> g_fault_names;         // check names by id
std::map<int, IndexFault*> g_fault_records;     // per device, allocated on first use, zeroed

IndexFault* fault_record(int device) {  // under g_fault_mu
  IndexFault*& r = g_fault_records[device];
  if (!r) {
    void* p = nullptr;
    LOOM_CUDA_CHECK(cudaMalloc(&p, sizeof(IndexFault)));
    LOOM_CUDA_CHECK(cudaMemset(p, 0, sizeof(IndexFault)));
    r = static_cast<IndexFault*>(p);
  }
  return r;
}
}  // namespace

void check_indices_deferred(const View& index, int64_t bound, const char* what, int64_t allowed) {
  const int64_t n = index.numel();
  if (n == 0) return;
  IndexFault* rec = nullptr;
  unsigned int id = 0;
  {
    std::lock_guard<std::mutex> lock(g_fault_mu);
    rec = fault_record(current_device());
    auto it = std::find(g_fault_names.begin(), g_fault_names.end(), what);
    id = unsigned(it - g_fault_names.begin());
    if (it == g_fault_names.end()) g_fault_names.push_back(what);
  }
  dispatch_index(index.dtype, what, [&](auto itag) {
    using I = typename decltype(itag)::type;
    check_indices_deferred_kernel<I><<<blocks_for(n), kThreads, 0, stream()>>>(index.ptr<I>(), n, bound, allowed, rec, id);
    LOOM_CUDA_LAUNCH_CHECK();
  });
}

void raise_deferred_index_fault() {
  std::lock_guard<std::mutex> lock(g_fault_mu);
  for (auto& [device, rec] : g_fault_records) {
    IndexFault f{};
    // Synchronous copies on the legacy stream: the caller has just synchronised; this waits for
    // nothing that is still queued behind it on another stream.
    LOOM_CUDA_CHECK(cudaMemcpy(&f, rec, sizeof f, cudaMemcpyDeviceToHost));
    if (!f.found) continue;
    LOOM_CUDA_CHECK(cudaMemset(rec, 0, sizeof(IndexFault)));
    const char* what = f.what < g_fault_names.size() ? g_fault_names[f.what] : "an index check";
    throw std::out_of_range(std::string(what) + ": index " + std::to_string(f.value) + " at position " +
                            std::to_string(f.position) + " is out of range [0, " + std::to_string(f.bound) +
                            ") (found on cuda:" + std::to_string(device) + " by a check that did not wait for it)");
  }
}

void gather(const View& x, int dim, const View& index, const View& out) {
  dispatch_all(x.dtype, "cuda::gather", [&](auto tag_) {
    using U = typename bits_of<sizeof(typename decltype(tag_)::type)>::type;
    const Split xs = split_at(x, dim), is = split_at(index, dim);
    const int64_t total = is.outer * is.size * is.inner;
    if (total == 0) return;
    dispatch_index(index.dtype, "cuda::gather", [&](auto itag) {
      using I = typename decltype(itag)::type;
      gather_kernel<U, I><<<blocks_for(total), kThreads, 0, stream()>>>(
          x.ptr<U>(), index.ptr<I>(), out.ptr<U>(), total, is.size, is.inner, xs.size, xs.inner);
      LOOM_CUDA_LAUNCH_CHECK();
    });
  });
}

void scatter_add(const View& out, int dim, const View& index, const View& src) {
  dispatch_float(out.dtype, "cuda::scatter_add", [&](auto tag_) {
    using T = typename decltype(tag_)::type;
    const Split os = split_at(out, dim), is = split_at(index, dim);
    const int64_t columns = is.outer * is.inner;
    if (columns == 0 || is.size == 0) return;
    dispatch_index(index.dtype, "cuda::scatter_add", [&](auto itag) {
      using I = typename decltype(itag)::type;
      scatter_add_kernel<T, I><<<blocks_for(columns), kThreads, 0, stream()>>>(
          out.ptr<T>(), index.ptr<I>(), src.ptr<T>(), columns, is.size, is.inner, os.size, os.inner);
      LOOM_CUDA_LAUNCH_CHECK();
    });
  });
}

void index_select(const View& x, int dim, const View& index, const View& out) {
  dispatch_all(x.dtype, "cuda::index_select", [&](auto tag_) {
    using U = typename bits_of<sizeof(typename decltype(tag_)::type)>::type;
    const Split xs = split_at(x, dim);
    const int64_t ni = index.numel(), total = xs.outer * ni * xs.inner;
    if (total == 0) return;
    dispatch_index(index.dtype, "cuda::index_select", [&](auto itag) {
      using I = typename decltype(itag)::type;
      index_select_kernel<U, I><<<blocks_for(total), kThreads, 0, stream()>>>(
          x.ptr<U>(), index.ptr<I>(), out.ptr<U>(), total, ni, xs.inner, xs.size);
      LOOM_CUDA_LAUNCH_CHECK();
    });
  });
}

void embedding_backward(const View& dy, const View& ids, const View& dweight) {
  dispatch_float(dy.dtype, "cuda::embedding_backward", [&](auto tag_) {
    using T = typename decltype(tag_)::type;
    const int64_t n = ids.numel(), d = dweight.ndim ? dweight.shape[dweight.ndim - 1] : 1;
    const int64_t vocab = d ? dweight.numel() / d : 0;
    if (n == 0 || d == 0 || vocab == 0) return;
    dispatch_index(ids.dtype, "cuda::embedding_backward", [&](auto itag) {
      using I = typename decltype(itag)::type;
      cudaStream_t s = stream();
      // Sort only the bits that can differ: keys lie in [0, vocab] (vocab is the sentinel).
      int end_bit = 0;
      while (end_bit < 64 && (uint64_t(vocab) >> end_bit) != 0) ++end_bit;
      size_t temp_bytes = 0;
      LOOM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, static_cast<const uint64_t*>(nullptr),
                                                      static_cast<uint64_t*>(nullptr),
                                                      static_cast<const int64_t*>(nullptr),
                                                      static_cast<int64_t*>(nullptr), n, 0, end_bit, s));
      const size_t arr = align_up(size_t(n) * 8);
      Scratch buf(4 * arr + align_up(temp_bytes), s);
      char* base = static_cast<char*>(buf.p);
      auto* keys_in = reinterpret_cast<uint64_t*>(base);
      auto* keys_out = reinterpret_cast<uint64_t*>(base + arr);
      auto* pos_in = reinterpret_cast<int64_t*>(base + 2 * arr);
      auto* pos_out = reinterpret_cast<int64_t*>(base + 3 * arr);
      void* temp = base + 4 * arr;
      embedding_keys_kernel<I><<<blocks_for(n), kThreads, 0, s>>>(ids.ptr<I>(), n, vocab, keys_in, pos_in);
      LOOM_CUDA_LAUNCH_CHECK();
      LOOM_CUDA_CHECK(
          cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, pos_in, pos_out, n, 0, end_bit, s));
      const int threads = d >= 256 ? 256 : int((d + 31) / 32 * 32);
      embedding_segments_kernel<T><<<blocks_for(n, 1), threads, 0, s>>>(keys_out, pos_out, dy.ptr<T>(),
                                                                          dweight.ptr<T>(), n, d, uint64_t(vocab));
      LOOM_CUDA_LAUNCH_CHECK();
    });
  });
}

LOOM_KERNELS_INDEX(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cuda
