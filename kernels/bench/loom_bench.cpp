// loom-bench: the kernels alone, checked and timed (llm.c dev/cuda style). Each benchmark first
// checks one run of every variant against a double-precision reference on fresh random inputs
// (outputs poisoned with NaN beforehand, so an element a kernel skips fails the check), then times
// it: warm-up runs, then --reps runs, the median reported beside the best, in GFLOP/s (GEMM,
// attention) or GB/s (layer norm, AdamW). On the CPU the variants are the GEMM libraries (oneDNN,
// OpenBLAS) and loom's own kernels; on CUDA, loom's kernels (GEMM through cuBLASLt until the
// hand-written one lands; attention in bf16 by the flash kernels beside the composed path of
// cuBLASLt products and the softmax kernel), timed with CUDA events and an L2 flush before each run.
//
//   loom-bench gemm [--m M --n N --k K] [--ta] [--tb] [--device cpu|cuda] [--reps R] [--json]
//   loom-bench attention [--b B --h H --s S --d D] [--causal] [--device cpu|cuda] [--reps R] [--json]
//   loom-bench layernorm [--rows R --cols C] [--device cpu|cuda] [--reps R] [--json]
//   loom-bench adamw [--numel N] [--device cpu|cuda] [--reps R] [--json]
// Without shapes, gemm and attention run the shapes of the benchmark models (BENCHMARKS.md).
// Exit status: 0 when every check passed, 1 when one failed, 2 on a usage error, 77 when
// --device cuda finds no GPU (CTest's skip code).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/cpu.h"
#ifdef LOOM_BENCH_CUDA
#include "kernels/cuda/cuda.h"
#include "kernels/cuda/gemm_mma.h"
#include "kernels/cuda/gemm_wgmma.h"
#endif

