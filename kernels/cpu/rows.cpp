// Row kernels over contiguous [rows, n]: softmax, layer norm, cross-entropy. One row per iteration,
// rows in parallel; statistics in the compute type (f32, or f64 for f64 tensors).
#define LOOM_DEFINING_ROWS  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/vec_math.h"
#include <type_traits>

namespace loom::kernels::cpu {
namespace {

inline int64_t rows_of(const View& v) {
  if (v.ndim == 0) return 1;
  const int64_t n = v.shape[v.ndim - 1];
  return n == 0 ? 0 : v.numel() / n;  // a [N, 0] tensor has no rows to visit
}
inline int64_t cols_of(const View& v) { return v.ndim == 0 ? 1 : v.shape[v.ndim - 1]; }

template <class T> int64_t target_at(const View& t, int64_t i) {
  return t.dtype == DType::i64 ? t.ptr<int64_t>()[i] : int64_t(t.ptr<int32_t>()[i]);
}

}  // namespace

void softmax(const View& x, const View& y, bool log) {
  dispatch_float(x.dtype, "softmax", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using T = scalar_t;
    using A = acc_t<T>;
    const int64_t rows = rows_of(x), n = cols_of(x);
    const T* xp = x.ptr<T>();
    T* yp = y.ptr<T>();
#pragma omp parallel for schedule(static) if (rows * n >= kParallelGrain)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = xp + r * n;
      T* yr = yp + r * n;
      const A m = vec::max_lanes<A>(n, [&](int64_t j) { return A(load(xr[j])); });
      if (m == -std::numeric_limits<A>::infinity()) {  // every entry masked: no mass anywhere
        for (int64_t j = 0; j < n; ++j) yr[j] = store<T>(log ? m : A(0));
        continue;
      }
      A s = 0;
      if constexpr (std::is_same_v<T, A>) {
        // exp into y first (a loop the compiler vectorises), then the sum.
        for (int64_t j = 0; j < n; ++j) yr[j] = vec::exp_of(xr[j] - m);
        s = vec::sum_lanes<A>(n, [&](int64_t j) { return yr[j]; });
      } else {
        s = vec::sum_lanes<A>(n, [&](int64_t j) { return vec::exp_of(load(xr[j]) - m); });
      }
      if (log) {
        const A lse = m + std::log(s);
        for (int64_t j = 0; j < n; ++j) yr[j] = store<T>(load(xr[j]) - lse);
      } else {
        const A inv = A(1) / s;
        if constexpr (std::is_same_v<T, A>) {
          for (int64_t j = 0; j < n; ++j) yr[j] *= inv;
        } else {
          for (int64_t j = 0; j < n; ++j) yr[j] = store<T>(vec::exp_of(load(xr[j]) - m) * inv);
        }
      }
    }
  });
}

void softmax_backward(const View& y, const View& dy, const View& dx, bool log) {
  dispatch_float(y.dtype, "softmax_backward", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using T = scalar_t;
    using A = acc_t<T>;
    const int64_t rows = rows_of(y), n = cols_of(y);
    const T *yp = y.ptr<T>(), *gp = dy.ptr<T>();
    T* dp = dx.ptr<T>();
#pragma omp parallel for schedule(static) if (rows * n >= kParallelGrain)
    for (int64_t r = 0; r < rows; ++r) {
      const T *yr = yp + r * n, *gr = gp + r * n;
      T* dr = dp + r * n;
      if (log) {
        const A s = vec::sum_lanes<A>(n, [&](int64_t j) { return A(load(gr[j])); });
        for (int64_t j = 0; j < n; ++j) {
          A yv = load(yr[j]);  // -inf (fully masked row) contributes nothing
          dr[j] = store<T>(load(gr[j]) - (std::isinf(yv) ? A(0) : std::exp(yv)) * s);
        }
      } else {
        const A s = vec::sum_lanes<A>(n, [&](int64_t j) { return A(load(gr[j])) * load(yr[j]); });
        for (int64_t j = 0; j < n; ++j) dr[j] = store<T>(load(yr[j]) * (load(gr[j]) - s));
      }
    }
  });
}

void layer_norm_forward(const View& x, const View& weight, const View& bias, double eps, const View& y,
                        const View& mean, const View& rstd) {
  dispatch_float(x.dtype, "layer_norm", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using T = scalar_t;
    using A = acc_t<T>;
    const int64_t rows = rows_of(x), n = cols_of(x);
    const T *xp = x.ptr<T>(), *w = weight.ptr<T>(), *b = bias.ptr<T>();
    T* yp = y.ptr<T>();
    A *mp = mean.ptr<A>(), *rp = rstd.ptr<A>();
#pragma omp parallel for schedule(static) if (rows * n >= kParallelGrain)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = xp + r * n;
      T* yr = yp + r * n;
      const A m = vec::sum_lanes<A>(n, [&](int64_t j) { return A(load(xr[j])); }) / A(n);
      // two-pass variance: no cancellation
      const A v = vec::sum_lanes<A>(n, [&](int64_t j) { const A d = load(xr[j]) - m; return d * d; });
      const A rs = A(1) / std::sqrt(v / A(n) + A(eps));
      mp[r] = m; rp[r] = rs;
      for (int64_t j = 0; j < n; ++j) {
        A h = (load(xr[j]) - m) * rs;
        if (w) h *= load(w[j]);
        if (b) h += load(b[j]);
        yr[j] = store<T>(h);
      }
    }
  });
}

