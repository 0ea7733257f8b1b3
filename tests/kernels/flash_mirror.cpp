#include "tests/kernels/flash_mirror.h"
#include <algorithm>
#include <cmath>
#include <vector>

namespace loom::kernels::cpu {
namespace {

constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

bool hidden(const FlashMirrorSlice& s, int64_t row, int64_t col) {
  return col >= s.Sk || (s.causal && col > row) || (s.key_padding && s.key_padding[col]);
}

// The score of (row, col) as the kernels form it: q·k in f32, times scale, plus bias.
float score(const FlashMirrorSlice& s, int64_t row, int64_t col) {
  float acc = 0.f;
  for (int64_t d = 0; d < s.D; ++d) acc += s.q[row * s.D + d] * s.k[col * s.D + d];
  return acc * s.scale + (s.bias ? s.bias[row * s.Sk + col] : 0.f);
}

}  // namespace

void flash_forward_mirror(const FlashMirrorSlice& s, float* out, float* lse) {
  const int64_t BQ = kFlashMirrorBlockQ, BK = kFlashMirrorBlockK, D = s.D;
  for (int64_t q0 = 0; q0 < s.Sq; q0 += BQ) {
    int64_t k_tiles = (s.Sk + BK - 1) / BK;
    if (s.causal) k_tiles = std::min(k_tiles, (q0 + BQ + BK - 1) / BK);
    for (int64_t row = q0; row < std::min(q0 + BQ, s.Sq); ++row) {
      float m = -INFINITY, l = 0.f;
      std::vector<float> o(static_cast<size_t>(D), 0.f), p(static_cast<size_t>(BK));
      for (int64_t kt = 0; kt < k_tiles; ++kt) {
        const int64_t k0 = kt * BK;
        float mx = -INFINITY;
        for (int64_t j = 0; j < BK; ++j) {
          const int64_t col = k0 + j;
          p[size_t(j)] = hidden(s, row, col) ? -INFINITY : score(s, row, col) * kLog2e;
          mx = std::max(mx, p[size_t(j)]);
        }
        const float m_new = std::max(m, mx);
        const float base = m_new == -INFINITY ? 0.f : m_new;
        const float alpha = std::exp2(m - base);
        m = m_new;
        l *= alpha;
        for (float& x : o) x *= alpha;
        for (int64_t j = 0; j < BK; ++j) {
          const float e = std::exp2(p[size_t(j)] - base);
          l += e;  // the sum takes P before rounding, the product after, as the kernel
          p[size_t(j)] = s.round(e);
        }
        for (int64_t j = 0; j < BK && k0 + j < s.Sk; ++j)
          for (int64_t d = 0; d < D; ++d) o[size_t(d)] += p[size_t(j)] * s.v[(k0 + j) * D + d];
      }
      const float inv = l > 0.f ? 1.f / l : 0.f;
      for (int64_t d = 0; d < D; ++d) out[row * D + d] = o[size_t(d)] * inv;
      lse[row] = l > 0.f ? (m + std::log2(l)) * kLn2 : INFINITY;
    }
  }
}

void flash_backward_mirror(const FlashMirrorSlice& s, const float* out, const float* lse, const float* dout, float* dq,
                           float* dk, float* dv) {
  const int64_t BQ = kFlashMirrorBlockQ, BK = kFlashMirrorBlockK, D = s.D;
  std::vector<float> delta(static_cast<size_t>(s.Sq));
  for (int64_t i = 0; i < s.Sq; ++i) {
    float acc = 0.f;
    for (int64_t d = 0; d < D; ++d) acc += out[i * D + d] * dout[i * D + d];
    delta[size_t(i)] = acc;
  }
  std::fill(dq, dq + s.Sq * D, 0.f);
  const int64_t q_tiles = (s.Sq + BQ - 1) / BQ;
  for (int64_t k0 = 0; k0 < s.Sk; k0 += BK) {
    const int64_t k_end = std::min(k0 + BK, s.Sk);
    std::vector<float> dk_acc(size_t(BK * D), 0.f), dv_acc(size_t(BK * D), 0.f);
    for (int64_t qt = s.causal ? k0 / BQ : 0; qt < q_tiles; ++qt) {
      const int64_t q0 = qt * BQ, q_end = std::min(q0 + BQ, s.Sq);
      std::vector<float> ds(size_t(BQ * BK), 0.f);  // rounded dS[q][key], the tile the kernel shares
      for (int64_t key = k0; key < k_end; ++key) {
        const int64_t kr = key - k0;
        for (int64_t row = q0; row < q_end; ++row) {
          const float p = hidden(s, row, key) ? 0.f : std::exp2(score(s, row, key) * kLog2e - lse[row] * kLog2e);
          const float pr = s.round(p);
          float dp = 0.f;
          for (int64_t d = 0; d < D; ++d) {
            dv_acc[size_t(kr * D + d)] += pr * dout[row * D + d];
            dp += s.v[key * D + d] * dout[row * D + d];
          }
          const float dsv = s.round(p * (dp - delta[size_t(row)]));
          ds[size_t((row - q0) * BK + kr)] = dsv;
          for (int64_t d = 0; d < D; ++d) dk_acc[size_t(kr * D + d)] += dsv * s.q[row * D + d];
        }
      }
      for (int64_t row = q0; row < q_end; ++row)  // this key tile's share of dQ, added once per tile
        for (int64_t d = 0; d < D; ++d) {
          float acc = 0.f;
          for (int64_t key = k0; key < k_end; ++key) acc += ds[size_t((row - q0) * BK + key - k0)] * s.k[key * D + d];
          dq[row * D + d] += acc * s.scale;
        }
    }
    for (int64_t key = k0; key < k_end; ++key)
      for (int64_t d = 0; d < D; ++d) {
        dk[key * D + d] = dk_acc[size_t((key - k0) * D + d)] * s.scale;
        dv[key * D + d] = dv_acc[size_t((key - k0) * D + d)];
      }
  }
}

}  // namespace loom::kernels::cpu
