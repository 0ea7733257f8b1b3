// Elementwise kernels: copy/convert, fill, unary and binary maps, where.
#define LOOM_DEFINING_ELEMENTWISE  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>
#include "kernels/common/activations.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/vec_math.h"

namespace loom::kernels::cpu {
namespace {

template <class T> constexpr bool floating_v = std::is_same_v<acc_t<T>, float> || std::is_same_v<acc_t<T>, double>;

// The math the shared formulas (kernels/common/activations.h) compute with on the CPU.
struct CpuMath {
  template <class A> LOOM_VEC_INLINE static A exp_(A x) { return vec::exp_of(x); }
  template <class A> LOOM_VEC_INLINE static A erf_(A x) { return vec::erf_of(x); }
  template <class A> LOOM_VEC_INLINE static A tanh_(A x) { return std::tanh(x); }
};
namespace f = formulas;

// out[i] = f(x[i]) over a common shape; out and x may have different element types.
template <class X, class O, class F>
void map1(const View& x, const View& out, F f) {
  auto g = coalesce<2>(out.ndim, out.shape, {out.strides, x.strides});
  O* o = out.ptr<O>();
  const X* xi = x.ptr<X>();
  for_each_row(g, [&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& st) LOOM_VEC_FLATTEN {
    O* op = o + off[0];
    const X* xp = xi + off[1];
    if (st[0] == 1 && st[1] == 1) {
      for (int64_t j = 0; j < n; ++j) op[j] = store<O>(f(load(xp[j])));
    } else {
      for (int64_t j = 0; j < n; ++j) op[j * st[0]] = store<O>(f(load(xp[j * st[1]])));
    }
  });
}

template <class T, class O, class F>
void map2(const View& a, const View& b, const View& out, F f) {
  auto g = coalesce<3>(out.ndim, out.shape, {out.strides, a.strides, b.strides});
  O* o = out.ptr<O>();
  const T* ai = a.ptr<T>();
  const T* bi = b.ptr<T>();
  for_each_row(g, [&](const std::array<int64_t, 3>& off, int64_t n, const std::array<int64_t, 3>& st) LOOM_VEC_FLATTEN {
    O* op = o + off[0];
    const T* ap = ai + off[1];
    const T* bp = bi + off[2];
    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
      for (int64_t j = 0; j < n; ++j) op[j] = store<O>(f(load(ap[j]), load(bp[j])));
    } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {  // row-broadcast scalar on the right
      auto bv = load(bp[0]);
      for (int64_t j = 0; j < n; ++j) op[j] = store<O>(f(load(ap[j]), bv));
    } else {
      for (int64_t j = 0; j < n; ++j) op[j * st[0]] = store<O>(f(load(ap[j * st[1]]), load(bp[j * st[2]])));
    }
  });
}

[[noreturn]] void unsupported(const char* what, DType t) {
  throw std::invalid_argument(std::string(what) + ": unsupported dtype " + std::string(dtype_name(t)));
}

}  // namespace

void copy(const View& src, const View& dst) {
  dispatch_all(src.dtype, "copy", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using S = scalar_t;
    dispatch_all(dst.dtype, "copy", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
      using D = scalar_t;
      map1<S, D>(src, dst, [](auto v) { return v; });
    });
  });
}

void fill(const View& dst, double value) {
  dispatch_all(dst.dtype, "fill", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using T = scalar_t;
    const T v = store<T>(acc_t<T>(value));
    auto g = coalesce<1>(dst.ndim, dst.shape, {dst.strides});
    T* d = dst.ptr<T>();
    for_each_row(g, [&](const std::array<int64_t, 1>& off, int64_t n, const std::array<int64_t, 1>& st) {
      for (int64_t j = 0; j < n; ++j) d[off[0] + j * st[0]] = v;
    });
  });
}

