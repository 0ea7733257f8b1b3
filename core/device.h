// Devices, allocators and storage. The CPU allocator is built in; the CUDA runtime registers its own.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include "core/caching_allocator.h"

namespace loom {

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  static constexpr Device cpu() { return {DeviceType::CPU, 0}; }
  static constexpr Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
  friend bool operator==(Device a, Device b) { return a.type == b.type && a.index == b.index; }
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes, Device device) = 0;
  virtual void deallocate(void* ptr, size_t nbytes, Device device) = 0;
  virtual const char* name() const = 0;
  // Memory accounting; allocators without a cache report zeros and have nothing to release.
  virtual MemoryStats memory_stats(Device) const { return {}; }
  virtual void empty_cache(Device) {}
  virtual void reset_peak_memory(Device) {}
};

// The allocator that serves `type`; throws if that backend is not built or not registered.
Allocator& allocator_for(DeviceType type);
void register_allocator(DeviceType type, Allocator* allocator);

// Bytes held by tensors and by the allocator's cache on a device (peaks since the last reset).
MemoryStats memory_stats(Device device);
void empty_cache(Device device);  // returns cached, unused device memory to the driver
void reset_peak_memory(Device device);
int cuda_device_count();  // 0 when built without CUDA or without a GPU
// This machine's physical memory in bytes (what a file's claims are weighed against).
uint64_t host_memory_bytes();

// One allocation. Tensors (and views) share it through shared_ptr; freed when the last one goes.
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  Allocator* allocator = nullptr;

  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

}  // namespace loom
