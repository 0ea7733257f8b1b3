// The caching allocator's policy, checked with a counting backend (no GPU needed).
#include <gtest/gtest.h>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>
#include "core/caching_allocator.h"
#include "core/error.h"
#include "core/tensor.h"

using namespace loom;

namespace {

struct CountingBackend : CachingAllocator::Backend {
  size_t capacity;     // bytes the fake device can hold
  size_t in_use = 0;
  int allocs = 0, frees = 0;
  std::set<void*> live;
  std::map<void*, size_t> sizes;
  explicit CountingBackend(size_t cap) : capacity(cap) {}
  void* raw_alloc(size_t n) override {
    if (in_use + n > capacity) return nullptr;
    void* p = std::malloc(n);
    in_use += n; ++allocs; live.insert(p); sizes[p] = n;
    return p;
  }
  void raw_free(void* p) override {
    EXPECT_TRUE(live.erase(p)) << "freed a pointer the backend did not hand out";
    in_use -= sizes[p]; sizes.erase(p); ++frees;
    std::free(p);
  }
  std::string memory_info() override { return std::to_string(capacity - in_use) + " bytes free on the fake device"; }
};

}  // namespace

TEST(CachingAllocator, RoundsToBuckets) {
  EXPECT_EQ(CachingAllocator::round_size(1), 512u);
  EXPECT_EQ(CachingAllocator::round_size(512), 512u);
  EXPECT_EQ(CachingAllocator::round_size(513), 1024u);
  EXPECT_EQ(CachingAllocator::round_size(size_t(1) << 20), size_t(1) << 20);
  // above 1 MiB: four steps per power of two
  EXPECT_EQ(CachingAllocator::round_size((size_t(1) << 20) + 1), (size_t(1) << 20) + (size_t(1) << 18));
  EXPECT_EQ(CachingAllocator::round_size(size_t(3) << 20), size_t(3) << 20);
  for (size_t n : {size_t(1) << 21, size_t(5000000), size_t(123456789)}) {
    const size_t r = CachingAllocator::round_size(n);
    EXPECT_GE(r, n);
    EXPECT_LE(double(r), double(n) * 1.25 + 512);
  }
}

TEST(CachingAllocator, SteadyStateMakesNoBackendCalls) {
  auto* backend = new CountingBackend(size_t(1) << 30);
  CachingAllocator a(std::unique_ptr<CachingAllocator::Backend>(backend), "fake:0");
  const std::vector<size_t> step = {1000, 4096, size_t(3) << 20, 77, 4096};
  for (int iter = 0; iter < 5; ++iter) {  // the same sequence of sizes, as in training steps
    std::vector<void*> ps;
    for (size_t n : step) ps.push_back(a.allocate(n, nullptr));
    for (void* p : ps) a.deallocate(p);
  }
  EXPECT_EQ(backend->allocs, int(step.size()));  // only the first step reached the backend
  EXPECT_EQ(backend->frees, 0);
  const MemoryStats s = a.stats();
  EXPECT_EQ(s.allocated, 0u);
  EXPECT_EQ(s.cache_hits, uint64_t(4 * step.size()));
  EXPECT_GT(s.peak_allocated, size_t(3) << 20);
  EXPECT_EQ(s.reserved, s.peak_reserved);
}

TEST(CachingAllocator, StreamsDoNotShareBlocks) {
  auto* backend = new CountingBackend(size_t(1) << 30);
  CachingAllocator a(std::unique_ptr<CachingAllocator::Backend>(backend), "fake:0");
  int s1 = 0, s2 = 0;
  void* p = a.allocate(4096, &s1);
  a.deallocate(p);
  void* q = a.allocate(4096, &s2);  // another stream: a new block, not p
  EXPECT_NE(p, q);
  void* r = a.allocate(4096, &s1);  // p's stream: p again
  EXPECT_EQ(p, r);
  a.deallocate(q);
  a.deallocate(r);
  EXPECT_EQ(backend->allocs, 2);
}

TEST(CachingAllocator, FreesCacheAndRetriesBeforeFailing) {
  auto* backend = new CountingBackend(10000);
  CachingAllocator a(std::unique_ptr<CachingAllocator::Backend>(backend), "fake:0");
  void* p = a.allocate(6000, nullptr);
  a.deallocate(p);                        // 6144 bytes cached
  void* q = a.allocate(8000, nullptr);    // does not fit beside the cache: cache released, then served
  EXPECT_NE(q, nullptr);
  EXPECT_EQ(backend->frees, 1);
  try {
    a.allocate(9000, nullptr);
    FAIL() << "expected an out-of-memory error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("out of memory on fake:0"), std::string::npos) << m;
    EXPECT_NE(m.find("9000 bytes"), std::string::npos) << m;
    EXPECT_NE(m.find("in tensors"), std::string::npos) << m;
    EXPECT_NE(m.find("free on the fake device"), std::string::npos) << m;
  }
  a.deallocate(q);
  a.empty_cache();
  EXPECT_EQ(backend->in_use, 0u);
  EXPECT_EQ(a.stats().reserved, 0u);
  EXPECT_THROW(a.deallocate(reinterpret_cast<void*>(0x1234)), Error);
}

// Host tensors go through the cache too: a freed buffer serves the next tensor of its size.
TEST(CachingAllocator, HostTensorsReuseFreedBlocks) {
  if (const char* v = std::getenv("LOOM_CPU_CACHE"); v && std::string(v) == "0") GTEST_SKIP() << "LOOM_CPU_CACHE=0";
  const MemoryStats before = memory_stats(Device::cpu());
  const void* first;
  {
    Tensor t = Tensor::empty({1 << 20});  // 4 MiB
    first = t.raw_data();
    EXPECT_GE(memory_stats(Device::cpu()).allocated, before.allocated + (size_t(4) << 20));
  }
  Tensor again = Tensor::empty({1 << 20});
  EXPECT_EQ(again.raw_data(), first);
  EXPECT_GT(memory_stats(Device::cpu()).cache_hits, before.cache_hits);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(again.raw_data()) % 64, 0u);
}
