// Reductions over any set of dims, with any input strides. Sums accumulate in f64.
#define LOOM_DEFINING_REDUCE  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/loops.h"

namespace loom::kernels::cpu {
namespace {

template <class T> using sum_acc_t = double;

// Per-op accumulation: init, add one element, finish.
template <Reduce op, class T> struct Reducer;
template <class T> struct Reducer<Reduce::sum, T> {
  using S = sum_acc_t<T>;
  static S init() { return 0; }
  static S add(S s, acc_t<T> v) { return s + S(v); }
  static S combine(S a, S b) { return a + b; }
};
template <class T> struct Reducer<Reduce::amax, T> {
  using S = acc_t<T>;
  static S init() { return -std::numeric_limits<S>::infinity(); }
  static S add(S s, S v) { return (v > s || std::isnan(v)) ? v : s; }
  static S combine(S a, S b) { return add(a, b); }
};

// Reduced dims of x, coalesced, as an odometer over element offsets.
struct InnerDims {
  int n = 0;
  int64_t shape[kMaxDims], strides[kMaxDims];
  int64_t count = 1;
};

InnerDims inner_dims(const View& x, uint32_t mask) {
  InnerDims in;
  for (int d = 0; d < x.ndim; ++d) {
    if (!(mask >> d & 1u) || x.shape[d] == 1) continue;
    if (in.n > 0 && in.strides[in.n - 1] == x.strides[d] * x.shape[d]) {
      in.shape[in.n - 1] *= x.shape[d];
      in.strides[in.n - 1] = x.strides[d];
    } else {
      in.shape[in.n] = x.shape[d]; in.strides[in.n] = x.strides[d]; ++in.n;
    }
    in.count *= x.shape[d];
  }
  return in;
}

// Visits every element offset of the reduced dims starting at `base`.
template <class Fn> inline void visit_inner(const InnerDims& in, int64_t base, Fn fn) {
  if (in.n == 0) { fn(base); return; }
  const int last = in.n - 1;
  const int64_t n = in.shape[last], s = in.strides[last];
  int64_t idx[kMaxDims] = {};
  int64_t outer = in.count / n;
  for (int64_t r = 0; r < outer; ++r) {
    int64_t off = base;
    for (int d = 0; d < last; ++d) off += idx[d] * in.strides[d];
    for (int64_t j = 0; j < n; ++j) fn(off + j * s);
    for (int d = last - 1; d >= 0; --d) { if (++idx[d] < in.shape[d]) break; idx[d] = 0; }
  }
}

// Offset in x of the first element reduced into output element `o` (out is keepdim, contiguous).
inline int64_t outer_offset(const View& x, uint32_t mask, int64_t o) {
  int64_t off = 0;
  for (int d = x.ndim - 1; d >= 0; --d) {
    if (mask >> d & 1u) continue;
    off += (o % x.shape[d]) * x.strides[d];
    o /= x.shape[d];
  }
  return off;
}

template <Reduce op, class T>
void reduce_typed(const View& x, uint32_t mask, const View& out) {
  using R = Reducer<op, T>;
  const T* xp = x.ptr<T>();
  T* op_ = out.ptr<T>();
  const int64_t nout = out.numel();
  InnerDims in = inner_dims(x, mask);

  // Contiguous x reduced over leading dims only (bias gradients): blocks of 1024 rows x 256 columns
  // accumulated in parallel, then each column's block sums added in row order. The blocks are
  // fixed, so the result is the same for any thread count; and narrow layers (128-768 columns,
  // 1-3 column blocks) still use every thread.
  int lead = 0;
  while (lead < x.ndim && (mask >> lead & 1u)) ++lead;
  bool leading_only = lead > 0 && (mask >> lead) == 0 && x.contiguous() && nout > 1;
  if (leading_only) {
    using S = typename R::S;
    const int64_t rows = in.count, cols = nout;
    constexpr int64_t block = 256, row_block = 1024;
    const int64_t nblocks = (cols + block - 1) / block, nrow_blocks = (rows + row_block - 1) / row_block;
    std::vector<S> part(size_t(nrow_blocks * cols));
#pragma omp parallel for collapse(2) schedule(static) if (rows * cols >= kParallelGrain)
    for (int64_t rb = 0; rb < nrow_blocks; ++rb) {
      for (int64_t b = 0; b < nblocks; ++b) {
        const int64_t c0 = b * block, c1 = c0 + block < cols ? c0 + block : cols;
        const int64_t r0 = rb * row_block, r1 = std::min(rows, r0 + row_block);
        S* a = part.data() + rb * cols;
        for (int64_t c = c0; c < c1; ++c) a[c] = R::init();
        for (int64_t r = r0; r < r1; ++r) {
          const T* row = xp + r * cols;
          for (int64_t c = c0; c < c1; ++c) a[c] = R::add(a[c], load(row[c]));
        }
      }
    }
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelGrain)
    for (int64_t c = 0; c < cols; ++c) {
      S a = part[size_t(c)];
      for (int64_t rb = 1; rb < nrow_blocks; ++rb) a = R::combine(a, part[size_t(rb * cols + c)]);
      op_[c] = store<T>(acc_t<T>(a));
    }
    return;
  }

