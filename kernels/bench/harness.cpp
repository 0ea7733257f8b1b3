// loom-bench's harness (harness.h).
#include "kernels/bench/harness.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>

namespace loom::bench {
namespace {

int failures = 0;

}  // namespace

Args parse(int argc, char** argv, const std::vector<std::string>& names) {
  if (argc < 2) throw std::invalid_argument("no benchmark named");
  Args a;
  a.what = argv[1];
  if (a.what == "--help" || a.what == "-h") return a;
  if (std::find(names.begin(), names.end(), a.what) == names.end())
    throw std::invalid_argument("unknown benchmark '" + a.what + "'");
  const std::vector<std::string> int_keys = {"m", "n", "k", "b", "h", "s", "d", "rows", "cols", "numel"};
  for (int i = 2; i < argc; ++i) {
    const std::string s = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(s + " needs a value");
      return argv[++i];
    };
    if (s == "--ta") a.ta = true;
    else if (s == "--tb") a.tb = true;
    else if (s == "--causal") a.causal = true;
    else if (s == "--json") a.json = true;
    else if (s == "--device") a.device = value();
    else if (s == "--reps") a.reps = int(std::stol(value()));
    else if (s.rfind("--", 0) == 0 && std::find(int_keys.begin(), int_keys.end(), s.substr(2)) != int_keys.end()) {
      const std::string v = value();
      size_t used = 0;
      const long long n = std::stoll(v, &used);
      if (used != v.size() || n < 1) throw std::invalid_argument(s + " must be a positive integer, got '" + v + "'");
      a.ints[s.substr(2)] = n;
    } else {
      throw std::invalid_argument("unknown option '" + s + "'");
    }
  }
  if (a.device != "cpu" && a.device != "cuda") throw std::invalid_argument("--device must be cpu or cuda, got '" + a.device + "'");
  if (a.reps < 1) throw std::invalid_argument("--reps must be at least 1");
  return a;
}

View view(float* p, std::vector<int64_t> shape, DType dt) {
  View v;
  v.data = p;
  v.dtype = dt;
  v.ndim = int(shape.size());
  int64_t stride = 1;
  for (int i = v.ndim - 1; i >= 0; --i) {
    v.shape[i] = shape[size_t(i)];
    v.strides[i] = stride;
    stride *= shape[size_t(i)];
  }
  return v;
}

std::vector<float> random_floats(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

void poison(std::vector<float>& v) { std::fill(v.begin(), v.end(), std::numeric_limits<float>::quiet_NaN()); }

// Times f over reps runs after 3 warm-up runs, with the host clock (CPU kernels return when done).
Timing time_host(int reps, const std::function<void()>& f) {
  for (int i = 0; i < 3; ++i) f();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front()};
}

#ifdef LOOM_BENCH_CUDA

// Times f on the current stream with CUDA events over reps runs after 3 warm-up runs; with
// flush_bytes, a buffer that large is overwritten before each timed run (L2 is cold, as in training).
Timing time_cuda(int reps, const std::function<void()>& f, size_t flush_bytes) {
  void* flush = flush_bytes ? cu::device_malloc(flush_bytes, 0) : nullptr;
  auto start = cu::event_create(true), stop = cu::event_create(true);
  for (int i = 0; i < 3; ++i) f();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    if (flush) cu::memset_async(flush, i & 0xff, flush_bytes);
    cu::event_record(start, cu::current_stream());
    f();
    cu::event_record(stop, cu::current_stream());
    cu::event_synchronize(stop);
    ms.push_back(cu::event_elapsed_ms(start, stop));
  }
  cu::event_destroy(start);
  cu::event_destroy(stop);
  if (flush) cu::device_free(flush, 0);
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front()};
}


std::vector<uint16_t> to_bf16_bits(std::vector<float>& x) {  // rounds x to bf16 values in place
  std::vector<uint16_t> bits(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const bf16 b(x[i]);
    std::memcpy(&bits[i], &b, 2);
    x[i] = float(b);
  }
  return bits;
}

std::vector<float> from_bf16_device(const void* d, size_t n) {
  std::vector<bf16> h(n);
  cu::memcpy(h.data(), d, n * 2, cu::CopyKind::device_to_host);
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) f[i] = float(h[i]);
  return f;
}

#endif

void report(const Args& a, const std::string& bench, const std::string& shape, const std::string& variant,
            const std::string& device, bool ok, double err, const Timing& t, double work, const char* unit) {
  const double rate_median = work / (t.median_ms * 1e-3) / 1e9, rate_best = work / (t.best_ms * 1e-3) / 1e9;
  if (!ok) ++failures;
  char check[64];
  if (std::isnan(err)) std::snprintf(check, sizeof check, "%s (written, finite)", ok ? "pass" : "FAIL");
  else std::snprintf(check, sizeof check, "%s (max err %.2e)", ok ? "pass" : "FAIL", err);
  if (a.json) {
    char err_json[32];
    if (std::isnan(err)) std::snprintf(err_json, sizeof err_json, "null");
    else if (!std::isfinite(err)) std::snprintf(err_json, sizeof err_json, "\"inf\"");
    else std::snprintf(err_json, sizeof err_json, "%.3g", err);
    std::printf("{\"bench\": \"%s\", \"shape\": \"%s\", \"variant\": \"%s\", \"device\": \"%s\", \"threads\": %d, "
                "\"check\": \"%s\", \"max_err\": %s, \"median_ms\": %.4f, \"best_ms\": %.4f, \"unit\": \"%s\", "
                "\"rate_median\": %.2f, \"rate_best\": %.2f}\n",
                bench.c_str(), shape.c_str(), variant.c_str(), device.c_str(), omp_get_max_threads(), ok ? "pass" : "FAIL",
                err_json, t.median_ms,
                t.best_ms, unit, rate_median, rate_best);
  } else {
    std::printf("%-9s %-22s %-8s %-4s %-27s median %9.3f ms  best %9.3f ms  %7.1f %s (best %.1f)\n", bench.c_str(),
                shape.c_str(), variant.c_str(), device.c_str(), check, t.median_ms, t.best_ms, rate_median, unit, rate_best);
  }
  std::fflush(stdout);
}

int failed_checks() { return failures; }

}  // namespace loom::bench