void layer_norm_backward(const View& dy, const View& x, const View& weight, const View& mean, const View& rstd,
                         const View& dx, const View& dweight, const View& dbias) {
  dispatch_float(x.dtype, "layer_norm_backward", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using T = scalar_t;
    using A = acc_t<T>;
    const int64_t rows = rows_of(x), n = cols_of(x);
    const T *xp = x.ptr<T>(), *gp = dy.ptr<T>(), *w = weight.ptr<T>();
    const A *mp = mean.ptr<A>(), *rp = rstd.ptr<A>();
    T* dp = dx.ptr<T>();
    const bool want_w = dweight.data != nullptr, want_b = dbias.data != nullptr;
    // Partial dweight/dbias per fixed block of rows, summed in block order afterwards.
    const int64_t block = 32, nblocks = (rows + block - 1) / block;
    std::vector<A> pw(want_w ? size_t(nblocks * n) : 0), pb(want_b ? size_t(nblocks * n) : 0);
#pragma omp parallel for schedule(static) if (rows * n >= kParallelGrain)
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      A* bw = want_w ? pw.data() + blk * n : nullptr;
      A* bb = want_b ? pb.data() + blk * n : nullptr;
      const int64_t r1 = std::min(rows, (blk + 1) * block);
      for (int64_t r = blk * block; r < r1; ++r) {
        const T *xr = xp + r * n, *gr = gp + r * n;
        T* dr = dp + r * n;
        const A m = mp[r], rs = rp[r];
        if (bw) for (int64_t j = 0; j < n; ++j) bw[j] += load(gr[j]) * ((load(xr[j]) - m) * rs);
        if (bb) for (int64_t j = 0; j < n; ++j) bb[j] += load(gr[j]);
        // means of g·w and of g·w·x̂
        auto gw_at = [&](int64_t j) { return w ? A(load(gr[j])) * load(w[j]) : A(load(gr[j])); };
        const A sg = vec::sum_lanes<A>(n, gw_at) / A(n);
        const A sgx = vec::sum_lanes<A>(n, [&](int64_t j) { return gw_at(j) * ((load(xr[j]) - m) * rs); }) / A(n);
        for (int64_t j = 0; j < n; ++j) {
          A xh = (load(xr[j]) - m) * rs, g = load(gr[j]);
          A gw = w ? g * load(w[j]) : g;
          dr[j] = store<T>(rs * (gw - sg - xh * sgx));
        }
      }
    }
    for (int k = 0; k < 2; ++k) {
      const std::vector<A>& part = k == 0 ? pw : pb;
      const View& outv = k == 0 ? dweight : dbias;
      if (!outv.data) continue;
      T* o = outv.ptr<T>();
      for (int64_t j = 0; j < n; ++j) {
        A s = 0;
        for (int64_t blk = 0; blk < nblocks; ++blk) s += part[size_t(blk * n + j)];
        o[j] = store<T>(s);
      }
    }
  });
}

void cross_entropy_forward(const View& logits, const View& targets, int64_t ignore_index, double smoothing,
                           const View& loss, const View& lse) {
  dispatch_float(logits.dtype, "cross_entropy", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using T = scalar_t;
    using A = acc_t<T>;
    const int64_t rows = rows_of(logits), n = cols_of(logits);
    const T* xp = logits.ptr<T>();
    A *lp = loss.ptr<A>(), *sp = lse.ptr<A>();
    const A eps = A(smoothing);
#pragma omp parallel for schedule(static) if (rows * n >= kParallelGrain)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = xp + r * n;
      const A m = vec::max_lanes<A>(n, [&](int64_t j) { return A(load(xr[j])); });
      const A mean_x = vec::sum_lanes<A>(n, [&](int64_t j) { return A(load(xr[j])); }) / A(n);
      const A s = vec::sum_lanes<A>(n, [&](int64_t j) { return vec::exp_of(load(xr[j]) - m); });
      const A l = m + std::log(s);
      sp[r] = l;
      const int64_t t = target_at<T>(targets, r);
      if (t == ignore_index) { lp[r] = 0; continue; }
      lp[r] = (A(1) - eps) * (l - load(xr[t])) + eps * (l - mean_x);
    }
  });
}

void cross_entropy_backward(const View& logits, const View& targets, const View& lse, int64_t ignore_index,
                            double smoothing, double scale, const View& dlogits) {
  dispatch_float(logits.dtype, "cross_entropy_backward", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using T = scalar_t;
    using A = acc_t<T>;
    const int64_t rows = rows_of(logits), n = cols_of(logits);
    const T* xp = logits.ptr<T>();
    const A* sp = lse.ptr<A>();
    T* dp = dlogits.ptr<T>();
    const A eps = A(smoothing), sc = A(scale), uniform = eps / A(n);
#pragma omp parallel for schedule(static) if (rows * n >= kParallelGrain)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = xp + r * n;
      T* dr = dp + r * n;
      const int64_t t = target_at<T>(targets, r);
      if (t == ignore_index) { for (int64_t j = 0; j < n; ++j) dr[j] = store<T>(A(0)); continue; }
      for (int64_t j = 0; j < n; ++j) {
        A p = vec::exp_of(load(xr[j]) - sp[r]);
        dr[j] = store<T>(sc * (p - uniform - (j == t ? A(1) - eps : A(0))));
      }
    }
  });
}

LOOM_KERNELS_ROWS(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cpu
