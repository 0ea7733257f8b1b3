// Random fills and dropout: element i always uses Philox counter (offset + i), whatever the threads.
// f64 uniforms take 53 bits from their own stream; every other dtype and dropout take 24 bits.
#define LOOM_DEFINING_RANDOM  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include <type_traits>
#include "kernels/common/philox.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/loops.h"

namespace loom::kernels::cpu {

void uniform(const View& out, uint64_t seed, uint64_t offset) {
  dispatch_float(out.dtype, "rand", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    scalar_t* p = out.ptr<scalar_t>();
    parallel_range(out.numel(), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        if constexpr (std::is_same_v<scalar_t, double>) p[i] = philox_uniform_f64(seed, offset, uint64_t(i));
        else p[i] = store<scalar_t>(acc_t<scalar_t>(philox_uniform(seed, offset, uint64_t(i))));
      }
    });
  });
}

void normal(const View& out, uint64_t seed, uint64_t offset) {
  dispatch_float(out.dtype, "randn", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    scalar_t* p = out.ptr<scalar_t>();
    parallel_range(out.numel(), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) p[i] = store<scalar_t>(acc_t<scalar_t>(philox_normal(seed, offset, uint64_t(i))));
    });
  });
}

void dropout(const View& x, double p, uint64_t seed, uint64_t offset, const View& y, const View& mask) {
  dispatch_float(x.dtype, "dropout", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
    using T = scalar_t;
    using A = acc_t<T>;
    const T* xp = x.ptr<T>();
    T* yp = y.ptr<T>();
    uint8_t* mp = mask.ptr<uint8_t>();
    const A scale = A(1.0 / (1.0 - p));
    const float pf = float(p);
    parallel_range(x.numel(), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const bool keep = philox_uniform(seed, offset, uint64_t(i)) >= pf;
        yp[i] = store<T>(keep ? load(xp[i]) * scale : A(0));
        if (mp) mp[i] = keep;
      }
    });
  });
}

LOOM_KERNELS_RANDOM(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cpu
