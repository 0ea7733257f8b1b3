// Elementwise CUDA kernels: copy/convert, fill, unary and binary maps, where. One thread per output
// element over a grid-stride loop; operands are strided (broadcast operands have stride 0). The op
// code is a kernel argument: the switch is uniform across a launch, so it costs no divergence and
// keeps the number of instantiations small.
#define LOOM_DEFINING_ELEMENTWISE  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include <type_traits>
#include "kernels/common/activations.h"
#include "kernels/cuda/launch.cuh"

namespace loom::kernels::cuda {
namespace {

template <class A> constexpr bool floating_v = std::is_same_v<A, float> || std::is_same_v<A, double>;

// The math the shared formulas (kernels/common/activations.h) compute with on the device.
struct DeviceMath {
  template <class A> __device__ __forceinline__ static A exp_(A x) { return exp(x); }
  template <class A> __device__ __forceinline__ static A erf_(A x) { return erf(x); }
  template <class A> __device__ __forceinline__ static A tanh_(A x) { return tanh(x); }
};
namespace f = formulas;

template <class S, class D>
__global__ void copy_kernel(const S* src, D* dst, Strided<2> g, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    g.offsets(i, off);
    dst[off[0]] = store<D>(load(src[off[1]]));
  }
}

template <class T>
__global__ void fill_kernel(T* dst, Strided<1> g, int64_t n, T v) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[1];
    g.offsets(i, off);
    dst[off[0]] = v;
  }
}

template <class A>
__device__ __forceinline__ A unary_op(Unary op, A v, A pa, A pb) {
  switch (op) {
    case Unary::neg: return -v;
    case Unary::exp: return exp(v);
    case Unary::log: return log(v);
    case Unary::sqrt: return sqrt(v);
    case Unary::rsqrt: return A(1) / sqrt(v);
    case Unary::pow: return pa == A(2) ? v * v : pow(v, pa);
    case Unary::tanh: return tanh(v);
    case Unary::sigmoid: return f::sigmoid<DeviceMath>(v);
    case Unary::relu: return v > A(0) ? v : A(0);
    case Unary::gelu_erf: return f::gelu_erf<DeviceMath>(v);
    case Unary::gelu_tanh: return f::gelu_tanh<DeviceMath>(v);
    case Unary::quick_gelu: return f::quick_gelu<DeviceMath>(v);
    case Unary::clamp: return v < pa ? pa : (v > pb ? pb : v);  // NaN stays NaN
    case Unary::add_scalar: return v + pa;
    case Unary::mul_scalar: return v * pa;
    case Unary::rsub_scalar: return pa - v;
    case Unary::rdiv_scalar: return pa / v;
    case Unary::logical_not: break;
  }
  return v;
}

template <class T>
__global__ void unary_kernel(Unary op, const T* x, T* out, Strided<2> g, int64_t n, acc_t<T> pa, acc_t<T> pb) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    g.offsets(i, off);
    out[off[0]] = store<T>(unary_op(op, load(x[off[1]]), pa, pb));
  }
}

template <class T>
__global__ void logical_not_kernel(const T* x, bool* out, Strided<2> g, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    g.offsets(i, off);
    out[off[0]] = load(x[off[1]]) == 0;
  }
}

template <class A>
__device__ __forceinline__ A arith_op(Binary op, A x, A y) {
  switch (op) {
    case Binary::add: return x + y;
    case Binary::sub: return x - y;
    case Binary::mul: return x * y;
    case Binary::step_backward: return y > A(0) ? x : A(0);
    default: break;
  }
  if constexpr (floating_v<A>) {
    switch (op) {
      case Binary::div: return x / y;
      case Binary::gelu_erf_backward: return x * f::gelu_erf_grad<DeviceMath>(y);
      case Binary::gelu_tanh_backward: return x * f::gelu_tanh_grad<DeviceMath>(y);
      case Binary::quick_gelu_backward: return x * f::quick_gelu_grad<DeviceMath>(y);
      default: break;
    }
  }
  return A(0);
}


template <class T>
__global__ void arith_kernel(Binary op, const T* a, const T* b, T* out, Strided<3> g, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[3];
    g.offsets(i, off);
    out[off[0]] = store<T>(arith_op(op, load(a[off[1]]), load(b[off[2]])));
  }
}

