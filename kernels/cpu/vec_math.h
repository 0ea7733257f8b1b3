// exp and erf for f32 loops that the compiler can vectorise: only arithmetic, selects and bit
// casts, no library calls (std::expf/erff are scalar calls and cost 5-10x more per element).
// exp: Cephes-style range reduction and a degree-6 polynomial, within 2 ulp over its range.
// erf: Abramowitz & Stegun 7.1.26, absolute error below 2e-7 (f32 resolution near 1).
// f64 keeps the library functions: it is the reference precision.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

// Forced inline: a call in a loop body stops the loop from being vectorised.
#define LOOM_VEC_INLINE [[gnu::always_inline]] inline
// On a loop's enclosing function or lambda: inline every call in it, however large (the op lambdas).
#define LOOM_VEC_FLATTEN __attribute__((flatten))

namespace loom::kernels::cpu::vec {

LOOM_VEC_INLINE float exp(float x) {
  constexpr float hi = 88.72283935546875f, lo = -103.972084045410156f;  // beyond: inf / 0
  const float xc = x > hi ? hi : (x < lo ? lo : (x == x ? x : 0.0f));    // NaN: handled at the end
  const float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n in two factors, each a normal float over n in [-150, 128], so results near the ends
  // (large, or subnormal) come out right.
  const int32_t ni = static_cast<int32_t>(n), n1 = ni >> 1, n2 = ni - n1;
  const float y = p * std::bit_cast<float>((n1 + 127) << 23) * std::bit_cast<float>((n2 + 127) << 23);
  return x > hi ? INFINITY : (x < lo ? 0.0f : (x == x ? y : x));
}

LOOM_VEC_INLINE float erf(float x) {
  const float a = x < 0 ? -x : x;
  const float t = 1.0f / (1.0f + 0.3275911f * a);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const float y = 1.0f - p * t * vec::exp(-a * a);
  return x < 0 ? -y : y;
}

// Row reductions in kLanes independent partial results, folded pairwise at the end. One running
// sum is a chain of dependent adds that IEEE order forbids the compiler to reorder (~4 cycles per
// element); kLanes chains vectorise. The order is fixed by n alone, never by the thread count.
inline constexpr int kLanes = 16;

// sum over j in [0, n) of f(j)
template <class A, class F>
LOOM_VEC_INLINE A sum_lanes(int64_t n, F f) {
  A acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += f(j + l);
  for (int l = 0; j + l < n; ++l) acc[l] += f(j + l);
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

// max over j in [0, n) of f(j), -inf for n = 0; NaN entries are passed over, as std::max does.
template <class A, class F>
LOOM_VEC_INLINE A max_lanes(int64_t n, F f) {
  A acc[kLanes];
  for (int l = 0; l < kLanes; ++l) acc[l] = -INFINITY;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) { const A v = f(j + l); acc[l] = acc[l] < v ? v : acc[l]; }
  for (int l = 0; j + l < n; ++l) { const A v = f(j + l); acc[l] = acc[l] < v ? v : acc[l]; }
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] = acc[l] < acc[l + w] ? acc[l + w] : acc[l];
  return acc[0];
}

// The scalar functions the kernels call: the vectorisable ones for f32, the library for f64.
LOOM_VEC_INLINE float exp_of(float x) { return vec::exp(x); }
LOOM_VEC_INLINE double exp_of(double x) { return std::exp(x); }
LOOM_VEC_INLINE float erf_of(float x) { return vec::erf(x); }
LOOM_VEC_INLINE double erf_of(double x) { return std::erf(x); }

}  // namespace loom::kernels::cpu::vec
