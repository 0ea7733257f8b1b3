// A caching allocator for device memory: freed blocks go to size-bucketed free lists per stream
// and are handed out again, so a training step in steady state makes no cudaMalloc/cudaFree calls
// (each costs a device synchronisation). The policy is independent of CUDA: the raw memory comes
// from a Backend, which lets the CPU tests check it with a counting backend.
//
// Stream semantics (as in PyTorch without record_stream): a block returns to the free list of the
// stream it was allocated on and is reused only by allocations on that stream, so reuse is ordered
// after every kernel that stream queued on the block. A tensor used on another stream must be
// kept alive (or that stream synchronised) until the work is done.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace loom {

struct MemoryStats {
  size_t allocated = 0;       // bytes in live blocks (rounded sizes)
  size_t reserved = 0;        // bytes obtained from the backend: live + cached
  size_t peak_allocated = 0;
  size_t peak_reserved = 0;
  uint64_t backend_allocs = 0;  // raw allocations made (cudaMalloc calls)
  uint64_t backend_frees = 0;
  uint64_t cache_hits = 0;      // allocations served from a free list
};

class CachingAllocator {
 public:
  class Backend {
   public:
    virtual ~Backend() = default;
    virtual void* raw_alloc(size_t nbytes) = 0;  // nullptr when out of memory; throws on other errors
    virtual void raw_free(void* ptr) = 0;
    virtual std::string memory_info() = 0;  // e.g. "2.1 GiB of 79.1 GiB free on the device", for errors
  };

  CachingAllocator(std::unique_ptr<Backend> backend, std::string device_name);
  ~CachingAllocator();  // returns every cached block to the backend
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // Throws loom::Error on exhaustion, naming the bytes asked, allocated, reserved and free.
  void* allocate(size_t nbytes, void* stream);
  void deallocate(void* ptr);
  void empty_cache();  // gives every cached (free) block back to the backend
  MemoryStats stats() const;
  void reset_peaks();

  // The block size a request is served with: 512-byte granules below 1 MiB, above that the next of
  // four steps per power of two (at most 25% slack), so freed blocks fit later requests of similar size.
  static size_t round_size(size_t nbytes);

 private:
  struct Block {
    size_t size;
    void* stream;
  };
  void release_cached_locked();

  std::unique_ptr<Backend> backend_;
  std::string device_name_;
  mutable std::mutex mu_;
  std::map<std::pair<void*, size_t>, std::vector<void*>> free_;  // (stream, size) -> cached blocks
  std::unordered_map<void*, Block> live_;
  MemoryStats stats_;
};

// Human-readable byte count ("1.5 GiB"), for messages and reports.
std::string format_bytes(size_t nbytes);

}  // namespace loom
