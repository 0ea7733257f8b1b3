// Reductions over any set of dims with any input strides, with the CPU's semantics: sums accumulate
// in f64, amax and argmax propagate NaN, logsumexp subtracts the max first. Every result is
// computed in a fixed order that depends only on the shape, so runs repeat bitwise.
#define LOOM_DEFINING_REDUCE  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include <algorithm>
#include <cfloat>
#include "kernels/cuda/launch.cuh"

namespace loom::kernels::cuda {
namespace {

// Reduced dims of x, coalesced (as on the CPU), and the kept dims for locating output element o.
struct ReduceGeometry {
  int n_inner = 0;
  int64_t inner_shape[kMaxDims], inner_strides[kMaxDims];
  int64_t count = 1;  // elements reduced into each output
  int n_outer = 0;
  int64_t outer_shape[kMaxDims], outer_strides[kMaxDims];

  __device__ __forceinline__ int64_t outer_offset(int64_t o) const {
    int64_t off = 0;
    for (int d = n_outer - 1; d >= 0; --d) {
      const int64_t q = o / outer_shape[d];
      off += (o - q * outer_shape[d]) * outer_strides[d];
      o = q;
    }
    return off;
  }
  __device__ __forceinline__ int64_t inner_offset(int64_t j) const {
    int64_t off = 0;
    for (int d = n_inner - 1; d >= 0; --d) {
      const int64_t q = j / inner_shape[d];
      off += (j - q * inner_shape[d]) * inner_strides[d];
      j = q;
    }
    return off;
  }
};

ReduceGeometry reduce_geometry(const View& x, uint32_t mask) {
  ReduceGeometry g;
  for (int d = 0; d < x.ndim; ++d) {
    if (!(mask >> d & 1u) || x.shape[d] == 1) continue;
    if (g.n_inner > 0 && g.inner_strides[g.n_inner - 1] == x.strides[d] * x.shape[d]) {
      g.inner_shape[g.n_inner - 1] *= x.shape[d];
      g.inner_strides[g.n_inner - 1] = x.strides[d];
    } else {
      g.inner_shape[g.n_inner] = x.shape[d];
      g.inner_strides[g.n_inner] = x.strides[d];
      ++g.n_inner;
    }
    g.count *= x.shape[d];
  }
  for (int d = 0; d < x.ndim; ++d) {
    if ((mask >> d & 1u) || x.shape[d] == 1) continue;
    g.outer_shape[g.n_outer] = x.shape[d];
    g.outer_strides[g.n_outer] = x.strides[d];
    ++g.n_outer;
  }
  return g;
}

// max that propagates NaN, like the CPU's amax
template <class A> __device__ __forceinline__ A nan_max(A s, A v) { return (v > s || isnan(v)) ? v : s; }

template <Reduce op, class A> struct Acc;  // accumulator type per op
template <class A> struct Acc<Reduce::sum, A> { using type = double; };
template <class A> struct Acc<Reduce::amax, A> { using type = A; };

template <Reduce op, class S> __device__ __forceinline__ S combine(S a, S b) {
  if constexpr (op == Reduce::sum) return a + b;
  else return nan_max(a, b);
}
template <Reduce op, class S> __device__ __forceinline__ S init() {
  if constexpr (op == Reduce::sum) return S(0);
  else return S(-INFINITY);
}

template <Reduce op, class S> __device__ __forceinline__ S block_combine(S v, S* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  for (int o = 16; o > 0; o >>= 1) v = combine<op>(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : init<op, S>();
  for (int o = 16; o > 0; o >>= 1) v = combine<op>(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  return v;
}

// One block per output element (grid-stride over outputs), threads stride over the reduced elements.
template <Reduce op, class T>
__global__ void reduce_block_kernel(const T* x, T* out, ReduceGeometry g, int64_t nout) {
  using S = typename Acc<op, acc_t<T>>::type;
  __shared__ S scratch[32];
  for (int64_t o = blockIdx.x; o < nout; o += gridDim.x) {
    const T* base = x + g.outer_offset(o);
    S s = init<op, S>();
    for (int64_t j = threadIdx.x; j < g.count; j += blockDim.x) s = combine<op>(s, S(load(base[g.inner_offset(j)])));
    s = block_combine<op>(s, scratch);
    if (threadIdx.x == 0) out[o] = store<T>(acc_t<T>(s));
  }
}

// One thread per output element, for short reductions.
template <Reduce op, class T>
__global__ void reduce_thread_kernel(const T* x, T* out, ReduceGeometry g, int64_t nout) {
  using S = typename Acc<op, acc_t<T>>::type;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < nout; o += int64_t(gridDim.x) * blockDim.x) {
    const T* base = x + g.outer_offset(o);
    S s = init<op, S>();
    for (int64_t j = 0; j < g.count; ++j) s = combine<op>(s, S(load(base[g.inner_offset(j)])));
    out[o] = store<T>(acc_t<T>(s));
  }
}

// Few outputs over many elements (a loss, a gradient norm): one block per output would leave the
// GPU idle, so pass 1 gives each output `parts` blocks, block (p, o) reducing the p-th slice of
// output o's elements, and pass 2 combines each output's parts in order (deterministic).
template <Reduce op, class T, class S>
__global__ void reduce_split_kernel(const T* x, S* part, ReduceGeometry g, int64_t parts) {
  __shared__ S scratch[32];
  const int64_t o = blockIdx.y, p = blockIdx.x;
  const int64_t per = (g.count + parts - 1) / parts, lo = p * per, hi = lo + per < g.count ? lo + per : g.count;
  const T* base = x + g.outer_offset(o);
  S s = init<op, S>();
  for (int64_t j = lo + threadIdx.x; j < hi; j += blockDim.x) s = combine<op>(s, S(load(base[g.inner_offset(j)])));
  s = block_combine<op>(s, scratch);
  if (threadIdx.x == 0) part[o * parts + p] = s;
}
template <Reduce op, class T, class S>
__global__ void reduce_parts_kernel(const S* part, T* out, int64_t parts) {
  __shared__ S scratch[32];
  const int64_t o = blockIdx.x;
  S s = init<op, S>();
  for (int64_t j = threadIdx.x; j < parts; j += blockDim.x) s = combine<op>(s, part[o * parts + j]);
  s = block_combine<op>(s, scratch);
  if (threadIdx.x == 0) out[o] = store<T>(acc_t<T>(s));
}

// Contiguous [rows, cols] reduced over rows (bias gradients): pass 1 reduces fixed chunks of rows
// per column (coalesced across threads), pass 2 combines the chunks in order.
template <Reduce op, class T, class S>
__global__ void columns_partial_kernel(const T* x, S* part, int64_t rows, int64_t cols, int64_t chunk) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  const int64_t r0 = blockIdx.y * chunk, r1 = r0 + chunk < rows ? r0 + chunk : rows;
  S s = init<op, S>();
  for (int64_t r = r0; r < r1; ++r) s = combine<op>(s, S(load(x[r * cols + c])));
  part[blockIdx.y * cols + c] = s;
}
template <Reduce op, class T, class S>
__global__ void columns_final_kernel(const S* part, T* out, int64_t chunks, int64_t cols) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  S s = init<op, S>();
  for (int64_t k = 0; k < chunks; ++k) s = combine<op>(s, part[k * cols + c]);
  out[c] = store<T>(acc_t<T>(s));
}

template <class T>
__global__ void logsumexp_kernel(const T* x, T* out, ReduceGeometry g, int64_t nout) {
  using A = acc_t<T>;
  __shared__ A mscratch[32];
  __shared__ double sscratch[32];
  for (int64_t o = blockIdx.x; o < nout; o += gridDim.x) {
    const T* base = x + g.outer_offset(o);
    A m = A(-INFINITY);
    for (int64_t j = threadIdx.x; j < g.count; j += blockDim.x) m = nan_max(m, load(base[g.inner_offset(j)]));
    m = block_combine<Reduce::amax>(m, mscratch);
    double s = 0;
    if (!(isinf(m) || isnan(m)))
      for (int64_t j = threadIdx.x; j < g.count; j += blockDim.x) s += exp(double(load(base[g.inner_offset(j)]) - m));
    s = block_combine<Reduce::sum>(s, sscratch);
    if (threadIdx.x == 0) out[o] = store<T>((isinf(m) || isnan(m)) ? m : A(m + A(log(s))));
  }
}

template <class T>
__global__ void argmax_kernel(const T* x, int64_t* out, ReduceGeometry g, int64_t n, int64_t stride, int64_t nout) {
  using A = acc_t<T>;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < nout; o += int64_t(gridDim.x) * blockDim.x) {
    const T* p = x + g.outer_offset(o);
    int64_t best = 0;
    A bv = load(p[0]);
    for (int64_t j = 1; j < n && !isnan(bv); ++j) {
      const A v = load(p[j * stride]);
      if (v > bv || isnan(v)) { bv = v; best = j; }
    }
    out[o] = best;
  }
}

