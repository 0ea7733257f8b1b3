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

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "kernels/bench/harness.h"

namespace {

using namespace loom::bench;

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

// The benchmarks (one file each beside this one).
struct Benchmark {
  const char* name;
  void (*run)(const Args&);
};
constexpr Benchmark kBenchmarks[] = {
    {"gemm", bench_gemm}, {"attention", bench_attention}, {"layernorm", bench_layernorm}, {"adamw", bench_adamw}};

}  // namespace

int main(int argc, char** argv) {
  Args a;
  try {
    std::vector<std::string> names;
    for (const Benchmark& b : kBenchmarks) names.push_back(b.name);
    a = parse(argc, argv, names);
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
                  omp_get_max_threads(), loom::kernels::cpu::sgemm_library());
    for (const Benchmark& b : kBenchmarks)
      if (a.what == b.name) b.run(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loom-bench: %s\n", e.what());
    return 1;
  }
  if (failed_checks()) std::fprintf(stderr, "loom-bench: %d check(s) failed\n", failed_checks());
  return failed_checks() ? 1 : 0;
}
