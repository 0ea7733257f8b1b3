// loom-bench's harness: what every benchmark shares (arguments, inputs, timers, device buffers, the
// result line). Each benchmark is one file beside this (gemm.cpp, attention.cpp, layernorm.cpp,
// adamw.cpp) and one line in main.cpp's table.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "kernels/cpu/cpu.h"
#ifdef LOOM_BENCH_CUDA
#include "kernels/cuda/cuda.h"
#endif

namespace loom::bench {

using kernels::AttentionArgs;
using kernels::DType;
using kernels::View;
namespace cpu = kernels::cpu;

struct Args {
  std::string what, device = "cpu";
  std::map<std::string, int64_t> ints;
  bool ta = false, tb = false, causal = false, json = false;
  int reps = 20;
  int64_t get(const std::string& k, int64_t dflt) const { auto it = ints.find(k); return it == ints.end() ? dflt : it->second; }
  bool has(const std::string& k) const { return ints.count(k) > 0; }
};

// The benchmark named by argv[1] (one of `names`) and its options; throws std::invalid_argument
// for anything else.
Args parse(int argc, char** argv, const std::vector<std::string>& names);

// A contiguous view of host or device memory.
View view(float* p, std::vector<int64_t> shape, DType dt = DType::f32);
std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f);
void poison(std::vector<float>& v);  // NaN everywhere, so an element a kernel skips fails its check

struct Timing {
  double median_ms = 0, best_ms = 0;
};

// Times f over reps runs after 3 warm-up runs, with the host clock (CPU kernels return when done).
Timing time_host(int reps, const std::function<void()>& f);

// One result line: human-readable, or JSON. err is the check's largest error (relative for GEMM,
// absolute elsewhere), or NaN where the check is only that every output was written and finite.
// A failed check is counted (failed_checks).
void report(const Args& a, const std::string& bench, const std::string& shape, const std::string& variant,
            const std::string& device, bool ok, double err, const Timing& t, double work, const char* unit);
int failed_checks();

#ifdef LOOM_BENCH_CUDA
namespace cu = kernels::cuda;
using kernels::bf16;

// Times f on the current stream with CUDA events over reps runs after 3 warm-up runs; with
// flush_bytes, a buffer that large is overwritten before each timed run (L2 is cold, as in training).
Timing time_cuda(int reps, const std::function<void()>& f, size_t flush_bytes = 0);

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

std::vector<uint16_t> to_bf16_bits(std::vector<float>& x);  // rounds x to bf16 values in place
std::vector<float> from_bf16_device(const void* d, size_t n);
#endif

// The benchmarks, one file each.
void bench_gemm(const Args& a);
void bench_attention(const Args& a);
void bench_layernorm(const Args& a);
void bench_adamw(const Args& a);

}  // namespace loom::bench
