// The CPU mirror of the tensor-core GEMM (tests/kernels/gemm_blocked_mirror.h) against a plain
// double-precision reference, and the rules of cuda::gemm_mma_layout_supported. No GPU needed: the
// mirror walks the kernel's own index maps (tiles, copies, ldmatrix addresses, fragment ownership,
// epilogue), so these tests check the kernel's tiling and edge math on any machine.
//
// Compiled with -DLOOM_GEMM_MMA_ON_CUDA (and linked with loom_kernels_cuda), the same cases also run
// cuda::gemm_mma itself on the GPU against the same reference (suite GemmMmaCuda, skipped visibly
// where there is no GPU): that is the check of the kernel's numbers, which the mirror cannot give.
// The reference, the tolerance and its reasoning: tests/kernels/gemm_check.h.
#include <gtest/gtest.h>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>
#include "tests/kernels/gemm_blocked_mirror.h"
#include "kernels/cuda/gemm_mma.h"
#include "tests/kernels/gemm_check.h"

using loom::kernels::bf16;
using loom::kernels::DType;
using loom::kernels::f16;
using loom::kernels::GemmOperand;
using loom::kernels::cpu::gemm_blocked_mirror;
using loom::kernels::cuda::GemmEpilogue;
using loom::kernels::cuda::gemm_mma_layout_supported;
using namespace loom::testing::gemm;

namespace {

enum class Backend { mirror, cuda };

// The product each backend runs: the CPU mirror, or cuda::gemm_mma on device copies.
Product product_of(Backend backend) {
#ifdef LOOM_GEMM_MMA_ON_CUDA
  if (backend == Backend::cuda) return on_cuda(loom::kernels::cuda::gemm_mma_supported, loom::kernels::cuda::gemm_mma);
#endif
  return [backend](const Case& c, const Matrix& A, const Matrix& B, Matrix& C, const Matrix&, const Matrix&, int64_t ldc,
                   const GemmEpilogue& e) {
    ASSERT_EQ(backend, Backend::mirror) << "built without LOOM_GEMM_MMA_ON_CUDA";
    ASSERT_NO_THROW(gemm_blocked_mirror(c.dtype, c.M, c.N, c.K, GemmOperand{A.v.data(), c.ta, A.ld},
                                        GemmOperand{B.v.data(), c.tb, B.ld}, C.v.data(), ldc, e));
  };
}

constexpr DType kTypes[] = {DType::bf16, DType::f16};
constexpr bool kLayouts[][2] = {{false, true}, {false, false}, {true, false}, {true, true}};  // (ta, tb)

// The case lists (each case with its own seed): the mirror and (where built) the GPU run the same.

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

void run_all(const Cases& cases, Backend backend) { loom::testing::gemm::run_all(cases, product_of(backend)); }

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