// Comparisons in the operands' compute type (i64 compared exactly, floats in f32/f64).
template <class T>
__global__ void compare_kernel(Binary op, const T* a, const T* b, bool* out, Strided<3> g, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[3];
    g.offsets(i, off);
    const auto x = load(a[off[1]]), y = load(b[off[2]]);
    bool r;
    switch (op) {
      case Binary::eq: r = x == y; break;
      case Binary::ne: r = x != y; break;
      case Binary::lt: r = x < y; break;
      case Binary::le: r = x <= y; break;
      case Binary::gt: r = x > y; break;
      default: r = x >= y; break;
    }
    out[off[0]] = r;
  }
}

template <class T>
__global__ void where_kernel(const bool* c, const T* a, const T* b, T* out, Strided<4> g, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[4];
    g.offsets(i, off);
    out[off[0]] = c[off[1]] ? a[off[2]] : b[off[3]];
  }
}

[[noreturn]] void unsupported(const char* what, DType t) {
  throw std::invalid_argument(std::string(what) + ": unsupported dtype " + std::string(dtype_name(t)));
}

bool is_compare(Binary op) {
  return op == Binary::eq || op == Binary::ne || op == Binary::lt || op == Binary::le || op == Binary::gt ||
         op == Binary::ge;
}

}  // namespace

void copy(const View& src, const View& dst) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  const View* v[2] = {&dst, &src};
  const Strided<2> g = make_strided<2>(dst.ndim, dst.shape, v);
  dispatch_all(src.dtype, "cuda::copy", [&](auto stag) {
    using S = typename decltype(stag)::type;
    dispatch_all(dst.dtype, "cuda::copy", [&](auto dtag) {
      using D = typename decltype(dtag)::type;
      copy_kernel<S, D><<<blocks_for(n), kThreads, 0, stream()>>>(src.ptr<S>(), dst.ptr<D>(), g, n);
      LOOM_CUDA_LAUNCH_CHECK();
    });
  });
}

void fill(const View& dst, double value) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  const View* v[1] = {&dst};
  const Strided<1> g = make_strided<1>(dst.ndim, dst.shape, v);
  dispatch_all(dst.dtype, "cuda::fill", [&](auto tag) {
    using T = typename decltype(tag)::type;
    fill_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(dst.ptr<T>(), g, n, store<T>(acc_t<T>(value)));
    LOOM_CUDA_LAUNCH_CHECK();
  });
}

void unary(Unary op, const View& x, const View& out, double a, double b) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const View* v[2] = {&out, &x};
  const Strided<2> g = make_strided<2>(out.ndim, out.shape, v);
  if (op == Unary::logical_not) {
    dispatch_all(x.dtype, "cuda::logical_not", [&](auto tag) {
      using T = typename decltype(tag)::type;
      logical_not_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(x.ptr<T>(), out.ptr<bool>(), g, n);
      LOOM_CUDA_LAUNCH_CHECK();
    });
    return;
  }
  dispatch_float(x.dtype, "cuda::unary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    unary_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(op, x.ptr<T>(), out.ptr<T>(), g, n, A(a), A(b));
    LOOM_CUDA_LAUNCH_CHECK();
  });
}

void binary(Binary op, const View& a, const View& b, const View& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const View* v[3] = {&out, &a, &b};
  const Strided<3> g = make_strided<3>(out.ndim, out.shape, v);
  dispatch_all(a.dtype, "cuda::binary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    if (is_compare(op)) {
      compare_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(op, a.ptr<T>(), b.ptr<T>(), out.ptr<bool>(), g, n);
    } else {
      const bool float_only = op == Binary::div || op == Binary::gelu_erf_backward || op == Binary::gelu_tanh_backward ||
                              op == Binary::quick_gelu_backward;
      if (float_only && !floating_v<A>) unsupported("cuda::binary", a.dtype);
      arith_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(op, a.ptr<T>(), b.ptr<T>(), out.ptr<T>(), g, n);
    }
    LOOM_CUDA_LAUNCH_CHECK();
  });
}

void where(const View& cond, const View& a, const View& b, const View& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const View* v[4] = {&out, &cond, &a, &b};
  const Strided<4> g = make_strided<4>(out.ndim, out.shape, v);
  dispatch_all(a.dtype, "cuda::where", [&](auto tag) {
    using T = typename decltype(tag)::type;
    where_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(cond.ptr<bool>(), a.ptr<T>(), b.ptr<T>(), out.ptr<T>(), g, n);
    LOOM_CUDA_LAUNCH_CHECK();
  });
}

LOOM_KERNELS_ELEMENTWISE(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cuda
