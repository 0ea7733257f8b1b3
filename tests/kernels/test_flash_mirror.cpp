// The CPU mirror of the CUDA flash attention tiling (tests/kernels/flash_mirror.h) against a plain
// double-precision attention, forward and backward: with exact arithmetic the tiling (online
// softmax across key tiles, ragged last tiles, skipped causal tiles, masks, bias, a query with no
// visible key) must reproduce the reference to f32 precision; with P and dS rounded to bf16 as the
// kernel rounds them, to bf16's. What a GPU run adds is the kernel's code, checked by the gpu tests.
#include <gtest/gtest.h>
#include <cmath>
#include <random>
#include <vector>
#include "kernels/common/dtype.h"
#include "tests/kernels/flash_mirror.h"

using loom::kernels::bf16;
using loom::kernels::cpu::FlashMirrorSlice;

namespace {

struct Case {
  int64_t Sq, Sk, D;
  bool causal = false, padding = false, bias = false, hide_first_key = false;
};

struct Grads {
  std::vector<double> out, lse, dq, dk, dv;
};

// Plain attention in double: P = softmax(scale·QKᵀ + bias, masked), O = PV, and its gradients.
Grads reference(const FlashMirrorSlice& s, const std::vector<float>& dout) {
  const int64_t Sq = s.Sq, Sk = s.Sk, D = s.D;
  Grads g{std::vector<double>(size_t(Sq * D)), std::vector<double>(size_t(Sq)), std::vector<double>(size_t(Sq * D)),
          std::vector<double>(size_t(Sk * D)), std::vector<double>(size_t(Sk * D))};
  for (int64_t i = 0; i < Sq; ++i) {
    std::vector<double> p(static_cast<size_t>(Sk));
    double mx = -INFINITY;
    for (int64_t j = 0; j < Sk; ++j) {
      const bool hidden = (s.causal && j > i) || (s.key_padding && s.key_padding[j]);
      double x = 0;
      for (int64_t d = 0; d < D; ++d) x += double(s.q[i * D + d]) * s.k[j * D + d];
      x = x * s.scale + (s.bias ? s.bias[i * Sk + j] : 0.0);
      p[size_t(j)] = hidden ? -INFINITY : x;
      mx = std::max(mx, p[size_t(j)]);
    }
    double sum = 0;
    for (double& x : p) sum += (x = mx == -INFINITY ? 0.0 : std::exp(x - mx));
    g.lse[size_t(i)] = sum > 0 ? mx + std::log(sum) : INFINITY;
    for (double& x : p) x = sum > 0 ? x / sum : 0.0;
    std::vector<double> dp(static_cast<size_t>(Sk));
    double delta = 0;
    for (int64_t j = 0; j < Sk; ++j) {
      for (int64_t d = 0; d < D; ++d) {
        g.out[size_t(i * D + d)] += p[size_t(j)] * s.v[j * D + d];
        dp[size_t(j)] += double(dout[size_t(i * D + d)]) * s.v[j * D + d];
      }
      delta += p[size_t(j)] * dp[size_t(j)];
    }
    for (int64_t j = 0; j < Sk; ++j) {
      const double ds = p[size_t(j)] * (dp[size_t(j)] - delta);
      for (int64_t d = 0; d < D; ++d) {
        g.dq[size_t(i * D + d)] += ds * s.k[j * D + d] * s.scale;
        g.dk[size_t(j * D + d)] += ds * s.q[i * D + d] * s.scale;
        g.dv[size_t(j * D + d)] += p[size_t(j)] * dout[size_t(i * D + d)];
      }
    }
  }
  return g;
}

// max |got - want| / max |want|, infinities compared for equality.
double error(const std::vector<float>& got, const std::vector<double>& want) {
  double diff = 0, scale = 1e-30;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isinf(want[i])) {
      if (got[i] != want[i]) return INFINITY;
      continue;
    }
    const double d = std::abs(double(got[i]) - want[i]);
    if (!(d <= diff)) diff = d;  // a NaN propagates (std::max would drop it) and fails the check
    scale = std::max(scale, std::abs(want[i]));
  }
  return diff / scale;
}

