// Row kernels over contiguous [rows, n]: softmax, layer norm, cross-entropy; the CUDA twins of
// kernels/cpu/rows.cpp. A short row (n <= 1024) is handled by one warp, a long one by one block;
// rows are visited with a grid-stride loop. Statistics are kept in acc_t<T> (f32, f64 for f64).
// Every result is written by exactly one thread and no float atomics are used, so results are
// identical from run to run.
#define LOOM_DEFINING_ROWS  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include <cstdint>
#include <type_traits>
#include "kernels/common/dtype.h"
#include "kernels/cuda/launch.cuh"

namespace loom::kernels::cuda {
namespace {

inline int64_t rows_of(const View& v) {
  if (v.ndim == 0) return 1;
  const int64_t n = v.shape[v.ndim - 1];
  return n == 0 ? 0 : v.numel() / n;  // a [N, 0] tensor has no rows to visit
}
inline int64_t cols_of(const View& v) { return v.ndim == 0 ? 1 : v.shape[v.ndim - 1]; }

// Overloads so the kernels stay generic over float/double without host-only std:: math.
__device__ __forceinline__ float dexp(float v) { return expf(v); }
__device__ __forceinline__ double dexp(double v) { return exp(v); }
__device__ __forceinline__ float dlog(float v) { return logf(v); }
__device__ __forceinline__ double dlog(double v) { return log(v); }
__device__ __forceinline__ float dsqrt(float v) { return sqrtf(v); }
__device__ __forceinline__ double dsqrt(double v) { return sqrt(v); }
__device__ __forceinline__ bool dinf(float v) { return isinf(v); }
__device__ __forceinline__ bool dinf(double v) { return isinf(v); }

// Which threads share a row and how they reduce. Warp: row per warp (blockDim.x a multiple of 32).
// Block: row per block. The row loop bounds are uniform across the group, so the shuffles and
// barriers inside the reductions are always reached by every member.
template <bool Warp> struct Rows;
template <> struct Rows<true> {
  __device__ static int lane() { return threadIdx.x & 31; }
  __device__ static int width() { return 32; }
  __device__ static int64_t first() { return int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); }
  __device__ static int64_t step() { return int64_t(gridDim.x) * (blockDim.x >> 5); }
  template <class A> __device__ static A sum(A v, A*) { return warp_sum(v); }
  template <class A> __device__ static A max(A v, A*) { return warp_max(v); }
};
template <> struct Rows<false> {
  __device__ static int lane() { return threadIdx.x; }
  __device__ static int width() { return blockDim.x; }
  __device__ static int64_t first() { return blockIdx.x; }
  __device__ static int64_t step() { return gridDim.x; }
  template <class A> __device__ static A sum(A v, A* scratch) { return block_sum(v, scratch); }
  template <class A> __device__ static A max(A v, A* scratch) { return block_max(v, scratch); }
};

constexpr int64_t kWarpRowMax = 1024;  // up to 32 elements per lane

// Calls f(std::bool_constant<warp>, blocks, threads) with the launch shape for rows of n elements.
template <class F> void for_rows(int64_t rows, int64_t n, F&& f) {
  if (rows == 0 || n == 0) return;
  if (n <= kWarpRowMax) f(std::true_type{}, blocks_for(rows, kThreads / 32), kThreads);
  else f(std::false_type{}, blocks_for(rows, 1), n <= 4096 ? 256 : n <= 16384 ? 512 : 1024);
}

// ---- softmax ----
// y may alias x (each thread rewrites only the elements it read, after the row's reductions).
template <class T, bool Warp>
__global__ void __launch_bounds__(1024) softmax_kernel(const T* x, T* y, int64_t rows, int64_t n, bool log) {
  using A = acc_t<T>;
  using R = Rows<Warp>;
  __shared__ A scratch[32];
  const A ninf = -A(INFINITY);
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    A m = ninf;  // max as std::max computes it: NaN entries are skipped
    for (int64_t j = R::lane(); j < n; j += R::width()) { A v = ld(xr + j); m = m < v ? v : m; }
    m = R::max(m, scratch);
    if (m == ninf) {  // every entry masked: no mass anywhere
      for (int64_t j = R::lane(); j < n; j += R::width()) st(yr + j, log ? ninf : A(0));
      continue;
    }
    A s = 0;
    for (int64_t j = R::lane(); j < n; j += R::width()) s += dexp(ld(xr + j) - m);
    s = R::sum(s, scratch);
    if (log) {
      const A lse = m + dlog(s);
      for (int64_t j = R::lane(); j < n; j += R::width()) st(yr + j, ld(xr + j) - lse);
    } else {
      const A inv = A(1) / s;
      for (int64_t j = R::lane(); j < n; j += R::width()) st(yr + j, dexp(ld(xr + j) - m) * inv);
    }
  }
}

