// Strided N-d iteration shared by the elementwise kernels. Dims are coalesced where every operand
// is contiguous across them, then the outer "rows" run in parallel and the inner dim in a tight loop.
#pragma once
#include <omp.h>
#include <array>
#include <cstdint>
#include "kernels/common/view.h"

namespace loom::kernels::cpu {

constexpr int64_t kParallelGrain = 1 << 15;  // below this many elements, threads cost more than they give

template <int N>
struct Geometry {
  int ndim = 0;
  int64_t shape[kMaxDims];
  int64_t strides[N][kMaxDims];
};

// Operand strides over a common shape, with size-1 dims dropped and mergeable dims merged.
template <int N>
Geometry<N> coalesce(int ndim, const int64_t* shape, const std::array<const int64_t*, N>& strides) {
  Geometry<N> g;
  for (int d = 0; d < ndim; ++d) {
    if (shape[d] == 1) continue;
    bool merge = g.ndim > 0;
    for (int k = 0; k < N && merge; ++k)
      merge = g.strides[k][g.ndim - 1] == strides[k][d] * shape[d];
    if (merge) {
      g.shape[g.ndim - 1] *= shape[d];
      for (int k = 0; k < N; ++k) g.strides[k][g.ndim - 1] = strides[k][d];
    } else {
      g.shape[g.ndim] = shape[d];
      for (int k = 0; k < N; ++k) g.strides[k][g.ndim] = strides[k][d];
      ++g.ndim;
    }
  }
  if (g.ndim == 0) {  // a scalar: one row of one element
    g.ndim = 1; g.shape[0] = 1;
    for (int k = 0; k < N; ++k) g.strides[k][0] = 0;
  }
  return g;
}

// Splits [0, n) into per-thread chunks when n is large (used for flat contiguous loops).
template <class Fn>
void parallel_range(int64_t n, Fn fn) {
  if (n < kParallelGrain) { fn(int64_t(0), n); return; }
#pragma omp parallel
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t chunk = (n + nt - 1) / nt, lo = t * chunk, hi = lo + chunk < n ? lo + chunk : n;
    if (lo < hi) fn(lo, hi);
  }
}

// Calls row(offsets[N], n, inner_strides[N]) for every row of the coalesced geometry, in parallel
// for large tensors. offsets are element offsets of the row's first element in each operand.
template <int N, class RowFn>
void for_each_row(const Geometry<N>& g, RowFn row) {
  const int inner = g.ndim - 1;
  const int64_t n = g.shape[inner];
  int64_t rows = 1;
  for (int d = 0; d < inner; ++d) rows *= g.shape[d];
  std::array<int64_t, N> inner_strides;
  for (int k = 0; k < N; ++k) inner_strides[k] = g.strides[k][inner];
  auto offsets_of = [&](int64_t r) {
    std::array<int64_t, N> off{};
    for (int d = inner - 1; d >= 0; --d) {
      int64_t i = r % g.shape[d];
      r /= g.shape[d];
      for (int k = 0; k < N; ++k) off[k] += i * g.strides[k][d];
    }
    return off;
  };
  if (rows * n < kParallelGrain) {
    for (int64_t r = 0; r < rows; ++r) row(offsets_of(r), n, inner_strides);
    return;
  }
  if (rows == 1) {  // one long row: split it
    parallel_range(n, [&](int64_t lo, int64_t hi) {
      std::array<int64_t, N> off;
      for (int k = 0; k < N; ++k) off[k] = lo * inner_strides[k];
      row(off, hi - lo, inner_strides);
    });
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) row(offsets_of(r), n, inner_strides);
}

}  // namespace loom::kernels::cpu