namespace {

using loom::kernels::View;
using loom::kernels::AttentionArgs;
using loom::kernels::DType;
namespace cpu = loom::kernels::cpu;

struct Args {
  std::string what, device = "cpu";
  std::map<std::string, int64_t> ints;
  bool ta = false, tb = false, causal = false, json = false;
  int reps = 20;
  int64_t get(const std::string& k, int64_t dflt) const { auto it = ints.find(k); return it == ints.end() ? dflt : it->second; }
  bool has(const std::string& k) const { return ints.count(k) > 0; }
};

constexpr const char* kUsage =
    "usage: loom-bench gemm|attention|layernorm|adamw [options]\n"
    "  gemm       [--m M --n N --k K] [--ta] [--tb]   C[M,N] = op(A) op(B), f32, row-major\n"
    "  attention  [--b B --h H --s S --d D] [--causal]  attention forward and backward (CPU f32 fused;\n"
    "                                                  CUDA bf16 flash beside composed)\n"
    "  layernorm  [--rows R --cols C]                 forward and backward\n"
    "  adamw      [--numel N]                          one fused step\n"
    "  common: --device cpu|cuda (default cpu), --reps R (default 20), --json (one JSON object per line)\n"
    "Without shapes, gemm and attention run the benchmark models' shapes. Exit 1 when a check fails,\n"
    "77 when --device cuda finds no GPU.\n";

Args parse(int argc, char** argv) {
  if (argc < 2) throw std::invalid_argument("no benchmark named");
  Args a;
  a.what = argv[1];
  if (a.what == "--help" || a.what == "-h") return a;
  if (a.what != "gemm" && a.what != "attention" && a.what != "layernorm" && a.what != "adamw")
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

View view(float* p, std::vector<int64_t> shape, DType dt = DType::f32) {
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

std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

void poison(std::vector<float>& v) { std::fill(v.begin(), v.end(), std::numeric_limits<float>::quiet_NaN()); }

struct Timing {
  double median_ms = 0, best_ms = 0;
};

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
namespace cu = loom::kernels::cuda;

// Times f on the current stream with CUDA events over reps runs after 3 warm-up runs; with
// flush_bytes, a buffer that large is overwritten before each timed run (L2 is cold, as in training).
Timing time_cuda(int reps, const std::function<void()>& f, size_t flush_bytes = 0) {
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

// Device copies of host vectors, freed together.
struct DeviceBuffers {
  std::vector<void*> held;
  void* up_bytes(const void* h, size_t bytes) {
    void* p = cu::device_malloc(bytes, 0);
    held.push_back(p);
    cu::memcpy(p, h, bytes, cu::CopyKind::host_to_device);
    return p;
  }
  float* up(const std::vector<float>& h) {
    void* p = cu::device_malloc(h.size() * 4, 0);
    held.push_back(p);
    cu::memcpy(p, h.data(), h.size() * 4, cu::CopyKind::host_to_device);
    return static_cast<float*>(p);
  }
  ~DeviceBuffers() { for (void* p : held) cu::device_free(p, 0); }
};

using loom::kernels::bf16;

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

int failures = 0;

// One result line: human-readable, or JSON. err is the check's largest error (relative for GEMM,
// absolute elsewhere), or NaN where the check is only that every output was written and finite.
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

// ---------------------------------------------------------------------------------------------
// GEMM

struct GemmShape {
  int64_t m, n, k;
  bool ta, tb;
};

std::string gemm_shape_name(const GemmShape& s) {
  return std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k) + " " + (s.ta ? "T" : "N") +
         (s.tb ? "T" : "N");
}

// The largest error of C at 257 sampled entries (and the corners) against a double-precision
// product, relative to sum_k |a_ik b_kj| (the scale rounding errors grow with); NaN counts as failure.
double gemm_error(const GemmShape& s, const std::vector<float>& A, const std::vector<float>& B, const std::vector<float>& C) {
  const int64_t lda = s.ta ? s.m : s.k, ldb = s.tb ? s.k : s.n;
  auto a = [&](int64_t i, int64_t p) { return double(s.ta ? A[size_t(p * lda + i)] : A[size_t(i * lda + p)]); };
  auto b = [&](int64_t p, int64_t j) { return double(s.tb ? B[size_t(j * ldb + p)] : B[size_t(p * ldb + j)]); };
  std::mt19937 rng(7);
  std::vector<std::pair<int64_t, int64_t>> at = {{0, 0}, {s.m - 1, s.n - 1}, {0, s.n - 1}, {s.m - 1, 0}};
  for (int i = 0; i < 257; ++i) at.push_back({int64_t(rng() % uint64_t(s.m)), int64_t(rng() % uint64_t(s.n))});
  double worst = 0;
  for (auto [i, j] : at) {
    double want = 0, scale = 0;
    for (int64_t p = 0; p < s.k; ++p) { want += a(i, p) * b(p, j); scale += std::fabs(a(i, p) * b(p, j)); }
    const double got = C[size_t(i * s.n + j)];
    if (!std::isfinite(got)) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, std::fabs(got - want) / std::max(scale, 1e-30));
  }
  return worst;
}

void bench_gemm(const Args& a) {
  std::vector<GemmShape> shapes;
  if (a.has("m") || a.has("n") || a.has("k")) {
    shapes.push_back({a.get("m", 1024), a.get("n", 1024), a.get("k", 1024), a.ta, a.tb});
  } else if (a.device == "cuda") {  // ViT-B/16 training at batch 256 (197 tokens): qkv, proj, fc1, fc2 and backward
    const int64_t t = 256 * 197;
    shapes = {{t, 2304, 768, false, true}, {t, 768, 768, false, true}, {t, 3072, 768, false, true},
              {t, 768, 3072, false, true}, {t, 768, 3072, false, false}, {3072, 768, t, true, false}};
  } else {  // the CPU benchmark models: CLIP demo (6400 tokens, width 128) and CLAP-AST (8256 tokens, width 192)
    shapes = {{6400, 384, 128, false, true}, {6400, 512, 128, false, true}, {6400, 128, 512, false, true},
              {6400, 128, 512, false, false}, {512, 128, 6400, true, false}, {8256, 576, 192, false, true},
              {8256, 768, 192, false, true}, {8256, 192, 768, false, true}, {8256, 192, 768, false, false},
              {768, 192, 8256, true, false}};
  }
  // f32 products of K terms: a few ulps times sqrt(K) is typical; K ulps bounds any summation order.
  for (const GemmShape& s : shapes) {
    const std::vector<float> A = random_floats(size_t(s.m * s.k), 1), B = random_floats(size_t(s.k * s.n), 2);
    std::vector<float> C(size_t(s.m * s.n));
    const int64_t lda = s.ta ? s.m : s.k, ldb = s.tb ? s.k : s.n;
    const double flops = 2.0 * double(s.m) * double(s.n) * double(s.k), tol = double(s.k) * 6e-8 + 1e-6;
    if (a.device == "cpu") {
      for (auto lib : {cpu::SgemmLibrary::onednn, cpu::SgemmLibrary::openblas}) {
        if (!cpu::sgemm_library_built(lib)) continue;
        auto run = [&] { cpu::sgemm_with(lib, s.ta, s.tb, s.m, s.n, s.k, 1.f, A.data(), lda, B.data(), ldb, 0.f, C.data(), s.n); };
        poison(C);
        run();
        const double err = gemm_error(s, A, B, C);
        report(a, "gemm", gemm_shape_name(s), lib == cpu::SgemmLibrary::onednn ? "onednn" : "openblas", "cpu",
               err <= tol, err, time_host(a.reps, run), flops, "GFLOP/s");
      }
    }
#ifdef LOOM_BENCH_CUDA
    else {
      DeviceBuffers d;
      float *dA = d.up(A), *dB = d.up(B), *dC = d.up(C);
      auto run = [&] { cu::gemm(DType::f32, s.m, s.n, s.k, 1.0, {dA, s.ta, lda}, {dB, s.tb, ldb}, 0.0, dC, s.n); };
      cu::memset_async(dC, 0xff, C.size() * 4);  // NaN
      run();
      cu::memcpy(C.data(), dC, C.size() * 4, cu::CopyKind::device_to_host);
      // cuBLASLt may use TF32 for f32 (10-bit mantissa): the tolerance allows it.
      const double err = gemm_error(s, A, B, C);
      report(a, "gemm", gemm_shape_name(s), "cublaslt", "cuda", err <= std::max(tol, 2e-3), err,
             time_cuda(a.reps, run, size_t(256) << 20), flops, "GFLOP/s");  // 256 MB > any L2 (H100 50, H200 60)
      // bf16 (what training runs): cuBLASLt beside the hand-written kernel, on the same rounded inputs.
      std::vector<float> Ar = A, Br = B;
      const auto Ab = to_bf16_bits(Ar), Bb = to_bf16_bits(Br);
      const std::vector<uint16_t> c_init(C.size(), 0);
      void *hA = d.up_bytes(Ab.data(), Ab.size() * 2), *hB = d.up_bytes(Bb.data(), Bb.size() * 2),
           *hC = d.up_bytes(c_init.data(), C.size() * 2);
      // cuBLASLt (the default of cu::gemm), the mma.sync kernel, the Hopper wgmma kernel.
      for (const char* variant : {"cublaslt", "loom_mma", "loom_wgmma"}) {
        const std::string v = variant;
        cu::GemmEpilogue e;
        const loom::kernels::GemmOperand opA{hA, s.ta, lda}, opB{hB, s.tb, ldb};
        const bool takes = v == "cublaslt" ? true
                           : v == "loom_mma" ? cu::gemm_mma_supported(DType::bf16, s.m, s.n, s.k, opA, opB, hC, s.n, e)
                                             : cu::gemm_wgmma_supported(DType::bf16, s.m, s.n, s.k, opA, opB, hC, s.n, e);
        if (!takes) {
          std::printf("gemm %s: %s does not take this problem (layout, alignment or device)\n", gemm_shape_name(s).c_str(),
                      variant);
          continue;
        }
        auto run16 = [&] {
          if (v == "loom_mma") cu::gemm_mma(DType::bf16, s.m, s.n, s.k, opA, opB, hC, s.n, e);
          else if (v == "loom_wgmma") cu::gemm_wgmma(DType::bf16, s.m, s.n, s.k, opA, opB, hC, s.n, e);
          else cu::gemm(DType::bf16, s.m, s.n, s.k, 1.0, opA, opB, 0.0, hC, s.n);
        };
        cu::memset_async(hC, 0xff, C.size() * 2);
        run16();
        const std::vector<float> Cb = from_bf16_device(hC, C.size());
        // The product of bf16 inputs is exact in f32; the error is f32 accumulation plus one bf16 rounding.
        const double err16 = gemm_error(s, Ar, Br, Cb);
        report(a, "gemm", gemm_shape_name(s), variant, "cuda bf16", err16 <= 8e-3, err16,
               time_cuda(a.reps, run16, size_t(256) << 20), flops, "GFLOP/s");
      }
    }
#endif
  }
}

// ---------------------------------------------------------------------------------------------
// Attention (CPU): the fused kernel's forward and backward; the forward checked on sampled rows.

void bench_attention(const Args& a) {
  struct Shape { int64_t b, h, s, d; };
  std::vector<Shape> shapes;
  if (a.has("b") || a.has("h") || a.has("s") || a.has("d")) shapes.push_back({a.get("b", 8), a.get("h", 4), a.get("s", 256), a.get("d", 64)});
  else shapes = {{128, 4, 50, 32}, {64, 3, 129, 64}, {8, 4, 1024, 64}};  // CLIP demo ViT, CLAP-AST, a long audio clip
  for (const Shape& sh : shapes) {
    const int64_t n = sh.b * sh.h * sh.s * sh.d, rows = sh.b * sh.h * sh.s;
    const size_t N = static_cast<size_t>(n), R = static_cast<size_t>(rows);
    std::vector<float> q = random_floats(N, 3), k = random_floats(N, 4), v = random_floats(N, 5), dout = random_floats(N, 6),
                       out(N), lse(R), dq(N), dk(N), dv(N);
    const std::vector<int64_t> s4 = {sh.b, sh.h, sh.s, sh.d};
    const double scale = 1.0 / std::sqrt(double(sh.d));
    std::vector<float> delta(R);
    AttentionArgs args;
    args.q = view(q.data(), s4), args.k = view(k.data(), s4), args.v = view(v.data(), s4), args.out = view(out.data(), s4);
    args.lse = view(lse.data(), {sh.b, sh.h, sh.s});
    args.dout = view(dout.data(), s4), args.dq = view(dq.data(), s4), args.dk = view(dk.data(), s4), args.dv = view(dv.data(), s4);
    args.delta = view(delta.data(), {sh.b, sh.h, sh.s});
    args.causal = a.causal;
    args.scale = scale;
    auto fwd = [&] { cpu::attention_forward(args); };
    auto bwd = [&] { cpu::attention_backward(args); };
    poison(out);
    fwd();
    // Forward reference on 64 sampled (batch·head, query) rows, in double.
    std::mt19937 rng(11);
    double worst = 0;
    for (int t = 0; t < 64; ++t) {
      const int64_t bh = int64_t(rng() % uint64_t(sh.b * sh.h)), i = int64_t(rng() % uint64_t(sh.s));
      const float* Q = q.data() + (bh * sh.s + i) * sh.d;
      const int64_t visible = a.causal ? i + 1 : sh.s;
      std::vector<double> p(static_cast<size_t>(visible));
      double m = -INFINITY, sum = 0;
      for (int64_t j = 0; j < visible; ++j) {
        const float* K = k.data() + (bh * sh.s + j) * sh.d;
        double dot = 0;
        for (int64_t c = 0; c < sh.d; ++c) dot += double(Q[c]) * K[c];
        p[size_t(j)] = dot * scale;
        m = std::max(m, p[size_t(j)]);
      }
      for (auto& x : p) { x = std::exp(x - m); sum += x; }
      for (int64_t c = 0; c < sh.d; ++c) {
        double want = 0;
        for (int64_t j = 0; j < visible; ++j) want += p[size_t(j)] / sum * v[size_t((bh * sh.s + j) * sh.d + c)];
        const double got = out[size_t((bh * sh.s + i) * sh.d + c)];
        worst = std::isfinite(got) ? std::max(worst, std::fabs(got - want)) : INFINITY;
      }
    }
    // Backward: every gradient written and finite (its values are checked against central
    // differences in the op-case table; here it is timed).
    poison(dq); poison(dk); poison(dv);
    bwd();
    bool finite = true;
    for (const auto* g : {&dq, &dk, &dv})
      for (float x : *g) finite = finite && std::isfinite(x);
    // FLOPs of the products the kernel computes (all S x S scores, also under a causal mask): two in
    // the forward, five in the backward (the scores again, dV, dP, dQ, dK).
    const double fwd_flops = 4.0 * double(sh.b * sh.h) * double(sh.s) * double(sh.s) * double(sh.d);
    const std::string name = std::to_string(sh.b) + "x" + std::to_string(sh.h) + "x" + std::to_string(sh.s) + "x" +
                             std::to_string(sh.d) + (a.causal ? " causal" : "");
    report(a, "attn_fwd", name, "fused", "cpu", worst <= 1e-5, worst, time_host(a.reps, fwd), fwd_flops, "GFLOP/s");
    report(a, "attn_bwd", name, "fused", "cpu", finite, NAN, time_host(a.reps, bwd), 2.5 * fwd_flops,
           "GFLOP/s");
  }
}

#ifdef LOOM_BENCH_CUDA
// ---------------------------------------------------------------------------------------------
// Attention (CUDA, bf16): the flash kernels' forward and backward beside the composed forward
// (cuBLASLt strided-batched Q·Kᵀ, the softmax kernel, P·V). Checked in double on sampled rows: the
// flash output and dQ on 16 query rows, dK and dV on 16 key rows; the composed output likewise.


// Attention of one (batch·head) slice in double on bf16-valued inputs: P row i (softmax), and helpers.
struct SliceRef {
  const std::vector<float>&q, &k, &v, &dout;
  int64_t S, D;
  double scale;
  bool causal;
  const float* at(const std::vector<float>& t, int64_t bh, int64_t i) const { return t.data() + (bh * S + i) * D; }
  std::vector<double> probs(int64_t bh, int64_t i) const {
    std::vector<double> p(static_cast<size_t>(S), 0.0);
    double m = -INFINITY, sum = 0;
    const int64_t visible = causal ? i + 1 : S;
    for (int64_t j = 0; j < visible; ++j) {
      double dot = 0;
      for (int64_t c = 0; c < D; ++c) dot += double(at(q, bh, i)[c]) * at(k, bh, j)[c];
      p[size_t(j)] = dot * scale;
      m = std::max(m, p[size_t(j)]);
    }
    for (int64_t j = 0; j < visible; ++j) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - m));
    for (int64_t j = 0; j < visible; ++j) p[size_t(j)] /= sum;
    return p;
  }
  // dS row i: P ∘ (dP - rowsum(dP ∘ P)), dP = dO·Vᵀ.
  std::vector<double> dscores(int64_t bh, int64_t i, const std::vector<double>& p) const {
    std::vector<double> dp(static_cast<size_t>(S));
    double delta = 0;
    for (int64_t j = 0; j < S; ++j) {
      for (int64_t c = 0; c < D; ++c) dp[size_t(j)] += double(at(dout, bh, i)[c]) * at(v, bh, j)[c];
      delta += p[size_t(j)] * dp[size_t(j)];
    }
    for (int64_t j = 0; j < S; ++j) dp[size_t(j)] = p[size_t(j)] * (dp[size_t(j)] - delta);
    return dp;
  }
};