template <class T, bool Warp>
__global__ void __launch_bounds__(1024)
softmax_backward_kernel(const T* y, const T* dy, T* dx, int64_t rows, int64_t n, bool log) {
  using A = acc_t<T>;
  using R = Rows<Warp>;
  __shared__ A scratch[32];
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const T *yr = y + r * n, *gr = dy + r * n;
    T* dr = dx + r * n;
    A s = 0;
    if (log) {
      for (int64_t j = R::lane(); j < n; j += R::width()) s += ld(gr + j);
      s = R::sum(s, scratch);
      for (int64_t j = R::lane(); j < n; j += R::width()) {
        const A yv = ld(yr + j);  // -inf (fully masked row) contributes nothing
        st(dr + j, ld(gr + j) - (dinf(yv) ? A(0) : dexp(yv)) * s);
      }
    } else {
      for (int64_t j = R::lane(); j < n; j += R::width()) s += ld(gr + j) * ld(yr + j);
      s = R::sum(s, scratch);
      for (int64_t j = R::lane(); j < n; j += R::width()) st(dr + j, ld(yr + j) * (ld(gr + j) - s));
    }
  }
}

// ---- layer norm ----
template <class T, bool Warp>
__global__ void __launch_bounds__(1024) layer_norm_kernel(const T* x, const T* w, const T* b, acc_t<T> eps, T* y,
                                                          acc_t<T>* mean, acc_t<T>* rstd, int64_t rows, int64_t n) {
  using A = acc_t<T>;
  using R = Rows<Warp>;
  __shared__ A scratch[32];
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    A m = 0;
    for (int64_t j = R::lane(); j < n; j += R::width()) m += ld(xr + j);
    m = R::sum(m, scratch) / A(n);
    A v = 0;  // two-pass variance: no cancellation
    for (int64_t j = R::lane(); j < n; j += R::width()) { A d = ld(xr + j) - m; v += d * d; }
    v = R::sum(v, scratch);
    const A rs = A(1) / dsqrt(v / A(n) + eps);
    if (R::lane() == 0) { mean[r] = m; rstd[r] = rs; }
    for (int64_t j = R::lane(); j < n; j += R::width()) {
      A h = (ld(xr + j) - m) * rs;
      if (w) h *= ld(w + j);
      if (b) h += ld(b + j);
      st(yr + j, h);
    }
  }
}

// dx per row from the saved mean/rstd: dx = rstd * (g·w - mean(g·w) - x̂ · mean(g·w·x̂)).
template <class T, bool Warp>
__global__ void __launch_bounds__(1024) layer_norm_dx_kernel(const T* dy, const T* x, const T* w, const acc_t<T>* mean,
                                                             const acc_t<T>* rstd, T* dx, int64_t rows, int64_t n) {
  using A = acc_t<T>;
  using R = Rows<Warp>;
  __shared__ A scratch[32];
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const T *xr = x + r * n, *gr = dy + r * n;
    T* dr = dx + r * n;
    const A m = mean[r], rs = rstd[r];
    A sg = 0, sgx = 0;
    for (int64_t j = R::lane(); j < n; j += R::width()) {
      const A xh = (ld(xr + j) - m) * rs, g = ld(gr + j);
      const A gw = w ? g * ld(w + j) : g;
      sg += gw; sgx += gw * xh;
    }
    sg = R::sum(sg, scratch) / A(n);
    sgx = R::sum(sgx, scratch) / A(n);
    for (int64_t j = R::lane(); j < n; j += R::width()) {
      const A xh = (ld(xr + j) - m) * rs, g = ld(gr + j);
      const A gw = w ? g * ld(w + j) : g;
      st(dr + j, rs * (gw - sg - xh * sgx));
    }
  }
}