template <Reduce op, class T>
void reduce_typed(const View& x, uint32_t mask, const View& out) {
  using S = typename Acc<op, acc_t<T>>::type;
  const int64_t nout = out.numel();
  if (nout == 0) return;
  const ReduceGeometry g = reduce_geometry(x, mask);
  int lead = 0;
  while (lead < x.ndim && (mask >> lead & 1u)) ++lead;
  const bool leading_only = lead > 0 && (mask >> lead) == 0 && x.contiguous() && nout > 1;
  if (leading_only && g.count > 1) {
    const int64_t rows = g.count, cols = nout;
    const int64_t chunk = 64, chunks = (rows + chunk - 1) / chunk;
    if (chunks > 65535) goto general;  // grid.y limit; the general path handles it
    {
      Scratch buf(size_t(chunks * cols) * sizeof(S), stream());
      S* part = static_cast<S*>(buf.p);
      const dim3 grid(unsigned((cols + kThreads - 1) / kThreads), unsigned(chunks));
      columns_partial_kernel<op, T, S><<<grid, kThreads, 0, stream()>>>(x.ptr<T>(), part, rows, cols, chunk);
      LOOM_CUDA_LAUNCH_CHECK();
      columns_final_kernel<op, T, S><<<blocks_for(cols), kThreads, 0, stream()>>>(part, out.ptr<T>(), chunks, cols);
      LOOM_CUDA_LAUNCH_CHECK();
      return;
    }
  }
general:
  if (nout <= 64 && g.count >= (int64_t(1) << 16)) {
    const int64_t parts = std::min<int64_t>(1024, (g.count + 8191) / 8192);
    Scratch buf(size_t(nout * parts) * sizeof(S), stream());
    S* part = static_cast<S*>(buf.p);
    reduce_split_kernel<op, T, S><<<dim3(unsigned(parts), unsigned(nout)), kThreads, 0, stream()>>>(x.ptr<T>(), part, g, parts);
    LOOM_CUDA_LAUNCH_CHECK();
    reduce_parts_kernel<op, T, S><<<unsigned(nout), kThreads, 0, stream()>>>(part, out.ptr<T>(), parts);
    LOOM_CUDA_LAUNCH_CHECK();
    return;
  }
  if (g.count <= 32) {
    reduce_thread_kernel<op, T><<<blocks_for(nout), kThreads, 0, stream()>>>(x.ptr<T>(), out.ptr<T>(), g, nout);
  } else {
    const unsigned blocks = unsigned(nout < 65535 * 4 ? nout : 65535 * 4);
    reduce_block_kernel<op, T><<<blocks, kThreads, 0, stream()>>>(x.ptr<T>(), out.ptr<T>(), g, nout);
  }
  LOOM_CUDA_LAUNCH_CHECK();
}

}  // namespace

