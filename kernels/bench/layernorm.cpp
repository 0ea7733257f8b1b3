// loom-bench layernorm: forward and backward, the forward checked on sampled rows.
#include "kernels/bench/harness.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace loom::bench {

// Layer norm: forward and backward; the forward checked on sampled rows.

void bench_layernorm(const Args& a) {
  const int64_t rows = a.get("rows", 8256), cols = a.get("cols", 768), n = rows * cols;
  const size_t N = static_cast<size_t>(n), R = static_cast<size_t>(rows), C = static_cast<size_t>(cols);
  std::vector<float> x = random_floats(N, 8, -2.f, 3.f), w = random_floats(C, 9), b = random_floats(C, 10),
                     dy = random_floats(N, 12), y(N), mean(R), rstd(R), dx(N), dw(C), db(C);
  const double eps = 1e-5;
  auto check = [&](const std::vector<float>& got) {
    std::mt19937 rng(13);
    double worst = 0;
    for (int t = 0; t < 64; ++t) {
      const int64_t r = int64_t(rng() % uint64_t(rows));
      double m = 0, var = 0;
      for (int64_t c = 0; c < cols; ++c) m += x[size_t(r * cols + c)];
      m /= double(cols);
      for (int64_t c = 0; c < cols; ++c) var += (x[size_t(r * cols + c)] - m) * (x[size_t(r * cols + c)] - m);
      const double rs = 1.0 / std::sqrt(var / double(cols) + eps);
      for (int64_t c = 0; c < cols; ++c) {
        const double want = (x[size_t(r * cols + c)] - m) * rs * w[size_t(c)] + b[size_t(c)], g = got[size_t(r * cols + c)];
        worst = std::isfinite(g) ? std::max(worst, std::fabs(g - want)) : INFINITY;
      }
    }
    return worst;
  };
  const std::string name = std::to_string(rows) + "x" + std::to_string(cols);
  const double fwd_bytes = 2.0 * double(n) * 4, bwd_bytes = 3.0 * double(n) * 4;  // x, y; x, dy, dx
  if (a.device == "cpu") {
    auto fwd = [&] {
      cpu::layer_norm_forward(view(x.data(), {rows, cols}), view(w.data(), {cols}), view(b.data(), {cols}), eps,
                              view(y.data(), {rows, cols}), view(mean.data(), {rows}), view(rstd.data(), {rows}));
    };
    auto bwd = [&] {
      cpu::layer_norm_backward(view(dy.data(), {rows, cols}), view(x.data(), {rows, cols}), view(w.data(), {cols}),
                               view(mean.data(), {rows}), view(rstd.data(), {rows}), view(dx.data(), {rows, cols}),
                               view(dw.data(), {cols}), view(db.data(), {cols}));
    };
    poison(y);
    fwd();
    const double err = check(y);
    report(a, "ln_fwd", name, "loom", "cpu", err <= 1e-5, err, time_host(a.reps, fwd), fwd_bytes, "GB/s");
    poison(dx);
    bwd();
    bool finite = std::all_of(dx.begin(), dx.end(), [](float v) { return std::isfinite(v); });
    report(a, "ln_bwd", name, "loom", "cpu", finite, NAN, time_host(a.reps, bwd), bwd_bytes, "GB/s");
  }
#ifdef LOOM_BENCH_CUDA
  else {
    DeviceBuffers d;
    float *dx_ = d.up(x), *dw_ = d.up(w), *db_ = d.up(b), *ddy = d.up(dy), *dy_ = d.up(y), *dmean = d.up(mean),
          *drstd = d.up(rstd), *ddx = d.up(dx), *ddw = d.up(dw), *ddb = d.up(db);
    auto fwd = [&] {
      cu::layer_norm_forward(view(dx_, {rows, cols}), view(dw_, {cols}), view(db_, {cols}), eps, view(dy_, {rows, cols}),
                             view(dmean, {rows}), view(drstd, {rows}));
    };
    auto bwd = [&] {
      cu::layer_norm_backward(view(ddy, {rows, cols}), view(dx_, {rows, cols}), view(dw_, {cols}), view(dmean, {rows}),
                              view(drstd, {rows}), view(ddx, {rows, cols}), view(ddw, {cols}), view(ddb, {cols}));
    };
    cu::memset_async(dy_, 0xff, N * 4);
    fwd();
    cu::memcpy(y.data(), dy_, N * 4, cu::CopyKind::device_to_host);
    const double err = check(y);
    report(a, "ln_fwd", name, "loom", "cuda", err <= 1e-5, err, time_cuda(a.reps, fwd), fwd_bytes, "GB/s");
    cu::memset_async(ddx, 0xff, N * 4);
    bwd();
    cu::memcpy(dx.data(), ddx, N * 4, cu::CopyKind::device_to_host);
    bool finite = std::all_of(dx.begin(), dx.end(), [](float v) { return std::isfinite(v); });
    report(a, "ln_bwd", name, "loom", "cuda", finite, NAN, time_cuda(a.reps, bwd), bwd_bytes, "GB/s");
  }
#endif
}

}  // namespace loom::bench