// dweight/dbias partial sums over a fixed chunk of rows: block (32 columns, 8 row lanes), grid
// (column tiles, chunks). Row lane k sums rows k, k+8, ... of its chunk; the 8 lane sums are then
// added in lane order. The assignment depends only on the shape, so the result is deterministic.
constexpr int kColTile = 32, kRowLanes = 8;

template <class T, class O>
__global__ void layer_norm_colsum_kernel(const T* dy, const T* x, const acc_t<T>* mean, const acc_t<T>* rstd,
                                         int64_t rows, int64_t n, int64_t chunk_rows, O* pw, O* pb) {
  using A = acc_t<T>;
  __shared__ A tw[kRowLanes][kColTile + 1], tb[kRowLanes][kColTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = int64_t(blockIdx.x) * kColTile + tx, chunk = blockIdx.y;
  const int64_t r0 = chunk * chunk_rows, r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  A sw = 0, sb = 0;
  if (j < n) {
    for (int64_t r = r0 + ty; r < r1; r += kRowLanes) {
      const A g = ld(dy + r * n + j);
      sb += g;
      if (pw) sw += g * ((ld(x + r * n + j) - mean[r]) * rstd[r]);
    }
  }
  tw[ty][tx] = sw;
  tb[ty][tx] = sb;
  __syncthreads();
  if (ty == 0 && j < n) {
    A a = 0, c = 0;
    for (int k = 0; k < kRowLanes; ++k) { a += tw[k][tx]; c += tb[k][tx]; }
    if (pw) pw[chunk * n + j] = store<O>(a);
    if (pb) pb[chunk * n + j] = store<O>(c);
  }
}

// Sums the chunk partials of each column in chunk order (zero when there are no rows).
template <class T>
__global__ void layer_norm_colsum_final_kernel(const acc_t<T>* pw, const acc_t<T>* pb, int64_t chunks, int64_t n,
                                               T* dweight, T* dbias) {
  using A = acc_t<T>;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < n; j += int64_t(gridDim.x) * blockDim.x) {
    if (dweight) {
      A s = 0;
      for (int64_t c = 0; c < chunks; ++c) s += pw[c * n + j];
      dweight[j] = store<T>(s);
    }
    if (dbias) {
      A s = 0;
      for (int64_t c = 0; c < chunks; ++c) s += pb[c * n + j];
      dbias[j] = store<T>(s);
    }
  }
}

// ---- cross-entropy ----
__device__ __forceinline__ int64_t target_at(const int32_t* t32, const int64_t* t64, int64_t r) {
  return t64 ? t64[r] : int64_t(t32[r]);
}

template <class T, bool Warp>
__global__ void __launch_bounds__(1024)
cross_entropy_kernel(const T* logits, const int32_t* t32, const int64_t* t64, int64_t ignore_index, acc_t<T> eps,
                     acc_t<T>* loss, acc_t<T>* lse, int64_t rows, int64_t n) {
  using A = acc_t<T>;
  using R = Rows<Warp>;
  __shared__ A scratch[32];
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const T* xr = logits + r * n;
    A m = -A(INFINITY), sx = 0;
    for (int64_t j = R::lane(); j < n; j += R::width()) { A v = ld(xr + j); m = m < v ? v : m; sx += v; }
    m = R::max(m, scratch);
    const A mean_x = R::sum(sx, scratch) / A(n);
    A s = 0;
    for (int64_t j = R::lane(); j < n; j += R::width()) s += dexp(ld(xr + j) - m);
    s = R::sum(s, scratch);
    if (R::lane() == 0) {
      const A l = m + dlog(s);
      lse[r] = l;
      const int64_t t = target_at(t32, t64, r);
      if (t == ignore_index) loss[r] = A(0);
      else if (t < 0 || t >= n) loss[r] = A(NAN);  // never read outside the row (the CPU reads garbage)
      else loss[r] = (A(1) - eps) * (l - ld(xr + t)) + eps * (l - mean_x);
    }
  }
}

