// loom-bench adamw: one fused step, checked against the update rule on sampled elements.
#include "kernels/bench/harness.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace loom::bench {

// AdamW: one fused step over one tensor; checked against the update rule on sampled elements.

void bench_adamw(const Args& a) {
  const int64_t n = a.get("numel", int64_t(1) << 24);
  const std::vector<float> p0 = random_floats(size_t(n), 14), g = random_floats(size_t(n), 15),
                           m0 = random_floats(size_t(n), 16, -0.1f, 0.1f), v0 = random_floats(size_t(n), 17, 0.f, 0.01f);
  std::vector<float> p = p0, m = m0, v = v0;
  const double b1 = 0.9, b2 = 0.98, eps = 1e-8, lr = 1e-3, wd = 0.05, step = 7;
  const double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
  auto tensor = [&](float* pp, const float* gg, float* mm, float* vv) {
    loom::kernels::AdamWTensor t{};
    t.param = pp;
    t.grad = gg;
    t.exp_avg = mm;
    t.exp_avg_sq = vv;
    t.numel = n;
    t.decay = 1 - lr * wd;
    t.step_size = lr / bc1;
    t.rbc2 = 1 / std::sqrt(bc2);
    return t;
  };
  auto check = [&](const std::vector<float>& got) {
    std::mt19937 rng(19);
    double worst = 0;
    for (int t = 0; t < 256; ++t) {
      const size_t i = rng() % size_t(n);
      const double mm = b1 * m0[i] + (1 - b1) * g[i], vv = b2 * v0[i] + (1 - b2) * double(g[i]) * g[i];
      const double want = p0[i] * (1 - lr * wd) - lr / bc1 * mm / (std::sqrt(vv) / std::sqrt(bc2) + eps);
      worst = std::isfinite(got[i]) ? std::max(worst, std::fabs(got[i] - want)) : INFINITY;
    }
    return worst;
  };
  const std::string name = std::to_string(n);
  const double bytes = 7.0 * double(n) * 4;  // read p, g, m, v; write p, m, v
  if (a.device == "cpu") {
    loom::kernels::AdamWTensor t = tensor(p.data(), g.data(), m.data(), v.data());
    cpu::adamw(DType::f32, &t, 1, b1, b2, eps);
    const double err = check(p);
    // Later runs keep stepping the same buffers: the time is what matters there.
    report(a, "adamw", name, "loom", "cpu", err <= 1e-6, err, time_host(a.reps, [&] { cpu::adamw(DType::f32, &t, 1, b1, b2, eps); }),
           bytes, "GB/s");
  }
#ifdef LOOM_BENCH_CUDA
  else {
    DeviceBuffers d;
    loom::kernels::AdamWTensor t = tensor(d.up(p0), d.up(g), d.up(m0), d.up(v0));
    cu::adamw(DType::f32, &t, 1, b1, b2, eps);
    cu::memcpy(p.data(), t.param, size_t(n) * 4, cu::CopyKind::device_to_host);
    const double err = check(p);
    report(a, "adamw", name, "loom", "cuda", err <= 1e-6, err,
           time_cuda(a.reps, [&] { cu::adamw(DType::f32, &t, 1, b1, b2, eps); }), bytes, "GB/s");
  }
#endif
}

}  // namespace loom::bench
