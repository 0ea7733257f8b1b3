// The CPU mirror of the tensor-core GEMM (kernels/cpu/gemm_blocked.h) against a plain
// double-precision reference, and the rules of cuda::gemm_mma_layout_supported. No GPU needed: the
// mirror walks the kernel's own index maps (tiles, copies, ldmatrix addresses, fragment ownership,
// epilogue), so these tests check the kernel's tiling and edge math on any machine.
//
// Compiled with -DLOOM_GEMM_MMA_ON_CUDA (and linked with loom_kernels_cuda), the same cases also run
// cuda::gemm_mma itself on the GPU against the same reference (suite GemmMmaCuda, skipped visibly
// where there is no GPU): that is the check of the kernel's numbers, which the mirror cannot give.
//
// Tolerance: inputs are bf16/f16 values, held exactly by the double reference, and their products
// are exact in f32, so the only errors are f32 accumulation (about K * 2^-24 of sum |a b|, below
// 1e-5 of the output's scale for these K) and the one final rounding to the output type, at most
// u |ref| with u = 2^-8 for bf16 (8 significant bits) and 2^-11 for f16. Each element must lie
// within 2u |ref| + 1e-4 * max |ref|: twice the rounding bound, plus a floor for the accumulation
// and erf (f32) in elements that cancel to near zero. An indexing or zero-fill mistake moves an
// element by O(max |ref|) and fails by orders of magnitude.
#include <gtest/gtest.h>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>
#include "kernels/cpu/gemm_blocked.h"
#include "kernels/cuda/gemm_mma.h"
#ifdef LOOM_GEMM_MMA_ON_CUDA
#include "kernels/cuda/cuda.h"
#endif

using loom::kernels::bf16;
using loom::kernels::DType;
using loom::kernels::f16;
using loom::kernels::GemmOperand;
using loom::kernels::cpu::gemm_blocked_mirror;
using loom::kernels::cuda::GemmEpilogue;
using loom::kernels::cuda::gemm_mma_layout_supported;

