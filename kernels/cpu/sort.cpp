// Stable argsort along the last dim of contiguous [rows, n]; NaN sorts as the largest value.
#define LOOM_DEFINING_SORT  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include <algorithm>
#include <cmath>
#include <numeric>
#include <type_traits>
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/loops.h"

namespace loom::kernels::cpu {

void argsort(const View& x, bool descending, const View& out) {
  dispatch_all(x.dtype, "argsort", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using T = scalar_t;
    const int64_t n = x.ndim ? x.shape[x.ndim - 1] : 1, rows = n ? x.numel() / n : 0;
    const T* xp = x.ptr<T>();
    int64_t* op = out.ptr<int64_t>();
#pragma omp parallel for schedule(static) if (rows * n >= kParallelGrain)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = xp + r * n;
      int64_t* o = op + r * n;
      std::iota(o, o + n, int64_t(0));
      auto less = [&](int64_t a, int64_t b) {
        auto va = load(xr[a]), vb = load(xr[b]);
        if constexpr (std::is_floating_point_v<decltype(va)>) {
          if (std::isnan(va) || std::isnan(vb)) return !std::isnan(va) && std::isnan(vb);
        }
        return va < vb;
      };
      if (descending) std::stable_sort(o, o + n, [&](int64_t a, int64_t b) { return less(b, a); });
      else std::stable_sort(o, o + n, less);
    }
  });
}

LOOM_KERNELS_SORT(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cpu