void unary(Unary op, const View& x, const View& out, double a, double b) {
  if (op == Unary::logical_not) {
    dispatch_all(x.dtype, "logical_not", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type; map1<scalar_t, bool>(x, out, [](auto v) { return v == 0; }); });
    return;
  }
  dispatch_float(x.dtype, "unary", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using T = scalar_t;
    using A = acc_t<T>;
    const A pa = A(a), pb = A(b);
    switch (op) {
      case Unary::neg: return map1<T, T>(x, out, [](A v) { return -v; });
      case Unary::exp: return map1<T, T>(x, out, [](A v) { return vec::exp_of(v); });
      case Unary::log: return map1<T, T>(x, out, [](A v) { return std::log(v); });
      case Unary::sqrt: return map1<T, T>(x, out, [](A v) { return std::sqrt(v); });
      case Unary::rsqrt: return map1<T, T>(x, out, [](A v) { return A(1) / std::sqrt(v); });
      case Unary::pow:
        if (pa == A(2)) return map1<T, T>(x, out, [](A v) { return v * v; });
        return map1<T, T>(x, out, [pa](A v) { return std::pow(v, pa); });
      case Unary::tanh: return map1<T, T>(x, out, [](A v) { return std::tanh(v); });
      case Unary::sigmoid: return map1<T, T>(x, out, [](A v) { return f::sigmoid<CpuMath>(v); });
      case Unary::relu: return map1<T, T>(x, out, [](A v) { return v > A(0) ? v : A(0); });
      case Unary::gelu_erf: return map1<T, T>(x, out, [](A v) { return f::gelu_erf<CpuMath>(v); });
      case Unary::gelu_tanh: return map1<T, T>(x, out, [](A v) { return f::gelu_tanh<CpuMath>(v); });
      case Unary::quick_gelu: return map1<T, T>(x, out, [](A v) { return f::quick_gelu<CpuMath>(v); });
      case Unary::clamp:  // NaN stays NaN
        return map1<T, T>(x, out, [pa, pb](A v) { return v < pa ? pa : (v > pb ? pb : v); });
      case Unary::add_scalar: return map1<T, T>(x, out, [pa](A v) { return v + pa; });
      case Unary::mul_scalar: return map1<T, T>(x, out, [pa](A v) { return v * pa; });
      case Unary::rsub_scalar: return map1<T, T>(x, out, [pa](A v) { return pa - v; });
      case Unary::rdiv_scalar: return map1<T, T>(x, out, [pa](A v) { return pa / v; });
      case Unary::logical_not: break;
    }
    unsupported("unary", x.dtype);
  });
}

void binary(Binary op, const View& a, const View& b, const View& out) {
  dispatch_all(a.dtype, "binary", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using T = scalar_t;
    using A = acc_t<T>;
    switch (op) {
      case Binary::add: return map2<T, T>(a, b, out, [](A x, A y) { return x + y; });
      case Binary::sub: return map2<T, T>(a, b, out, [](A x, A y) { return x - y; });
      case Binary::mul: return map2<T, T>(a, b, out, [](A x, A y) { return x * y; });
      case Binary::div:
        if constexpr (floating_v<T>) return map2<T, T>(a, b, out, [](A x, A y) { return x / y; });
        break;
      case Binary::eq: return map2<T, bool>(a, b, out, [](A x, A y) { return x == y; });
      case Binary::ne: return map2<T, bool>(a, b, out, [](A x, A y) { return x != y; });
      case Binary::lt: return map2<T, bool>(a, b, out, [](A x, A y) { return x < y; });
      case Binary::le: return map2<T, bool>(a, b, out, [](A x, A y) { return x <= y; });
      case Binary::gt: return map2<T, bool>(a, b, out, [](A x, A y) { return x > y; });
      case Binary::ge: return map2<T, bool>(a, b, out, [](A x, A y) { return x >= y; });
      case Binary::gelu_erf_backward:
        if constexpr (floating_v<T>) return map2<T, T>(a, b, out, [](A g, A x) { return g * f::gelu_erf_grad<CpuMath>(x); });
        break;
      case Binary::gelu_tanh_backward:
        if constexpr (floating_v<T>) return map2<T, T>(a, b, out, [](A g, A x) { return g * f::gelu_tanh_grad<CpuMath>(x); });
        break;
      case Binary::quick_gelu_backward:
        if constexpr (floating_v<T>) return map2<T, T>(a, b, out, [](A g, A x) { return g * f::quick_gelu_grad<CpuMath>(x); });
        break;
      case Binary::step_backward:
        return map2<T, T>(a, b, out, [](A g, A x) { return x > A(0) ? g : A(0); });
    }
    unsupported("binary", a.dtype);
  });
}

void where(const View& cond, const View& a, const View& b, const View& out) {
  dispatch_all(a.dtype, "where", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using T = scalar_t;
    auto g = coalesce<4>(out.ndim, out.shape, {out.strides, cond.strides, a.strides, b.strides});
    T* o = out.ptr<T>();
    const bool* c = cond.ptr<bool>();
    const T* ap = a.ptr<T>();
    const T* bp = b.ptr<T>();
    for_each_row(g, [&](const std::array<int64_t, 4>& off, int64_t n, const std::array<int64_t, 4>& st) {
      for (int64_t j = 0; j < n; ++j)
        o[off[0] + j * st[0]] = c[off[1] + j * st[1]] ? ap[off[2] + j * st[2]] : bp[off[3] + j * st[3]];
    });
  });
}

LOOM_KERNELS_ELEMENTWISE(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cpu
