// Counter-based randomness for the data pipeline: every draw is a pure function of (key, index), so
// results do not depend on thread scheduling or machine. Internal to data/.
#pragma once
#include <cstdint>
#include "core/rng.h"

namespace loom::data::detail {

// SplitMix64 finaliser: mixes a 64-bit value into a well-spread key.
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
inline uint64_t combine(uint64_t a, uint64_t b) { return mix64(a ^ mix64(b + 0x632BE59BD9B4E019ull)); }

// A stream of draws from Philox keyed by `key`.
struct Stream {
  uint64_t key, next = 0;
  explicit Stream(uint64_t k) : key(k) {}
  uint64_t bits64() {
    Philox4 r = philox4x32(next++, key);
    return (uint64_t(r.v[0]) << 32) | r.v[1];
  }
  double uniform() { return double(bits64() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1), 53 bits
  // Integer in [0, n) by multiply-shift (bias below n / 2^64, negligible).
  uint64_t below(uint64_t n) { return uint64_t((unsigned __int128)bits64() * n >> 64); }
};

}  // namespace loom::data::detail