namespace {

uint16_t to_bits(DType t, float v) { return t == DType::bf16 ? bf16(v).bits : f16(v).bits; }
double to_double(DType t, uint16_t bits) {
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

Matrix random_matrix(DType t, int64_t rows, int64_t cols, int64_t ld, std::mt19937& rng) {
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

int64_t round8(int64_t n) { return (n + 7) / 8 * 8; }

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

std::string describe(const Case& c) {
  return std::string(loom::kernels::dtype_name(c.dtype)) + " M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) +
         " K=" + std::to_string(c.K) + (c.ta ? " A^T" : " A") + (c.tb ? " B^T" : " B") +
         " alpha=" + std::to_string(c.alpha) + " beta=" + std::to_string(c.beta) + (c.bias ? " bias" : "") +
         (c.gelu ? " gelu" : "") + (c.residual ? (c.residual_is_c ? " residual=C" : " residual") : "");
}

enum class Backend { mirror, cuda };

#ifdef LOOM_GEMM_MMA_ON_CUDA
namespace kc = loom::kernels::cuda;

// A device copy of a host buffer, freed on scope exit.
struct DeviceBuffer {
  void* p = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(const std::vector<uint16_t>& host) : n(host.size() * 2) {
    p = kc::device_malloc(n, kc::current_device());
    kc::memcpy(p, host.data(), n, kc::CopyKind::host_to_device);
  }
  ~DeviceBuffer() { kc::device_free(p, kc::current_device()); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

// cuda::gemm_mma on device copies of the inputs; the result lands back in C.
void run_on_cuda(const Case& c, const Matrix& A, const Matrix& B, Matrix& C, const Matrix& bias, const Matrix& res,
                 int64_t ldc, GemmEpilogue e) {
  DeviceBuffer a(A.v), b(B.v), cd(C.v), bd(bias.v), rd(res.v);
  if (e.bias) e.bias = bd.p;
  if (e.residual) e.residual = c.residual_is_c ? cd.p : rd.p;
  const GemmOperand ga{a.p, c.ta, A.ld}, gb{b.p, c.tb, B.ld};
  ASSERT_TRUE(kc::gemm_mma_supported(c.dtype, c.M, c.N, c.K, ga, gb, cd.p, ldc, e));
  kc::gemm_mma(c.dtype, c.M, c.N, c.K, ga, gb, cd.p, ldc, e);
  kc::device_synchronize();
  kc::memcpy(C.v.data(), cd.p, cd.n, kc::CopyKind::device_to_host);
}
#endif

// Runs the mirror (or the kernel) on fresh random inputs and checks it against the double
// reference, the padding of C (left alone) and, for beta == 0, that C's old contents were not read.
void check(const Case& c, unsigned seed, Backend backend) {
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
  Matrix bias = random_matrix(t, 1, c.N, round8(c.N), rng);
  Matrix res = random_matrix(t, c.M, c.N, round8(c.N) + 8, rng);
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
  const Matrix& R = c.residual_is_c ? C_old : res;

  if (backend == Backend::mirror) {
    ASSERT_NO_THROW(gemm_blocked_mirror(t, c.M, c.N, c.K, GemmOperand{A.v.data(), c.ta, A.ld},
                                        GemmOperand{B.v.data(), c.tb, B.ld}, C.v.data(), ldc, e));
  } else {
#ifdef LOOM_GEMM_MMA_ON_CUDA
    ASSERT_NO_FATAL_FAILURE(run_on_cuda(c, A, B, C, bias, res, ldc, e));
#else
    FAIL() << "built without LOOM_GEMM_MMA_ON_CUDA";
#endif
  }

  // Reference, in double from the same (rounded) inputs, the epilogue in the documented order.
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

constexpr DType kTypes[] = {DType::bf16, DType::f16};
constexpr bool kLayouts[][2] = {{false, true}, {false, false}, {true, false}, {true, true}};  // (ta, tb)

// The case lists, each case with its own seed; the mirror and (where built) the GPU run the same.
using Cases = std::vector<std::pair<Case, unsigned>>;

// Every layout and dtype on a problem made of whole tiles.
Cases square_tile_multiples() {
  Cases out;
  for (DType t : kTypes)
    for (auto [ta, tb] : kLayouts) {
      Case c;
      c.dtype = t, c.M = 256, c.N = 256, c.K = 128, c.ta = ta, c.tb = tb;
      out.push_back({c, unsigned(100 + out.size())});
    }
  return out;
}

// More k-tiles than pipeline slots, so the 4-slot ring wraps several times.
Cases long_k() {
  Cases out;
  for (DType t : kTypes)
    for (auto [ta, tb] : kLayouts) {
      Case c;
      c.dtype = t, c.M = 128, c.N = 128, c.K = 32 * 9 + 5, c.ta = ta, c.tb = tb;
      out.push_back({c, unsigned(200 + out.size())});
    }
  return out;
}

// M, N not multiples of 128, K not a multiple of 32 (nor of 8), single rows and columns.
Cases ragged() {
  struct Shape { int64_t M, N, K; };
  const Shape shapes[] = {{130, 67, 45}, {1, 200, 64}, {200, 1, 40}, {130, 67, 8}, {129, 129, 33},
                          {7, 5, 1},     {3, 300, 17}, {127, 9, 100}};
  Cases out;
  for (DType t : kTypes)
    for (auto [ta, tb] : kLayouts)
      for (const Shape& sh : shapes) {
        Case c;
        c.dtype = t, c.M = sh.M, c.N = sh.N, c.K = sh.K, c.ta = ta, c.tb = tb;
        out.push_back({c, unsigned(300 + out.size())});
      }
  return out;
}

// More than kGroupM (8) M-tiles and several N-tiles: the grouped CTA raster and its last, partial group.
Cases many_tiles() {
  Cases out;
  for (DType t : kTypes) {
    Case c;
    c.dtype = t, c.M = 1100, c.N = 300, c.K = 40;
    out.push_back({c, unsigned(400 + out.size())});
  }
  return out;
}

// Leading dimensions beyond the row length (views into wider buffers); the gaps hold NaN.
Cases wide_leading_dimensions() {
  Cases out;
  for (DType t : kTypes)
    for (auto [ta, tb] : kLayouts) {
      Case c;
      c.dtype = t, c.M = 70, c.N = 140, c.K = 50, c.ta = ta, c.tb = tb, c.extra_ld = 24;
      out.push_back({c, unsigned(500 + out.size())});
    }
  return out;
}

Cases each_epilogue_option() {
  Cases out;
  for (DType t : kTypes)
    for (int option = 0; option < 6; ++option) {
      Case c;
      c.dtype = t, c.M = 130, c.N = 67, c.K = 45;
      switch (option) {
        case 0: c.alpha = 0.375; break;
        case 1: c.beta = 0.75; break;
        case 2: c.alpha = -1.5, c.beta = -0.5; break;
        case 3: c.bias = true; break;
        case 4: c.gelu = true; break;
        case 5: c.residual = true; break;
      }
      out.push_back({c, unsigned(600 + out.size())});
    }
  return out;
}

Cases all_epilogue_options() {
  Cases out;
  for (DType t : kTypes)
    for (auto [ta, tb] : kLayouts) {
      Case c;
      c.dtype = t, c.M = 131, c.N = 133, c.K = 70, c.ta = ta, c.tb = tb;
      c.alpha = 0.5, c.beta = 0.25, c.bias = true, c.gelu = true, c.residual = true;
      out.push_back({c, unsigned(700 + out.size())});
    }
  return out;
}

// x + f(x) in place: the residual is C itself.
Cases residual_is_c() {
  Cases out;
  for (DType t : kTypes) {
    Case c;
    c.dtype = t, c.M = 150, c.N = 70, c.K = 40, c.bias = true, c.gelu = true, c.residual = true, c.residual_is_c = true;
    out.push_back({c, unsigned(800 + out.size())});
  }
  return out;
}

// C starts as NaN; with beta == 0 it must not be read.
Cases beta_zero_c_nan() {
  Cases out;
  for (DType t : kTypes) {
    Case c;
    c.dtype = t, c.M = 40, c.N = 24, c.K = 16, c.c_nan = true, c.bias = true;
    out.push_back({c, unsigned(900 + out.size())});
  }
  return out;
}

void run_all(const Cases& cases, Backend backend) {
  for (const auto& [c, seed] : cases) {
    check(c, seed, backend);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

}  // namespace

// The CPU suites are left out of the GPU build (-DLOOM_GEMM_MMA_ON_CUDA), so that the two binaries
// made from this file register no test name twice.
#ifndef LOOM_GEMM_MMA_ON_CUDA
TEST(GemmBlockedMirror, SquareTileMultiples) { run_all(square_tile_multiples(), Backend::mirror); }
TEST(GemmBlockedMirror, LongKWrapsThePipeline) { run_all(long_k(), Backend::mirror); }
TEST(GemmBlockedMirror, RaggedShapes) { run_all(ragged(), Backend::mirror); }
TEST(GemmBlockedMirror, ManyTilesGroupedRaster) { run_all(many_tiles(), Backend::mirror); }
TEST(GemmBlockedMirror, WideLeadingDimensions) { run_all(wide_leading_dimensions(), Backend::mirror); }
TEST(GemmBlockedMirror, EachEpilogueOption) { run_all(each_epilogue_option(), Backend::mirror); }
TEST(GemmBlockedMirror, AllEpilogueOptionsTogetherInEveryLayout) { run_all(all_epilogue_options(), Backend::mirror); }
TEST(GemmBlockedMirror, ResidualMayBeC) { run_all(residual_is_c(), Backend::mirror); }
TEST(GemmBlockedMirror, BetaZeroDoesNotReadC) { run_all(beta_zero_c_nan(), Backend::mirror); }

#endif  // !LOOM_GEMM_MMA_ON_CUDA

#ifdef LOOM_GEMM_MMA_ON_CUDA
#define LOOM_NEED_GPU() \
  if (loom::kernels::cuda::device_count() == 0) GTEST_SKIP() << "no GPU"
TEST(GemmMmaCuda, SquareTileMultiples) { LOOM_NEED_GPU(); run_all(square_tile_multiples(), Backend::cuda); }
TEST(GemmMmaCuda, LongKWrapsThePipeline) { LOOM_NEED_GPU(); run_all(long_k(), Backend::cuda); }
TEST(GemmMmaCuda, RaggedShapes) { LOOM_NEED_GPU(); run_all(ragged(), Backend::cuda); }
TEST(GemmMmaCuda, ManyTilesGroupedRaster) { LOOM_NEED_GPU(); run_all(many_tiles(), Backend::cuda); }
TEST(GemmMmaCuda, WideLeadingDimensions) { LOOM_NEED_GPU(); run_all(wide_leading_dimensions(), Backend::cuda); }
TEST(GemmMmaCuda, EachEpilogueOption) { LOOM_NEED_GPU(); run_all(each_epilogue_option(), Backend::cuda); }
TEST(GemmMmaCuda, AllEpilogueOptionsTogetherInEveryLayout) { LOOM_NEED_GPU(); run_all(all_epilogue_options(), Backend::cuda); }
TEST(GemmMmaCuda, ResidualMayBeC) { LOOM_NEED_GPU(); run_all(residual_is_c(), Backend::cuda); }
TEST(GemmMmaCuda, BetaZeroDoesNotReadC) { LOOM_NEED_GPU(); run_all(beta_zero_c_nan(), Backend::cuda); }
#endif

#ifndef LOOM_GEMM_MMA_ON_CUDA
TEST(GemmBlockedMirror, RejectsWhatTheKernelDoesNotTake) {
  std::vector<uint16_t> a(64 * 64, 0), b(64 * 64, 0), c(64 * 64, 0);
  const GemmEpilogue e;
  EXPECT_THROW(gemm_blocked_mirror(DType::bf16, 8, 8, 9, GemmOperand{a.data(), false, 9},
                                   GemmOperand{b.data(), true, 16}, c.data(), 8, e),
               std::invalid_argument);
  EXPECT_THROW(gemm_blocked_mirror(DType::f32, 8, 8, 8, GemmOperand{a.data(), false, 8},
                                   GemmOperand{b.data(), true, 8}, c.data(), 8, e),
               std::invalid_argument);
}

TEST(GemmMmaLayoutSupported, Rules) {
  alignas(16) static uint16_t buf[4096];
  const void* p = buf;
  const void* off = buf + 1;  // 2 bytes off 16-byte alignment
  static constexpr int64_t M = 100, N = 60, K = 40;
  auto ok = [&](DType t, GemmOperand A, GemmOperand B, const void* C, int64_t ldc, const GemmEpilogue& e,
                int64_t m = 100, int64_t n = 60, int64_t k = 40) {  // M, N, K
    return gemm_mma_layout_supported(t, m, n, k, A, B, C, ldc, e);
  };
  const GemmEpilogue none;
  const GemmOperand A{p, false, 40}, B{p, true, 40};  // Linear forward: A [M][K], B [N][K]
  EXPECT_TRUE(ok(DType::bf16, A, B, p, 64, none));
  EXPECT_TRUE(ok(DType::f16, A, B, p, 64, none));
  // Every layout, with lds at least the stored row lengths (A^T: M, B: N).
  EXPECT_TRUE(ok(DType::bf16, GemmOperand{p, true, 104}, GemmOperand{p, false, 64}, p, 64, none));
  EXPECT_TRUE(ok(DType::bf16, GemmOperand{p, false, 40}, GemmOperand{p, false, 64}, p, 64, none));
  EXPECT_TRUE(ok(DType::bf16, GemmOperand{p, true, 104}, GemmOperand{p, true, 40}, p, 64, none));
  // dtype
  for (DType t : {DType::f32, DType::f64, DType::i32, DType::i64, DType::u8, DType::boolean})
    EXPECT_FALSE(ok(t, A, B, p, 64, none)) << loom::kernels::dtype_name(t);
  // empty problems
  EXPECT_FALSE(ok(DType::bf16, A, B, p, 64, none, 0, N, K));
  EXPECT_FALSE(ok(DType::bf16, A, B, p, 64, none, M, 0, K));
  EXPECT_FALSE(ok(DType::bf16, A, B, p, 64, none, M, N, 0));
  EXPECT_TRUE(ok(DType::bf16, GemmOperand{p, false, 8}, GemmOperand{p, true, 8}, p, 8, none, 1, 1, 1));
  // alignment of A, B, C; null pointers
  EXPECT_FALSE(ok(DType::bf16, GemmOperand{off, false, 40}, B, p, 64, none));
  EXPECT_FALSE(ok(DType::bf16, A, GemmOperand{off, true, 40}, p, 64, none));
  EXPECT_FALSE(ok(DType::bf16, A, B, off, 64, none));
  EXPECT_FALSE(ok(DType::bf16, GemmOperand{nullptr, false, 40}, B, p, 64, none));
  EXPECT_FALSE(ok(DType::bf16, A, B, nullptr, 64, none));
  // leading dimensions: multiples of 8, at least the stored row length
  EXPECT_FALSE(ok(DType::bf16, GemmOperand{p, false, 44}, B, p, 64, none));
  EXPECT_FALSE(ok(DType::bf16, A, GemmOperand{p, true, 44}, p, 64, none));
  EXPECT_FALSE(ok(DType::bf16, A, B, p, 68, none));
  EXPECT_FALSE(ok(DType::bf16, GemmOperand{p, false, 32}, B, p, 64, none));   // < K
  EXPECT_FALSE(ok(DType::bf16, GemmOperand{p, true, 96}, B, p, 64, none));    // A^T: < M
  EXPECT_FALSE(ok(DType::bf16, A, GemmOperand{p, false, 56}, p, 64, none));   // B: < N
  EXPECT_FALSE(ok(DType::bf16, A, B, p, 56, none));                           // ldc < N
  EXPECT_FALSE(ok(DType::bf16, A, GemmOperand{p, true, -40}, p, 64, none));
  // bias and residual
  GemmEpilogue e;
  e.bias = p;
  EXPECT_TRUE(ok(DType::bf16, A, B, p, 64, e));
  e.bias = off;
  EXPECT_FALSE(ok(DType::bf16, A, B, p, 64, e));
  e = GemmEpilogue{};
  e.gelu = true, e.alpha = 2, e.beta = 3;
  EXPECT_TRUE(ok(DType::bf16, A, B, p, 64, e));
  e.residual = p, e.ld_residual = 64;
  EXPECT_TRUE(ok(DType::bf16, A, B, p, 64, e));
  e.ld_residual = 60;
  EXPECT_FALSE(ok(DType::bf16, A, B, p, 64, e));
  e.ld_residual = 56;  // < N
  EXPECT_FALSE(ok(DType::bf16, A, B, p, 64, e));
  e.ld_residual = 64, e.residual = off;
  EXPECT_FALSE(ok(DType::bf16, A, B, p, 64, e));
  // the 1-D grid: ceil(M/128) * ceil(N/128) < 2^31
  const int64_t big = int64_t(1) << 40;
  EXPECT_FALSE(ok(DType::bf16, GemmOperand{p, false, 8}, GemmOperand{p, true, 8}, p, big, none, big, big, 8));
}

// The index maps the kernel and the mirror share: every CTA maps to its own tile, every ldmatrix
// row address is 16-byte aligned and inside the written columns, shared-memory sizes as documented.
TEST(GemmMmaMap, TilesAndSharedMemory) {
  using namespace loom::kernels::cuda::mma_map;
  for (int64_t m_tiles : {1, 3, 8, 9, 17})
    for (int64_t n_tiles : {1, 2, 5}) {
      std::vector<int> seen(size_t(m_tiles * n_tiles), 0);
      for (int64_t pid = 0; pid < m_tiles * n_tiles; ++pid) {
        int64_t tm, tn;
        cta_tile(pid, m_tiles, n_tiles, tm, tn);
        ASSERT_TRUE(tm >= 0 && tm < m_tiles && tn >= 0 && tn < n_tiles);
        ++seen[size_t(tm * n_tiles + tn)];
      }
      for (int s : seen) EXPECT_EQ(s, 1);
    }
  EXPECT_EQ(smem_bytes(false, true), 81920);  // Linear forward
  EXPECT_EQ(smem_bytes(false, false), 75776);
  EXPECT_EQ(smem_bytes(true, true), 75776);
  EXPECT_EQ(smem_bytes(true, false), 69632);
  // Padding: the 8 rows of one ldmatrix 8x8 matrix start in 8 different 16-byte bank groups
  // (shared memory: 32 banks of 4 bytes, so 8 groups per 128 bytes): no bank conflicts.
  for (bool k_major : {true, false}) {
    std::vector<int> group(8, 0);
    for (int r = 0; r < 8; ++r) ++group[size_t(r * tile_stride(k_major) * 2 % 128 / 16)];
    for (int g : group) EXPECT_EQ(g, 1) << (k_major ? "K-major" : "MN-major");
  }
}
#endif  // !LOOM_GEMM_MMA_ON_CUDA