void reduce(Reduce op, const View& x, uint32_t mask, const View& out) {
  dispatch_float(x.dtype, "cuda::reduce", [&](auto tag) {
    using T = typename decltype(tag)::type;
    switch (op) {
      case Reduce::sum: return reduce_typed<Reduce::sum, T>(x, mask, out);
      case Reduce::amax: return reduce_typed<Reduce::amax, T>(x, mask, out);
      case Reduce::logsumexp: {
        const int64_t nout = out.numel();
        if (nout == 0) return;
        const unsigned blocks = unsigned(nout < 65535 * 4 ? nout : 65535 * 4);
        logsumexp_kernel<T><<<blocks, kThreads, 0, stream()>>>(x.ptr<T>(), out.ptr<T>(), reduce_geometry(x, mask), nout);
        LOOM_CUDA_LAUNCH_CHECK();
        return;
      }
    }
  });
}

void argmax(const View& x, int dim, const View& out) {
  dispatch_float(x.dtype, "cuda::argmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t nout = out.numel();
    if (nout == 0) return;
    const ReduceGeometry g = reduce_geometry(x, 1u << dim);
    argmax_kernel<T><<<blocks_for(nout), kThreads, 0, stream()>>>(x.ptr<T>(), out.ptr<int64_t>(), g, x.shape[dim],
                                                                  x.strides[dim], nout);
    LOOM_CUDA_LAUNCH_CHECK();
  });
}

LOOM_KERNELS_REDUCE(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cuda
