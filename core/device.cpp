#include "core/device.h"
#include <unistd.h>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <memory>
#include <mutex>
#include <new>
#include "core/error.h"
#include "core/profiler.h"
#ifdef LOOM_WITH_CUDA
#include "kernels/cuda/cuda.h"
#endif

namespace loom {
namespace {

// The CPU kernels were compiled for LOOM_CPU_ARCH; on a CPU without it they would die of an illegal
// instruction at the first op. Say so, once, before anything runs.
#if defined(LOOM_CPU_ARCH) && defined(__x86_64__)
bool cpu_has_build_arch() {
  __builtin_cpu_init();
  const std::string_view arch = LOOM_CPU_ARCH;
#if defined(__clang__)  // clang (14) knows the features, not the level names
  const bool v2 = __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("popcnt");
  const bool v3 = v2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
  const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (arch == "x86-64-v2") return v2;
  if (arch == "x86-64-v3") return v3;
  if (arch == "x86-64-v4") return v4;
#else
  if (arch == "x86-64-v2") return __builtin_cpu_supports("x86-64-v2");
  if (arch == "x86-64-v3") return __builtin_cpu_supports("x86-64-v3");
  if (arch == "x86-64-v4") return __builtin_cpu_supports("x86-64-v4");
#endif
  return true;  // native or a named CPU: built for this machine by whoever chose it
}
const bool g_cpu_checked = [] {
  if (!cpu_has_build_arch()) {
    std::fprintf(stderr, "loom: this build's CPU kernels need %s (LOOM_CPU_ARCH), which this CPU lacks; "
                         "rebuild with cmake -DLOOM_CPU_ARCH=x86-64 (or native)\n", LOOM_CPU_ARCH);
    std::exit(1);
  }
  return true;
}();
#endif

// LOOM_POISON_ALLOC=1 fills every new tensor buffer with 0xFF bytes (NaN in f32, f64, bf16 and
// f16) before an op writes it, so a kernel that leaves elements unwritten shows NaN instead of
// passing on whatever the last block held. The op-case suites run with it.
bool poison_allocations() {
  static const bool on = [] {
    const char* v = std::getenv("LOOM_POISON_ALLOC");
    return v != nullptr && std::string_view(v) != "0";
  }();
  return on;
}

// 64-byte aligned host memory (cache lines, AVX-512 loads).
class AlignedHostBackend final : public CachingAllocator::Backend {
 public:
  void* raw_alloc(size_t nbytes) override { return std::aligned_alloc(64, (nbytes + 63) / 64 * 64); }
  void raw_free(void* ptr) override { std::free(ptr); }
  std::string memory_info() override { return "host memory exhausted"; }
};

// Host tensors through the same caching allocator as the GPU's: a training step's large buffers
// are reused from one step to the next instead of being mapped, page-faulted in and zeroed by the
// kernel each time (~18k page faults per step of the CLIP demo before). LOOM_CPU_CACHE=0 turns
// the cache off (every block goes straight back to the C library), e.g. for sanitizers.
class CpuAllocator final : public Allocator {
 public:
  CpuAllocator() : cached_(std::getenv("LOOM_CPU_CACHE") == nullptr || std::string_view(std::getenv("LOOM_CPU_CACHE")) != "0") {}
  void* allocate(size_t nbytes, Device) override {
    if (nbytes == 0) return nullptr;
    void* p = cached_ ? cache().allocate(nbytes, nullptr) : backend_.raw_alloc(nbytes);
    if (!p) throw Error(str_cat("out of host memory allocating ", nbytes, " bytes"));
    if (poison_allocations()) std::memset(p, 0xFF, nbytes);
    return p;
  }
  void deallocate(void* ptr, size_t, Device) override {
    if (!cached_) return backend_.raw_free(ptr);
    try { cache().deallocate(ptr); } catch (...) {}  // never throw from a destructor
  }
  const char* name() const override { return "cpu"; }
  MemoryStats memory_stats(Device) const override { return cached_ ? cache().stats() : MemoryStats{}; }
  void empty_cache(Device) override { if (cached_) cache().empty_cache(); }
  void reset_peak_memory(Device) override { if (cached_) cache().reset_peaks(); }

