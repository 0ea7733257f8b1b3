#include "core/device.h"
#include <array>
#include <cstdlib>
#include <new>
#include "core/error.h"
#ifdef LOOM_WITH_CUDA
#include "kernels/cuda/cuda.h"
#endif

namespace loom {
namespace {

// 64-byte aligned host memory (cache lines, AVX-512 loads).
class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes, Device) override {
    if (nbytes == 0) return nullptr;
    void* p = std::aligned_alloc(64, (nbytes + 63) / 64 * 64);
    if (!p) throw Error(str_cat("out of host memory allocating ", nbytes, " bytes"));
    return p;
  }
  void deallocate(void* ptr, size_t, Device) override { std::free(ptr); }
  const char* name() const override { return "cpu"; }
};

#ifdef LOOM_WITH_CUDA
// Plain cudaMalloc/cudaFree for now; the caching allocator replaces it with the CUDA backend.
class CudaAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes, Device d) override {
    return nbytes ? kernels::cuda::device_malloc(nbytes, d.index) : nullptr;
  }
  void deallocate(void* ptr, size_t, Device d) override {
    try { kernels::cuda::device_free(ptr, d.index); } catch (...) {}  // never throw from a destructor
  }
  const char* name() const override { return "cuda"; }
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

Storage::Storage(size_t n, Device d) : nbytes(n), device(d), allocator(&allocator_for(d.type)) {
  data = allocator->allocate(n, d);
}

Storage::~Storage() {
  if (data) allocator->deallocate(data, nbytes, device);
}

}  // namespace loom