void bench_attention_cuda(const Args& a) {
  struct Shape { int64_t b, h, s, d; };
  std::vector<Shape> shapes;
  if (a.has("b") || a.has("h") || a.has("s") || a.has("d")) shapes.push_back({a.get("b", 8), a.get("h", 4), a.get("s", 256), a.get("d", 64)});
  else shapes = {{256, 12, 197, 64}, {256, 12, 50, 64}, {8, 16, 4096, 128}};  // ViT-B/16, ViT-B/32 at batch 256; long sequences
  for (const Shape& sh : shapes) {
    const int64_t BH = sh.b * sh.h, n = BH * sh.s * sh.d;
    const size_t N = static_cast<size_t>(n);
    std::vector<float> q = random_floats(N, 3), k = random_floats(N, 4), v = random_floats(N, 5), dout = random_floats(N, 6);
    const auto qb = to_bf16_bits(q), kb = to_bf16_bits(k), vb = to_bf16_bits(v), db = to_bf16_bits(dout);
    const double scale = 1.0 / std::sqrt(double(sh.d));
    const SliceRef ref{q, k, v, dout, sh.s, sh.d, scale, a.causal};
    DeviceBuffers d;
    void *dq_in = d.up_bytes(qb.data(), N * 2), *dk_in = d.up_bytes(kb.data(), N * 2), *dv_in = d.up_bytes(vb.data(), N * 2),
         *ddo = d.up_bytes(db.data(), N * 2);
    const std::vector<float> zeros_n(N, 0.f), zeros_r(static_cast<size_t>(BH * sh.s), 0.f);
    void *dout_buf = d.up_bytes(qb.data(), N * 2), *ddk = d.up_bytes(qb.data(), N * 2), *ddv = d.up_bytes(qb.data(), N * 2);
    float *lse = d.up(zeros_r), *delta = d.up(zeros_r), *dq_acc = d.up(zeros_n);
    const int64_t row = sh.s * sh.d;
    auto view_of = [&](void* ptr, DType dtype, int ndim) {  // contiguous [b, h, s(, d)]
      View v;
      v.data = ptr, v.dtype = dtype, v.ndim = ndim;
      const int64_t dims[4] = {sh.b, sh.h, sh.s, sh.d};
      int64_t stride = 1;
      for (int i = ndim - 1; i >= 0; --i) v.shape[i] = dims[i], v.strides[i] = stride, stride *= dims[i];
      return v;
    };
    AttentionArgs p;
    p.q = view_of(dq_in, DType::bf16, 4), p.k = view_of(dk_in, DType::bf16, 4), p.v = view_of(dv_in, DType::bf16, 4);
    p.out = view_of(dout_buf, DType::bf16, 4), p.dout = view_of(ddo, DType::bf16, 4);
    p.dk = view_of(ddk, DType::bf16, 4), p.dv = view_of(ddv, DType::bf16, 4);
    p.lse = view_of(lse, DType::f32, 3), p.delta = view_of(delta, DType::f32, 3), p.dq = view_of(dq_acc, DType::f32, 4);
    p.scale = scale;
    p.causal = a.causal;
    const std::string name = std::to_string(sh.b) + "x" + std::to_string(sh.h) + "x" + std::to_string(sh.s) + "x" +
                             std::to_string(sh.d) + (a.causal ? " causal" : "");
    const double fwd_flops = 4.0 * double(BH) * double(sh.s) * double(sh.s) * double(sh.d);
    const size_t flush = size_t(256) << 20;
    std::mt19937 rng(11);
    std::vector<std::pair<int64_t, int64_t>> rows;  // (bh, row) samples
    for (int t = 0; t < 16; ++t) rows.push_back({int64_t(rng() % uint64_t(BH)), int64_t(rng() % uint64_t(sh.s))});
    // A relative error: largest |got - want| over largest |want| of the sampled values.
    auto rel = [](double diff, double mag) { return diff / std::max(mag, 1e-30); };
    // The output in dout_buf against the reference on the sampled rows (a NaN counts as infinite).
    auto forward_error = [&] {
      const std::vector<float> out = from_bf16_device(dout_buf, N);
      double diff = 0, mag = 0;
      for (auto [bh, i] : rows) {
        const std::vector<double> pr = ref.probs(bh, i);
        for (int64_t c = 0; c < sh.d; ++c) {
          double want = 0;
          for (int64_t j = 0; j < sh.s; ++j) want += pr[size_t(j)] * ref.at(v, bh, j)[c];
          const double got = out[size_t((bh * sh.s + i) * sh.d + c)];
          diff = std::isfinite(got) ? std::max(diff, std::fabs(got - want)) : INFINITY;
          mag = std::max(mag, std::fabs(want));
        }
      }
      return rel(diff, mag);
    };
    if (!cu::attention_supported(p, true)) {
      std::printf("attention %s: the flash kernels do not take this shape (D must be 64 or 128)\n", name.c_str());
    } else {
      auto fwd = [&] { cu::attention_forward(p); };
      auto bwd = [&] {
        cu::memset_async(dq_acc, 0, N * 4);
        cu::attention_backward(p);
      };
      cu::memset_async(dout_buf, 0xff, N * 2);  // NaN in bf16
      fwd();
      const double err_fwd = forward_error();
      report(a, "attn_fwd", name, "flash", "cuda", err_fwd <= 2e-2, err_fwd, time_cuda(a.reps, fwd, flush), fwd_flops, "GFLOP/s");
      cu::memset_async(ddk, 0xff, N * 2);
      cu::memset_async(ddv, 0xff, N * 2);
      bwd();
      std::vector<float> dqv(N);
      cu::memcpy(dqv.data(), dq_acc, N * 4, cu::CopyKind::device_to_host);
      const std::vector<float> dkv = from_bf16_device(ddk, N), dvv = from_bf16_device(ddv, N);
      double dq_diff = 0, dq_mag = 0, dkv_diff = 0, dkv_mag = 0;
      for (auto [bh, i] : rows) {  // dQ row i
        const std::vector<double> pr = ref.probs(bh, i), ds = ref.dscores(bh, i, pr);
        for (int64_t c = 0; c < sh.d; ++c) {
          double want = 0;
          for (int64_t j = 0; j < sh.s; ++j) want += ds[size_t(j)] * ref.at(k, bh, j)[c] * scale;
          const double got = dqv[size_t((bh * sh.s + i) * sh.d + c)];
          dq_diff = std::isfinite(got) ? std::max(dq_diff, std::fabs(got - want)) : INFINITY;
          dq_mag = std::max(dq_mag, std::fabs(want));
        }
      }
      {  // dK and dV of 4 keys of one slice: sums over every query, one pass over the queries
        const int64_t bh = rows[0].first;
        std::vector<int64_t> keys;
        for (int t = 0; t < 4; ++t) keys.push_back(rows[size_t(t)].second);
        const size_t D = static_cast<size_t>(sh.d);
        std::vector<double> want_k(keys.size() * D), want_v(keys.size() * D);
        for (int64_t i = 0; i < sh.s; ++i) {
          const std::vector<double> pr = ref.probs(bh, i), ds = ref.dscores(bh, i, pr);
          for (size_t t = 0; t < keys.size(); ++t)
            for (int64_t c = 0; c < sh.d; ++c) {
              want_k[t * D + size_t(c)] += ds[size_t(keys[t])] * ref.at(q, bh, i)[c] * scale;
              want_v[t * D + size_t(c)] += pr[size_t(keys[t])] * ref.at(dout, bh, i)[c];
            }
        }
        for (size_t t = 0; t < keys.size(); ++t)
          for (int64_t c = 0; c < sh.d; ++c) {
            const size_t at = size_t((bh * sh.s + keys[t]) * sh.d + c);
            const double gk = dkv[at], gv = dvv[at], wk = want_k[t * D + size_t(c)], wv = want_v[t * D + size_t(c)];
            dkv_diff = std::isfinite(gk) && std::isfinite(gv) ? std::max({dkv_diff, std::fabs(gk - wk), std::fabs(gv - wv)})
                                                               : INFINITY;
            dkv_mag = std::max({dkv_mag, std::fabs(wk), std::fabs(wv)});
          }
      }
      const double err_bwd = std::max(rel(dq_diff, dq_mag), rel(dkv_diff, dkv_mag));
      report(a, "attn_bwd", name, "flash", "cuda", err_bwd <= 4e-2, err_bwd, time_cuda(a.reps, bwd, flush), 2.5 * fwd_flops,
             "GFLOP/s");
    }
    // The composed forward: scores materialised in bf16, as the composed op runs them.
    if (a.causal) {
      std::printf("attention %s: the composed baseline here has no causal mask; skipped\n", name.c_str());
      continue;
    }
    const double score_bytes = double(BH) * double(sh.s) * double(sh.s) * 2;
    if (score_bytes * 2 > 24e9) {
      std::printf("attention %s: composed scores would take %.1f GB; skipped\n", name.c_str(), score_bytes * 2 / 1e9);
      continue;
    }
    const std::vector<float> zeros_s(static_cast<size_t>(BH * sh.s * sh.s / 2 + 1), 0.f);
    float *scores = d.up(zeros_s), *probs = d.up(zeros_s);
    const View sv = view(scores, {BH, sh.s, sh.s}, DType::bf16), pv = view(probs, {BH, sh.s, sh.s}, DType::bf16);
    auto composed = [&] {
      cu::gemm_strided_batched(DType::bf16, BH, sh.s, sh.s, sh.d, scale, {dq_in, false, sh.d}, row, {dk_in, true, sh.d}, row,
                               0.0, scores, sh.s, sh.s * sh.s);
      cu::softmax(sv, pv, false);
      cu::gemm_strided_batched(DType::bf16, BH, sh.s, sh.d, sh.s, 1.0, {probs, false, sh.s}, sh.s * sh.s, {dv_in, false, sh.d},
                               row, 0.0, dout_buf, sh.d, row);
    };
    cu::memset_async(dout_buf, 0xff, N * 2);
    composed();
    const double err = forward_error();
    report(a, "attn_fwd", name, "composed", "cuda", err <= 3e-2, err, time_cuda(a.reps, composed, flush), fwd_flops, "GFLOP/s");
  }
}
#endif

