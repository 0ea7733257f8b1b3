#include "core/caching_allocator.h"
#include <cstdio>
#include "core/error.h"

namespace loom {

std::string format_bytes(size_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024.0 && u < 4) { v /= 1024.0; ++u; }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", v, units[u]);
  return buf;
}

size_t CachingAllocator::round_size(size_t n) {
  constexpr size_t kGranule = 512, kSmall = size_t(1) << 20;
  if (n == 0) n = 1;
  if (n <= kSmall) return (n + kGranule - 1) / kGranule * kGranule;
  size_t pow2 = kSmall;
  while (pow2 * 2 <= n) pow2 *= 2;  // largest power of two <= n
  const size_t step = pow2 / 4;
  return (n + step - 1) / step * step;
}

CachingAllocator::CachingAllocator(std::unique_ptr<Backend> backend, std::string device_name)
    : backend_(std::move(backend)), device_name_(std::move(device_name)) {}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(mu_);
  try {
    release_cached_locked();
  } catch (...) {  // the driver may already be shutting down at process exit
  }
}

void* CachingAllocator::allocate(size_t nbytes, void* stream) {
  const size_t size = round_size(nbytes);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = free_.find({stream, size});
  void* p = nullptr;
  if (it != free_.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    ++stats_.cache_hits;
  } else {
    p = backend_->raw_alloc(size);
    if (!p && stats_.reserved > stats_.allocated) {  // cached blocks of other sizes: give them back, retry
      release_cached_locked();
      p = backend_->raw_alloc(size);
    }
    if (!p)
      throw Error(str_cat("out of memory on ", device_name_, ": asked ", format_bytes(nbytes), " (", nbytes,
                          " bytes); loom holds ", format_bytes(stats_.allocated), " in tensors and ",
                          format_bytes(stats_.reserved - stats_.allocated), " cached; ", backend_->memory_info()));
    ++stats_.backend_allocs;
    stats_.reserved += size;
    if (stats_.reserved > stats_.peak_reserved) stats_.peak_reserved = stats_.reserved;
  }
  live_.emplace(p, Block{size, stream});
  stats_.allocated += size;
  if (stats_.allocated > stats_.peak_allocated) stats_.peak_allocated = stats_.allocated;
  return p;
}

void CachingAllocator::deallocate(void* ptr) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  if (it == live_.end()) throw Error(str_cat("CachingAllocator(", device_name_, "): freeing an unknown pointer"));
  const Block b = it->second;
  live_.erase(it);
  stats_.allocated -= b.size;
  free_[{b.stream, b.size}].push_back(ptr);
}

void CachingAllocator::release_cached_locked() {
  for (auto& [key, blocks] : free_) {
    while (!blocks.empty()) {
      backend_->raw_free(blocks.back());
      blocks.pop_back();
      stats_.reserved -= key.second;
      ++stats_.backend_frees;
    }
  }
  free_.clear();
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked();
}

MemoryStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::reset_peaks() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_allocated = stats_.allocated;
  stats_.peak_reserved = stats_.reserved;
}

}  // namespace loom
