// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3").
// Counter-based: element i of a draw depends only on (seed, offset + i), so CPU threads and
// CUDA threads produce the same numbers in any order and any count.
#pragma once
#include <cmath>
#include <cstdint>
#include "kernels/common/dtype.h"

namespace loom::kernels {

struct Philox4 { uint32_t v[4]; };

LOOM_HD inline Philox4 philox4x32(uint64_t counter, uint64_t key) {
  uint32_t c0 = uint32_t(counter), c1 = uint32_t(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = uint64_t(0xD2511F53u) * c0, p1 = uint64_t(0xCD9E8D57u) * c2;
    uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0, n1 = uint32_t(p1);
    uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ k1, n3 = uint32_t(p0);
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// Uniform in [0, 1) with 24 bits, for element `index` of the stream (seed, offset): f32, bf16, f16
// and dropout masks (f64 draws use philox_uniform_f64).
LOOM_HD inline float philox_uniform(uint64_t seed, uint64_t offset, uint64_t index) {
  uint64_t i = offset + index;
  Philox4 r = philox4x32(i >> 2, seed);
  return float(r.v[i & 3] >> 8) * (1.0f / 16777216.0f);
}

// Uniform in [0, 1) with 53 bits, for element `index` of the f64 stream (seed, offset): 27 + 26 bits
// from two words of block (i >> 1) under its own key, so f64 draws never share a Philox block with
// the 24-bit uniforms or the normals. Element i takes words (i & 1) * 2 and (i & 1) * 2 + 1, and
// Generator::reserve rounds every draw to 4 counters (2 blocks here), so successive draws are disjoint.
LOOM_HD inline double philox_uniform_f64(uint64_t seed, uint64_t offset, uint64_t index) {
  uint64_t i = offset + index;
  Philox4 r = philox4x32(i >> 1, seed ^ 0xD1B54A32D192ED03ull);
  uint64_t hi = r.v[(i & 1) * 2] >> 5, lo = r.v[(i & 1) * 2 + 1] >> 6;
  return double((hi << 26) | lo) * (1.0 / 9007199254740992.0);  // 2^-53
}

// Standard normal for element `index`, by Box-Muller over a pair of uniforms from one counter.
LOOM_HD inline float philox_normal(uint64_t seed, uint64_t offset, uint64_t index) {
  uint64_t i = offset + index;
  Philox4 r = philox4x32(i >> 1, seed ^ 0x9E3779B97F4A7C15ull);
  uint32_t a = r.v[(i & 1) * 2], b = r.v[(i & 1) * 2 + 1];
  float u1 = (float(a >> 8) + 1.0f) * (1.0f / 16777216.0f);  // (0, 1]
  float u2 = float(b >> 8) * (1.0f / 16777216.0f);
  return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853071795864f * u2);
}

}  // namespace loom::kernels
