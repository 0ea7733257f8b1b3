// loom-bench gemm: C[M,N] = op(A) op(B), the CPU GEMM libraries and, on CUDA, cuBLASLt beside the hand-written kernels.
#include "kernels/bench/harness.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>
#ifdef LOOM_BENCH_CUDA
#include "kernels/cuda/gemm_mma.h"
#include "kernels/cuda/gemm_wgmma.h"
#endif

namespace loom::bench {

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

}  // namespace loom::bench