  if (nout == 1 && in.n == 1 && in.count >= kParallelGrain) {
    // One long reduction: fixed-size chunks summed in order, so the result is the same for any thread count.
    const int64_t chunk = 8192, nchunks = (in.count + chunk - 1) / chunk, s = in.strides[0];
    std::vector<typename R::S> part(nchunks);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < nchunks; ++c) {
      typename R::S a = R::init();
      const int64_t hi = std::min(in.count, (c + 1) * chunk);
      for (int64_t j = c * chunk; j < hi; ++j) a = R::add(a, load(xp[j * s]));
      part[c] = a;
    }
    typename R::S total = R::init();
    for (auto p : part) total = R::combine(total, p);
    op_[0] = store<T>(acc_t<T>(total));
    return;
  }

#pragma omp parallel for schedule(static) if (nout * in.count >= kParallelGrain && nout > 1)
  for (int64_t o = 0; o < nout; ++o) {
    typename R::S s = R::init();
    visit_inner(in, outer_offset(x, mask, o), [&](int64_t i) { s = R::add(s, load(xp[i])); });
    op_[o] = store<T>(acc_t<T>(s));
  }
}

template <class T>
void logsumexp_typed(const View& x, uint32_t mask, const View& out) {
  using A = acc_t<T>;
  const T* xp = x.ptr<T>();
  T* op_ = out.ptr<T>();
  InnerDims in = inner_dims(x, mask);
  const int64_t nout = out.numel();
#pragma omp parallel for schedule(static) if (nout * in.count >= kParallelGrain && nout > 1)
  for (int64_t o = 0; o < nout; ++o) {
    const int64_t base = outer_offset(x, mask, o);
    A m = -std::numeric_limits<A>::infinity();
    visit_inner(in, base, [&](int64_t i) { A v = load(xp[i]); if (v > m || std::isnan(v)) m = v; });
    A r;
    if (std::isinf(m) || std::isnan(m)) r = m;
    else {
      double s = 0;
      visit_inner(in, base, [&](int64_t i) { s += std::exp(double(load(xp[i]) - m)); });
      r = m + A(std::log(s));
    }
    op_[o] = store<T>(r);
  }
}

}  // namespace

void reduce(Reduce op, const View& x, uint32_t mask, const View& out) {
  dispatch_float(x.dtype, "reduce", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    switch (op) {
      case Reduce::sum: return reduce_typed<Reduce::sum, scalar_t>(x, mask, out);
      case Reduce::amax: return reduce_typed<Reduce::amax, scalar_t>(x, mask, out);
      case Reduce::logsumexp: return logsumexp_typed<scalar_t>(x, mask, out);
    }
  });
}

void argmax(const View& x, int dim, const View& out) {
  dispatch_float(x.dtype, "argmax", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using T = scalar_t;
    using A = acc_t<T>;
    const T* xp = x.ptr<T>();
    int64_t* o = out.ptr<int64_t>();
    const uint32_t mask = 1u << dim;
    const int64_t nout = out.numel(), n = x.shape[dim], s = x.strides[dim];
#pragma omp parallel for schedule(static) if (nout * n >= kParallelGrain)
    for (int64_t i = 0; i < nout; ++i) {
      const T* p = xp + outer_offset(x, mask, i);
      int64_t best = 0;
      A bv = load(p[0]);
      for (int64_t j = 1; j < n && !std::isnan(bv); ++j) {
        A v = load(p[j * s]);
        if (v > bv || std::isnan(v)) { bv = v; best = j; }
      }
      o[i] = best;
    }
  });
}

LOOM_KERNELS_REDUCE(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cpu