// ---------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------
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

}  // namespace

int main(int argc, char** argv) {
  Args a;
  try {
    a = parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loom-bench: %s\n%s", e.what(), kUsage);
    return 2;
  }
  if (a.what == "--help" || a.what == "-h") {
    std::printf("%s", kUsage);
    return 0;
  }
  try {
    if (a.device == "cuda") {
#ifdef LOOM_BENCH_CUDA
      if (loom::kernels::cuda::device_count() == 0) {
        std::fprintf(stderr, "loom-bench: --device cuda: no GPU here (skipped)\n");
        return 77;
      }
#else
      std::fprintf(stderr, "loom-bench: --device cuda: this loom-bench was built without CUDA (skipped)\n");
      return 77;
#endif
    }
    if (!a.json)
      std::printf("loom-bench %s on %s, %d OpenMP threads; CPU f32 GEMM by default: %s\n", a.what.c_str(), a.device.c_str(),
                  omp_get_max_threads(), cpu::sgemm_library());
    if (a.what == "gemm") bench_gemm(a);
    if (a.what == "attention") {
#ifdef LOOM_BENCH_CUDA
      if (a.device == "cuda") bench_attention_cuda(a);
      else
#endif
        bench_attention(a);
    }
    if (a.what == "layernorm") bench_layernorm(a);
    if (a.what == "adamw") bench_adamw(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loom-bench: %s\n", e.what());
    return 1;
  }
  if (failures) std::fprintf(stderr, "loom-bench: %d check(s) failed\n", failures);
  return failures ? 1 : 0;
}