// dlogits straight from logits and the saved lse; no probabilities are stored. dlogits may alias logits.
template <class T, bool Warp>
__global__ void __launch_bounds__(1024)
cross_entropy_backward_kernel(const T* logits, const int32_t* t32, const int64_t* t64, const acc_t<T>* lse,
                              int64_t ignore_index, acc_t<T> eps, acc_t<T> sc, T* dlogits, int64_t rows, int64_t n) {
  using A = acc_t<T>;
  using R = Rows<Warp>;
  const A uniform = eps / A(n), hit = A(1) - eps;
  for (int64_t r = R::first(); r < rows; r += R::step()) {
    const T* xr = logits + r * n;
    T* dr = dlogits + r * n;
    const int64_t t = target_at(t32, t64, r);
    if (t == ignore_index) {
      for (int64_t j = R::lane(); j < n; j += R::width()) st(dr + j, A(0));
      continue;
    }
    const A l = lse[r];
    for (int64_t j = R::lane(); j < n; j += R::width()) {
      const A p = dexp(ld(xr + j) - l);
      st(dr + j, sc * (p - uniform - (j == t ? hit : A(0))));
    }
  }
}

void targets_of(const View& targets, const char* op, const int32_t** t32, const int64_t** t64) {
  *t32 = nullptr;
  *t64 = nullptr;
  if (targets.dtype == DType::i64) *t64 = targets.ptr<int64_t>();
  else if (targets.dtype == DType::i32) *t32 = targets.ptr<int32_t>();
  else throw std::invalid_argument(std::string(op) + ": targets must be i32 or i64, got " +
                                   std::string(dtype_name(targets.dtype)));
}

}  // namespace

void softmax(const View& x, const View& y, bool log) {
  dispatch_float(x.dtype, "cuda::softmax", [&](auto tag_) {
    using T = typename decltype(tag_)::type;
    const int64_t rows = rows_of(x), n = cols_of(x);
    for_rows(rows, n, [&](auto warp, unsigned blocks, int threads) {
      softmax_kernel<T, decltype(warp)::value><<<blocks, threads, 0, stream()>>>(x.ptr<T>(), y.ptr<T>(), rows, n, log);
      LOOM_CUDA_LAUNCH_CHECK();
    });
  });
}

void softmax_backward(const View& y, const View& dy, const View& dx, bool log) {
  dispatch_float(y.dtype, "cuda::softmax_backward", [&](auto tag_) {
    using T = typename decltype(tag_)::type;
    const int64_t rows = rows_of(y), n = cols_of(y);
    for_rows(rows, n, [&](auto warp, unsigned blocks, int threads) {
      softmax_backward_kernel<T, decltype(warp)::value>
          <<<blocks, threads, 0, stream()>>>(y.ptr<T>(), dy.ptr<T>(), dx.ptr<T>(), rows, n, log);
      LOOM_CUDA_LAUNCH_CHECK();
    });
  });
}

void layer_norm_forward(const View& x, const View& weight, const View& bias, double eps, const View& y,
                        const View& mean, const View& rstd) {
  dispatch_float(x.dtype, "cuda::layer_norm", [&](auto tag_) {
    using T = typename decltype(tag_)::type;
    using A = acc_t<T>;
    const int64_t rows = rows_of(x), n = cols_of(x);
    for_rows(rows, n, [&](auto warp, unsigned blocks, int threads) {
      layer_norm_kernel<T, decltype(warp)::value><<<blocks, threads, 0, stream()>>>(
          x.ptr<T>(), weight.ptr<T>(), bias.ptr<T>(), A(eps), y.ptr<T>(), mean.ptr<A>(), rstd.ptr<A>(), rows, n);
      LOOM_CUDA_LAUNCH_CHECK();
    });
  });
}

