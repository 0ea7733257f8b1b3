// What the hand-written GEMMs' tests share (tests/kernels/test_gemm_blocked.cpp for the mma.sync
// kernel and its CPU mirror, test_gemm_wgmma_rules.cpp for the Hopper kernel): bf16/f16 matrices
// with NaN between rows, a case description, and one check of a product against a double-precision
// reference with the epilogue in its documented order. The product itself is the caller's.
//
// Tolerance: inputs are bf16/f16 values, held exactly by the double reference, and their products
// are exact in f32, so the only errors are f32 accumulation (about K * 2^-24 of sum |a b|, below
// 1e-5 of the output's scale for these K) and the one final rounding to the output type, at most
// u |ref| with u = 2^-8 for bf16 (8 significant bits) and 2^-11 for f16. Each element must lie
// within 2u |ref| + 1e-4 * max |ref|: twice the rounding bound, plus a floor for the accumulation
// and erf (f32) in elements that cancel to near zero. An indexing or zero-fill mistake moves an
// element by O(max |ref|) and fails by orders of magnitude.
#pragma once
#include <gtest/gtest.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>
#include "kernels/cuda/gemm_mma.h"
#if defined(LOOM_GEMM_MMA_ON_CUDA) || defined(LOOM_GEMM_WGMMA_ON_CUDA)
#include "kernels/cuda/cuda.h"
#endif

namespace loom::testing::gemm {

using kernels::bf16;
using kernels::DType;
using kernels::f16;
using kernels::GemmOperand;
using kernels::cuda::GemmEpilogue;

inline uint16_t to_bits(DType t, float v) { return t == DType::bf16 ? bf16(v).bits : f16(v).bits; }
inline double to_double(DType t, uint16_t bits) {
  if (t == DType::bf16) {
    bf16 x;
    x.bits = bits;
    return double(float(x));
  }
  f16 x;
  x.bits = bits;
  return double(float(x));
}

// A stored rows x cols matrix with leading dimension ld, allocated to exactly (rows-1)*ld + cols
// elements; the gaps between a row's end and the next row hold NaN, so reading past the logical
// columns (a K, M or N edge not zero-filled) poisons the result.
struct Matrix {
  int64_t rows, cols, ld;
  std::vector<uint16_t> v;
};

inline Matrix random_matrix(DType t, int64_t rows, int64_t cols, int64_t ld, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Matrix m{rows, cols, ld, std::vector<uint16_t>(size_t((rows - 1) * ld + cols), to_bits(t, NAN))};
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      float x = u(rng);
      if (to_double(t, to_bits(t, x)) == 0.0) x = 0.25f;  // never zeros
      m.v[size_t(r * ld + c)] = to_bits(t, x);
    }
  return m;
}

inline int64_t round8(int64_t n) { return (n + 7) / 8 * 8; }

struct Case {
  DType dtype = DType::bf16;
  int64_t M = 0, N = 0, K = 0;
  bool ta = false, tb = true;  // default: the Linear forward layout
  double alpha = 1, beta = 0;
  bool bias = false, gelu = false, residual = false;
  bool residual_is_c = false;  // residual aliases C (x + f(x) written in place)
  int64_t extra_ld = 0;        // every leading dimension is round8(row length) + extra_ld
  bool c_nan = false;          // C starts as NaN (with beta == 0 it must not be read)
};

inline std::string describe(const Case& c) {
  return std::string(kernels::dtype_name(c.dtype)) + " M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) +
         " K=" + std::to_string(c.K) + (c.ta ? " A^T" : " A") + (c.tb ? " B^T" : " B") +
         " alpha=" + std::to_string(c.alpha) + " beta=" + std::to_string(c.beta) + (c.bias ? " bias" : "") +
         (c.gelu ? " gelu" : "") + (c.residual ? (c.residual_is_c ? " residual=C" : " residual") : "") +
         (c.extra_ld ? " extra_ld=" + std::to_string(c.extra_ld) : "");
}

// Runs the product C = epilogue(op(A) op(B)) in place on the host matrices; `e` holds host pointers
// (bias, and residual: C itself or res). ADD_FAILURE/ASSERT inside are the check's failures.
using Product = std::function<void(const Case&, const Matrix& A, const Matrix& B, Matrix& C, const Matrix& bias,
                                   const Matrix& res, int64_t ldc, const GemmEpilogue& e)>;

