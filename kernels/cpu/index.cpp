// Indexing kernels on contiguous tensors viewed as [outer, dim, inner]. Every result is written in a
// fixed order (no atomics), so gradients are deterministic.
#define LOOM_DEFINING_INDEX  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include <algorithm>
#include <stdexcept>
#include <string>
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/loops.h"

namespace loom::kernels::cpu {
namespace {

inline int64_t index_at(const View& v, int64_t i) {
  return v.dtype == DType::i64 ? v.ptr<int64_t>()[i] : int64_t(v.ptr<int32_t>()[i]);
}

struct Split { int64_t outer = 1, size = 1, inner = 1; };
inline Split split_at(const View& v, int dim) {
  Split s;
  for (int d = 0; d < dim; ++d) s.outer *= v.shape[d];
  s.size = v.shape[dim];
  for (int d = dim + 1; d < v.ndim; ++d) s.inner *= v.shape[d];
  return s;
}

}  // namespace

void check_indices(const View& index, int64_t bound, const char* what, int64_t allowed) {
  const int64_t n = index.numel();
  for (int64_t i = 0; i < n; ++i) {
    int64_t v = index_at(index, i);
    if ((v < 0 || v >= bound) && v != allowed)
      throw std::out_of_range(std::string(what) + ": index " + std::to_string(v) + " at position " +
                              std::to_string(i) + " is out of range [0, " + std::to_string(bound) + ")");
  }
}

void gather(const View& x, int dim, const View& index, const View& out) {
  dispatch_all(x.dtype, "gather", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using T = scalar_t;
    const Split xs = split_at(x, dim), is = split_at(index, dim);
    const T* xp = x.ptr<T>();
    T* op = out.ptr<T>();
    const int64_t total = is.outer * is.size * is.inner;
#pragma omp parallel for schedule(static) if (total >= kParallelGrain)
    for (int64_t k = 0; k < total; ++k) {
      const int64_t o = k / (is.size * is.inner), n = k % is.inner;
      op[k] = xp[(o * xs.size + index_at(index, k)) * xs.inner + n];
    }
  });
}

void scatter_add(const View& out, int dim, const View& index, const View& src) {
  dispatch_float(out.dtype, "scatter_add", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using T = scalar_t;
    const Split os = split_at(out, dim), is = split_at(index, dim);
    T* op = out.ptr<T>();
    const T* sp = src.ptr<T>();
    const int64_t columns = is.outer * is.inner;
#pragma omp parallel for schedule(static) if (columns * is.size >= kParallelGrain)
    for (int64_t c = 0; c < columns; ++c) {  // each (outer, inner) column is independent
      const int64_t o = c / is.inner, n = c % is.inner;
      for (int64_t i = 0; i < is.size; ++i) {
        const int64_t k = (o * is.size + i) * is.inner + n;
        T& dst = op[(o * os.size + index_at(index, k)) * os.inner + n];
        dst = store<T>(load(dst) + load(sp[k]));
      }
    }
  });
}

void index_select(const View& x, int dim, const View& index, const View& out) {
  dispatch_all(x.dtype, "index_select", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using T = scalar_t;
    const Split xs = split_at(x, dim);
    const int64_t ni = index.numel();
    const T* xp = x.ptr<T>();
    T* op = out.ptr<T>();
#pragma omp parallel for schedule(static) if (xs.outer * ni * xs.inner >= kParallelGrain)
    for (int64_t r = 0; r < xs.outer * ni; ++r) {
      const int64_t o = r / ni, i = r % ni;
      const T* s = xp + (o * xs.size + index_at(index, i)) * xs.inner;
      T* d = op + r * xs.inner;
      for (int64_t n = 0; n < xs.inner; ++n) d[n] = s[n];
    }
  });
}

void embedding_backward(const View& dy, const View& ids, const View& dweight) {
  dispatch_float(dy.dtype, "embedding_backward", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using T = scalar_t;
    using A = acc_t<T>;
    const int64_t n = ids.numel(), d = dweight.shape[dweight.ndim - 1];
    const T* gp = dy.ptr<T>();
    T* wp = dweight.ptr<T>();
    const int64_t block = 64, nblocks = (d + block - 1) / block;
#pragma omp parallel for schedule(static) if (n * d >= kParallelGrain)
    for (int64_t b = 0; b < nblocks; ++b) {  // threads own column blocks; ids visited in order
      const int64_t c0 = b * block, c1 = std::min(d, c0 + block);
      for (int64_t i = 0; i < n; ++i) {
        T* row = wp + index_at(ids, i) * d;
        const T* g = gp + i * d;
        for (int64_t c = c0; c < c1; ++c) row[c] = store<T>(A(load(row[c]) + load(g[c])));
      }
    }
  });
}

LOOM_KERNELS_INDEX(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cpu