void layer_norm_backward(const View& dy, const View& x, const View& weight, const View& mean, const View& rstd,
                         const View& dx, const View& dweight, const View& dbias) {
  dispatch_float(x.dtype, "cuda::layer_norm_backward", [&](auto tag_) {
    using T = typename decltype(tag_)::type;
    using A = acc_t<T>;
    const int64_t rows = rows_of(x), n = cols_of(x);
    const A *mp = mean.ptr<A>(), *rp = rstd.ptr<A>();
    T *dw = dweight.ptr<T>(), *db = dbias.ptr<T>();
    cudaStream_t s = stream();

    // dweight/dbias first: dx may alias dy, and they read dy.
    if ((dw || db) && n > 0) {
      if (rows == 0) {  // no rows: the sums are zero, as on the CPU
        layer_norm_colsum_final_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(nullptr, nullptr, 0, n, dw, db);
        LOOM_CUDA_LAUNCH_CHECK();
      } else {
        // Fixed chunking from the shape alone: at least 64 rows a chunk, at most 1024 chunks.
        int64_t chunk_rows = (rows + 1023) / 1024;
        if (chunk_rows < 64) chunk_rows = 64;
        const int64_t chunks = (rows + chunk_rows - 1) / chunk_rows;
        const dim3 grid(unsigned((n + kColTile - 1) / kColTile), unsigned(chunks)), block(kColTile, kRowLanes);
        if (chunks == 1) {  // one chunk: write the result directly
          layer_norm_colsum_kernel<T, T>
              <<<grid, block, 0, s>>>(dy.ptr<T>(), x.ptr<T>(), mp, rp, rows, n, chunk_rows, dw, db);
          LOOM_CUDA_LAUNCH_CHECK();
        } else {
          const size_t part = size_t(chunks * n);
          Scratch buf(part * sizeof(A) * ((dw ? 1 : 0) + (db ? 1 : 0)), s);
          A* pw = dw ? static_cast<A*>(buf.p) : nullptr;
          A* pb = db ? static_cast<A*>(buf.p) + (dw ? part : 0) : nullptr;
          layer_norm_colsum_kernel<T, A>
              <<<grid, block, 0, s>>>(dy.ptr<T>(), x.ptr<T>(), mp, rp, rows, n, chunk_rows, pw, pb);
          LOOM_CUDA_LAUNCH_CHECK();
          layer_norm_colsum_final_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(pw, pb, chunks, n, dw, db);
          LOOM_CUDA_LAUNCH_CHECK();
        }
      }
    }
    for_rows(rows, n, [&](auto warp, unsigned blocks, int threads) {
      layer_norm_dx_kernel<T, decltype(warp)::value><<<blocks, threads, 0, s>>>(
          dy.ptr<T>(), x.ptr<T>(), weight.ptr<T>(), mp, rp, dx.ptr<T>(), rows, n);
      LOOM_CUDA_LAUNCH_CHECK();
    });
  });
}

void cross_entropy_forward(const View& logits, const View& targets, int64_t ignore_index, double smoothing,
                           const View& loss, const View& lse) {
  dispatch_float(logits.dtype, "cuda::cross_entropy", [&](auto tag_) {
    using T = typename decltype(tag_)::type;
    using A = acc_t<T>;
    const int64_t rows = rows_of(logits), n = cols_of(logits);
    const int32_t* t32;
    const int64_t* t64;
    targets_of(targets, "cuda::cross_entropy", &t32, &t64);
    for_rows(rows, n, [&](auto warp, unsigned blocks, int threads) {
      cross_entropy_kernel<T, decltype(warp)::value><<<blocks, threads, 0, stream()>>>(
          logits.ptr<T>(), t32, t64, ignore_index, A(smoothing), loss.ptr<A>(), lse.ptr<A>(), rows, n);
      LOOM_CUDA_LAUNCH_CHECK();
    });
  });
}

void cross_entropy_backward(const View& logits, const View& targets, const View& lse, int64_t ignore_index,
                            double smoothing, double scale, const View& dlogits) {
  dispatch_float(logits.dtype, "cuda::cross_entropy_backward", [&](auto tag_) {
    using T = typename decltype(tag_)::type;
    using A = acc_t<T>;
    const int64_t rows = rows_of(logits), n = cols_of(logits);
    const int32_t* t32;
    const int64_t* t64;
    targets_of(targets, "cuda::cross_entropy_backward", &t32, &t64);
    for_rows(rows, n, [&](auto warp, unsigned blocks, int threads) {
      cross_entropy_backward_kernel<T, decltype(warp)::value><<<blocks, threads, 0, stream()>>>(
          logits.ptr<T>(), t32, t64, lse.ptr<A>(), ignore_index, A(smoothing), A(scale), dlogits.ptr<T>(), rows, n);
      LOOM_CUDA_LAUNCH_CHECK();
    });
  });
}

LOOM_KERNELS_ROWS(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cuda