 private:
  // Never destroyed: tensors held by other statics are freed after this file's statics are gone.
  static CachingAllocator& cache() {
    static CachingAllocator* c = new CachingAllocator(std::make_unique<AlignedHostBackend>(), "cpu");
    return *c;
  }
  bool cached_;
  AlignedHostBackend backend_;
};

#ifdef LOOM_WITH_CUDA
class CudaBackend final : public CachingAllocator::Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {}
  void* raw_alloc(size_t nbytes) override { return kernels::cuda::device_try_malloc(nbytes, device_); }
  void raw_free(void* ptr) override { kernels::cuda::device_free(ptr, device_); }
  std::string memory_info() override {
    size_t free_b = 0, total_b = 0;
    kernels::cuda::mem_get_info(device_, &free_b, &total_b);
    return str_cat(format_bytes(free_b), " of ", format_bytes(total_b), " free on the device");
  }

 private:
  int device_;
};

// One caching allocator per device, each serving the calling thread's current stream. The kernels'
// scratch memory comes from it too (registered once), so it counts in the statistics and shares
// the free-and-retry on exhaustion.
class CudaAllocator final : public Allocator {
 public:
  CudaAllocator() {
    instance_ = this;
    kernels::cuda::set_scratch_allocator(
        [](size_t nbytes, int device, kernels::cuda::StreamHandle stream) {
          return instance_->cache(Device::cuda(device)).allocate(nbytes, stream);
        },
        [](void* ptr, int device) {
          try { instance_->cache(Device::cuda(device)).deallocate(ptr); } catch (...) {}  // never throws
        });
  }
  void* allocate(size_t nbytes, Device d) override {
    if (!nbytes) return nullptr;
    void* p = cache(d).allocate(nbytes, kernels::cuda::current_stream());
    if (poison_allocations()) kernels::cuda::memset_async(p, 0xFF, nbytes);
    return p;
  }
  void deallocate(void* ptr, size_t, Device d) override {
    try { cache(d).deallocate(ptr); } catch (...) {}  // never throw from a destructor
  }
  const char* name() const override { return "cuda"; }
  MemoryStats memory_stats(Device d) const override { return cache(d).stats(); }
  void empty_cache(Device d) override { cache(d).empty_cache(); }
  void reset_peak_memory(Device d) override { cache(d).reset_peaks(); }

 private:
  static constexpr int kMaxDevices = 64;
  CachingAllocator& cache(Device d) const {
    if (d.index < 0 || d.index >= kMaxDevices) throw Error(str_cat("no such device: ", d.str()));
    std::lock_guard<std::mutex> lock(mu_);
    auto& c = caches_[size_t(d.index)];
    if (!c) c = std::make_unique<CachingAllocator>(std::make_unique<CudaBackend>(d.index), d.str());
    return *c;
  }
  mutable std::mutex mu_;
  mutable std::array<std::unique_ptr<CachingAllocator>, kMaxDevices> caches_;
  static inline CudaAllocator* instance_ = nullptr;
};
#endif

std::array<Allocator*, 2>& registry() {
  static CpuAllocator cpu;
#ifdef LOOM_WITH_CUDA
  static CudaAllocator cuda;
  static std::array<Allocator*, 2> r{&cpu, &cuda};
#else
  static std::array<Allocator*, 2> r{&cpu, nullptr};
#endif
  return r;
}

}  // namespace

Allocator& allocator_for(DeviceType type) {
  Allocator* a = registry()[size_t(type)];
  if (!a) throw Error(type == DeviceType::CUDA ? "CUDA device requested, but this loom was built without CUDA"
                                               : "no allocator for this device");
  return *a;
}

void register_allocator(DeviceType type, Allocator* allocator) { registry()[size_t(type)] = allocator; }

MemoryStats memory_stats(Device d) { return allocator_for(d.type).memory_stats(d); }
void empty_cache(Device d) { allocator_for(d.type).empty_cache(d); }
void reset_peak_memory(Device d) { allocator_for(d.type).reset_peak_memory(d); }

uint64_t host_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : uint64_t(1) << 40;
}

int cuda_device_count() {
#ifdef LOOM_WITH_CUDA
  return kernels::cuda::device_count();
#else
  return 0;
#endif
}

Storage::Storage(size_t n, Device d) : nbytes(n), device(d), allocator(&allocator_for(d.type)) {
  data = allocator->allocate(n, d);
  profiler::note_allocation(n);
}

Storage::~Storage() {
  if (data) allocator->deallocate(data, nbytes, device);
}

}  // namespace loom