void check(const Case& c, bool rounded, double tol) {
  std::mt19937 rng(uint32_t(c.Sq * 1000 + c.Sk * 10 + c.D));
  std::normal_distribution<float> n(0.f, 1.f);
  auto randoms = [&](int64_t count, float sd) {
    std::vector<float> x(static_cast<size_t>(count));
    for (float& v : x) v = float(bf16(n(rng) * sd));  // inputs representable in bf16, as the kernel's are
    return x;
  };
  std::vector<float> q = randoms(c.Sq * c.D, 1.f), k = randoms(c.Sk * c.D, 1.f), v = randoms(c.Sk * c.D, 1.f),
                     dout = randoms(c.Sq * c.D, 1.f), bias = randoms(c.Sq * c.Sk, 0.5f);
  std::unique_ptr<bool[]> pad(new bool[size_t(c.Sk)]);
  for (int64_t j = 0; j < c.Sk; ++j) pad[size_t(j)] = (c.padding && j % 7 == 3) || (c.hide_first_key && j == 0);
  FlashMirrorSlice s;
  s.Sq = c.Sq, s.Sk = c.Sk, s.D = c.D;
  s.q = q.data(), s.k = k.data(), s.v = v.data();
  s.scale = float(1.0 / std::sqrt(double(c.D)));
  s.causal = c.causal;
  s.key_padding = c.padding || c.hide_first_key ? pad.get() : nullptr;
  s.bias = c.bias ? bias.data() : nullptr;
  if (rounded) s.round = [](float x) { return float(bf16(x)); };

  std::vector<float> out(size_t(c.Sq * c.D)), lse(size_t(c.Sq)), dq(size_t(c.Sq * c.D)), dk(size_t(c.Sk * c.D)),
      dv(size_t(c.Sk * c.D));
  loom::kernels::cpu::flash_forward_mirror(s, out.data(), lse.data());
  loom::kernels::cpu::flash_backward_mirror(s, out.data(), lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
  const Grads want = reference(s, dout);
  const std::string what = ::testing::PrintToString(c.Sq) + "x" + ::testing::PrintToString(c.Sk) + " D" +
                           ::testing::PrintToString(c.D) + (rounded ? " bf16" : " exact");
  EXPECT_LT(error(out, want.out), tol) << what << " out";
  EXPECT_LT(error(lse, want.lse), tol) << what << " lse";
  EXPECT_LT(error(dq, want.dq), 2 * tol) << what << " dq";
  EXPECT_LT(error(dk, want.dk), 2 * tol) << what << " dk";
  EXPECT_LT(error(dv, want.dv), tol) << what << " dv";
  if (c.causal && c.hide_first_key) {  // query 0 sees no key: zeros, lse = +inf, no gradient
    EXPECT_TRUE(std::isinf(lse[0]) && lse[0] > 0);
    for (int64_t d = 0; d < c.D; ++d) EXPECT_EQ(out[size_t(d)], 0.f);
    for (int64_t d = 0; d < c.D; ++d) EXPECT_EQ(dq[size_t(d)], 0.f);
  }
}

const Case kCases[] = {
    {197, 197, 64},                               // ViT-B/16: 3 full tiles and a ragged one
    {50, 50, 128},                                // ViT-B/32's 50 tokens: one ragged tile
    {130, 130, 64, /*causal*/ true},              // causal over three tiles: skipped tiles
    {70, 130, 64, false, /*padding*/ true, /*bias*/ true},   // cross-attention, padding and bias
    {129, 65, 128, true, false, true, /*hide_first_key*/ true},  // a query with no visible key
};

}  // namespace

TEST(FlashMirror, ExactTilingMatchesTheReference) {
  for (const Case& c : kCases) check(c, false, 2e-5);
}

// bf16 rounding of P and dS (8 significant bits, relative step 2^-8 = 0.4%) over sums of up to a
// few hundred terms: errors of ~1% of the largest value.
TEST(FlashMirror, Bf16RoundingStaysWithinBf16Precision) {
  for (const Case& c : kCases) check(c, true, 2e-2);
}