// `product` on fresh random inputs, checked against the double reference, the padding of C (left
// alone) and, for beta == 0, that C's old contents were not read (c_nan).
inline void check(const Case& c, unsigned seed, const Product& product) {
  SCOPED_TRACE(describe(c));
  std::mt19937 rng(seed);
  const DType t = c.dtype;
  const Matrix A = c.ta ? random_matrix(t, c.K, c.M, round8(c.M) + c.extra_ld, rng)
                        : random_matrix(t, c.M, c.K, round8(c.K) + c.extra_ld, rng);
  const Matrix B = c.tb ? random_matrix(t, c.N, c.K, round8(c.K) + c.extra_ld, rng)
                        : random_matrix(t, c.K, c.N, round8(c.N) + c.extra_ld, rng);
  const int64_t ldc = round8(c.N) + c.extra_ld;
  Matrix C = random_matrix(t, c.M, c.N, ldc, rng);
  const uint16_t sentinel = to_bits(t, 12345.0f);  // C's padding: must survive
  for (int64_t r = 0; r < c.M; ++r)
    for (int64_t j = c.N; j < ldc && r * ldc + j < int64_t(C.v.size()); ++j) C.v[size_t(r * ldc + j)] = sentinel;
  if (c.c_nan)
    for (int64_t r = 0; r < c.M; ++r)
      for (int64_t j = 0; j < c.N; ++j) C.v[size_t(r * ldc + j)] = to_bits(t, NAN);
  const Matrix bias = random_matrix(t, 1, c.N, round8(c.N), rng);
  const Matrix res = random_matrix(t, c.M, c.N, round8(c.N) + 8, rng);
  const Matrix C_old = C;

  GemmEpilogue e;
  e.alpha = c.alpha;
  e.beta = c.beta;
  e.gelu = c.gelu;
  if (c.bias) e.bias = bias.v.data();
  if (c.residual) {
    e.residual = c.residual_is_c ? static_cast<const void*>(C.v.data()) : res.v.data();
    e.ld_residual = c.residual_is_c ? ldc : res.ld;
  }
  ASSERT_NO_FATAL_FAILURE(product(c, A, B, C, bias, res, ldc, e));

  // Reference, in double from the same (rounded) inputs, the epilogue in the documented order.
  const Matrix& R = c.residual_is_c ? C_old : res;
  std::vector<double> ref(size_t(c.M * c.N));
  double scale = 0;
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double a = to_double(t, c.ta ? A.v[size_t(k * A.ld + i)] : A.v[size_t(i * A.ld + k)]);
        const double b = to_double(t, c.tb ? B.v[size_t(j * B.ld + k)] : B.v[size_t(k * B.ld + j)]);
        s += a * b;
      }
      double v = c.alpha * s;
      if (c.beta != 0) v += c.beta * to_double(t, C_old.v[size_t(i * ldc + j)]);
      if (c.bias) v += to_double(t, bias.v[size_t(j)]);
      if (c.gelu) v = 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
      if (c.residual) v += to_double(t, R.v[size_t(i * R.ld + j)]);
      ref[size_t(i * c.N + j)] = v;
      scale = std::max(scale, std::abs(v));
    }

  const double u = t == DType::bf16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
  int64_t bad = 0;
  double worst = 0;
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      const double want = ref[size_t(i * c.N + j)], got = to_double(t, C.v[size_t(i * ldc + j)]);
      const double tol = 2 * u * std::abs(want) + 1e-4 * scale, err = std::abs(got - want);
      worst = std::max(worst, err / (u * std::abs(want) + 1e-4 * scale));
      if (!(err <= tol) && bad++ < 5)
        ADD_FAILURE() << "C[" << i << "][" << j << "] = " << got << ", reference " << want << " (tolerance " << tol << ")";
    }
  EXPECT_EQ(bad, 0) << "elements out of tolerance";
  for (int64_t r = 0; r < c.M; ++r)
    for (int64_t j = c.N; j < ldc && r * ldc + j < int64_t(C.v.size()); ++j)
      ASSERT_EQ(C.v[size_t(r * ldc + j)], sentinel) << "padding C[" << r << "][" << j << "] was written";
  ::testing::Test::RecordProperty("worst_error_in_rounding_units", std::to_string(worst));
}

// The case lists, each case with its own seed.
using Cases = std::vector<std::pair<Case, unsigned>>;

inline void run_all(const Cases& cases, const Product& product) {
  for (const auto& [c, seed] : cases) {
    check(c, seed, product);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

#if defined(LOOM_GEMM_MMA_ON_CUDA) || defined(LOOM_GEMM_WGMMA_ON_CUDA)
// A device copy of a host buffer, freed on scope exit.
struct DeviceBuffer {
  void* p = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(const std::vector<uint16_t>& host) : n(host.size() * 2) {
    p = kernels::cuda::device_malloc(n, kernels::cuda::current_device());
    kernels::cuda::memcpy(p, host.data(), n, kernels::cuda::CopyKind::host_to_device);
  }
  ~DeviceBuffer() { kernels::cuda::device_free(p, kernels::cuda::current_device()); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

// A Product that runs a GEMM kernel (`supported` must hold, then `run`) on device copies of the
// inputs; the result lands back in C.
template <class Supported, class Run>
Product on_cuda(Supported supported, Run run) {
  return [supported, run](const Case& c, const Matrix& A, const Matrix& B, Matrix& C, const Matrix& bias,
                          const Matrix& res, int64_t ldc, const GemmEpilogue& host_e) {
    DeviceBuffer a(A.v), b(B.v), cd(C.v), bd(bias.v), rd(res.v);
    GemmEpilogue e = host_e;
    if (e.bias) e.bias = bd.p;
    if (e.residual) e.residual = c.residual_is_c ? cd.p : rd.p;
    const GemmOperand ga{a.p, c.ta, A.ld}, gb{b.p, c.tb, B.ld};
    ASSERT_TRUE(supported(c.dtype, c.M, c.N, c.K, ga, gb, cd.p, ldc, e));
    ASSERT_NO_THROW(run(c.dtype, c.M, c.N, c.K, ga, gb, cd.p, ldc, e));
    kernels::cuda::device_synchronize();
    kernels::cuda::memcpy(C.v.data(), cd.p, cd.n, kernels::cuda::CopyKind::device_to_host);
  };
}
#endif

}  // namespace loom::testing::gemm
