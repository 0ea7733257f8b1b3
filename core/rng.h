// Seeded counter-based generator (Philox4x32-10). A draw of n numbers takes the counters
// [offset, offset + n) and advances the offset, so results do not depend on thread count or device.
#pragma once
#include <cstdint>
#include "kernels/common/philox.h"

namespace loom {

// One Philox block, the same function on the CPU and in CUDA kernels; data/ draws from it through core.
using kernels::Philox4;
using kernels::philox4x32;

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }
  // Reserves n counters and returns the first; rounded to 4 so draws never share a Philox block.
  uint64_t reserve(uint64_t n) {
    uint64_t first = offset_;
    offset_ += (n + 3) / 4 * 4;
    return first;
  }

 private:
  uint64_t seed_ = 0, offset_ = 0;
};

// The process-wide generator used when an op is given none.
Generator& default_generator();
void manual_seed(uint64_t seed);

}  // namespace loom
