// The hand-written tensor-core GEMM for bf16/f16 (gemm_mma.cu, sm_80 and newer): its host API,
// the rules for which problems it takes, and its blocking, written once here so the CPU mirror
// (tests/kernels/gemm_blocked_mirror.h) walks exactly the indices the kernel walks. Includable without CUDA
// headers, like kernels/cuda/cuda.h.
//
// Semantics are those of loom::kernels::cuda::gemm (gemm.cu) plus a fused epilogue: row-major
//   C[M][N] = residual + gelu?( alpha * op(A)[M][K] · op(B)[K][N] + beta * C + bias[N] )
// in that order, f32 accumulation, every operand of `dtype` (bf16 or f16), rounded to `dtype` once
// at the end. Each GemmOperand is row-major storage with leading dimension `ld`; `trans` means the
// stored matrix is used transposed. All four layouts run (A [M][K] or [K][M], B [K][N] or [N][K]);
// a Linear forward is A not transposed, B transposed (the weight [out, in]).
#pragma once
#include <cmath>
#include <cstdint>
#include "kernels/common/dtype.h"
#include "kernels/common/kernel_enums.h"

namespace loom::kernels::cuda {

// The epilogue, applied per output element in this order, in f32:
//   v = fma(alpha, acc, beta * C_old)   (C is read only when beta != 0, so a NaN in C with beta == 0
//                                        does not propagate, as in BLAS)
//   v += bias[col]                      (bias: length N, of dtype; nullptr = none)
//   v = 0.5 v (1 + erf(v / sqrt 2))     (gelu)
//   v += residual[row * ld_residual + col]  (same shape as C, of dtype; may equal C with ld_residual == ldc)
//   C = round_to_dtype(v)
struct GemmEpilogue {
  double alpha = 1, beta = 0;
  const void* bias = nullptr;
  bool gelu = false;
  const void* residual = nullptr;
  int64_t ld_residual = 0;
};

// The kernel's blocking. LOOM_HD functions are compiled for the device in gemm_mma.cu and for the
// host in the CPU mirror, so the two cannot drift apart.
namespace mma_map {

constexpr int kBM = 128, kBN = 128, kBK = 32;  // CTA tile (M x N) and k-tile
constexpr int kStages = 4;                      // cp.async pipeline depth
constexpr int kCtaThreads = 256;                   // 8 warps
constexpr int kWarpsM = 2, kWarpsN = 4;         // warp grid over the CTA tile
constexpr int kWarpM = kBM / kWarpsM;           // 64: warp tile rows
constexpr int kWarpN = kBN / kWarpsN;           // 32: warp tile cols
constexpr int kMmaM = 16, kMmaN = 8, kMmaK = 16;  // mma.sync.m16n8k16
constexpr int kMTiles = kWarpM / kMmaM;         // 4 m16 fragments per warp
constexpr int kNTiles = kWarpN / kMmaN;         // 4 n8 fragments per warp
constexpr int kKSteps = kBK / kMmaK;            // 2 k16 steps per k-tile
constexpr int kChunk = 8;                       // elements per 16-byte cp.async
constexpr int kPad = 8;                         // elements of padding per shared-memory row
constexpr int kGroupM = 8;                      // CTA raster: 8 M-tiles walked together (L2 reuse)

// A shared-memory tile holds one operand's k-tile as the operand is stored in global memory:
// "K-major" (K contiguous: A not transposed, B transposed) is [128 rows of M or N][32 k] and
// "MN-major" (A transposed, B not transposed) is [32 rows of k][128 of M or N]. Each row is padded
// by 8 elements (16 bytes), which makes the 8 row addresses of every ldmatrix 8x8 matrix fall in
// 8 different groups of 4 banks (K-major row stride 80 B, MN-major 272 B).
LOOM_HD constexpr int tile_rows(bool k_major) { return k_major ? kBM : kBK; }
LOOM_HD constexpr int tile_cols(bool k_major) { return k_major ? kBK : kBM; }
LOOM_HD constexpr int tile_stride(bool k_major) { return tile_cols(k_major) + kPad; }
LOOM_HD constexpr int tile_elems(bool k_major) { return tile_rows(k_major) * tile_stride(k_major); }
constexpr int kChunksPerTile = kBM * kBK / kChunk;          // 512
constexpr int kChunksPerThread = kChunksPerTile / kCtaThreads;  // 2
static_assert(kBM == kBN, "one tile geometry serves A and B");
static_assert(kChunksPerTile % kCtaThreads == 0, "every thread copies the same number of chunks");

// Dynamic shared memory of the kernel for a layout: kStages stages of an A tile and a B tile.
LOOM_HD constexpr int smem_bytes(bool a_trans, bool b_trans) {
  return kStages * (tile_elems(!a_trans) + tile_elems(b_trans)) * 2;
}

// Thread `tid` copies chunks tid and tid + 256 of each tile, every k-tile.
LOOM_HD constexpr int chunk_index(int tid, int i) { return tid + i * kCtaThreads; }
struct Pos { int64_t row, col; };
// Where chunk c starts inside the tile (row, element column); consecutive threads take
// consecutive 16-byte chunks along a row.
LOOM_HD inline Pos chunk_pos(bool k_major, int c) {
  const int per_row = tile_cols(k_major) / kChunk;  // 4 or 16
  return {c / per_row, (c % per_row) * kChunk};
}
// The chunk's first element in the stored operand (row, col of the row-major storage) for k-tile
// kt of the CTA whose tile along M (for A) or N (for B) starts at mn0.
LOOM_HD inline Pos chunk_global(bool k_major, int64_t mn0, int64_t kt, Pos in_tile) {
  return k_major ? Pos{mn0 + in_tile.row, kt * kBK + in_tile.col} : Pos{kt * kBK + in_tile.row, mn0 + in_tile.col};
}
// How many of the chunk's 8 elements lie inside the stored rows x cols matrix (0..8): the copy
// reads that many (2 bytes each) and zero-fills the rest of the 16 bytes. Ragged M, N and K all
// come through here: rows past the end read nothing, a row that crosses K reads only up to K.
LOOM_HD inline int chunk_valid(Pos g, int64_t rows, int64_t cols) {
  if (g.row >= rows || g.col >= cols) return 0;
  const int64_t left = cols - g.col;
  return left < kChunk ? int(left) : kChunk;
}

// Warp w of the CTA owns rows warp_m*64.. and cols warp_n*32.. of the CTA tile.
LOOM_HD constexpr int warp_m_of(int warp) { return warp / kWarpsN; }
LOOM_HD constexpr int warp_n_of(int warp) { return warp % kWarpsN; }

// ldmatrix.x4 row addresses (element offset within one stage's tile) that lane `lane` supplies.
// Lanes 8j..8j+7 address the 8 rows of 8x8 matrix j, which lands in register j of every lane.
// A (m16 fragment mt, k16 step ks): registers a0..a3 of mma.m16n8k16 are the 8x8 blocks
// (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15).
//   K-major [m][k], plain ldmatrix: row m = lane % 16, column k = (lane / 16) * 8.
//   MN-major [k][m], ldmatrix.trans: row k = lane % 8 + (lane / 16) * 8, column m = (lane / 8 % 2) * 8.
LOOM_HD inline int a_frag_offset(bool a_trans, int warp_m, int mt, int ks, int lane) {
  const int m = warp_m * kWarpM + mt * kMmaM, k = ks * kMmaK;
  if (!a_trans) return (m + (lane & 15)) * tile_stride(true) + k + (lane >> 4) * 8;
  return (k + (lane & 7) + (lane >> 4) * 8) * tile_stride(false) + m + ((lane >> 3) & 1) * 8;
}
// B (n8 fragments 2np and 2np+1, k16 step ks): the four registers are b0, b1 of fragment 2np, then
// b0, b1 of fragment 2np+1; b0 is k 0-7 and b1 is k 8-15, each for 8 columns n.
//   K-major [n][k], plain ldmatrix: row n = lane % 8 + (lane / 16) * 8, column k = (lane / 8 % 2) * 8.
//   MN-major [k][n], ldmatrix.trans: row k = lane % 8 + (lane / 8 % 2) * 8, column n = (lane / 16) * 8.
LOOM_HD inline int b_frag_offset(bool b_trans, int warp_n, int np, int ks, int lane) {
  const int n = warp_n * kWarpN + np * 2 * kMmaN, k = ks * kMmaK;
  if (b_trans) return (n + (lane & 7) + (lane >> 4) * 8) * tile_stride(true) + k + ((lane >> 3) & 1) * 8;
  return (k + (lane & 7) + ((lane >> 3) & 1) * 8) * tile_stride(false) + n + (lane >> 4) * 8;
}

// Accumulator ownership (mma.m16n8k16 f32 C/D fragment): register i (0..3) of fragment (mt, nt) of
// lane `lane` holds row lane/4 (+8 for i >= 2) and column 2*(lane%4) + i%2 of the 16x8 block;
// returned here relative to the CTA tile. Registers 0,1 (and 2,3) are adjacent columns.
LOOM_HD constexpr int acc_row(int warp_m, int mt, int lane, int i) {
  return warp_m * kWarpM + mt * kMmaM + (lane >> 2) + (i >> 1) * 8;
}
LOOM_HD constexpr int acc_col(int warp_n, int nt, int lane, int i) {
  return warp_n * kWarpN + nt * kMmaN + (lane & 3) * 2 + (i & 1);
}

// CTA `pid` (blockIdx.x) computes output tile (tm, tn): groups of kGroupM M-tiles are walked
// column by column, so CTAs running together share A rows and B columns in L2.
LOOM_HD inline void cta_tile(int64_t pid, int64_t m_tiles, int64_t n_tiles, int64_t& tm, int64_t& tn) {
  const int64_t per_group = int64_t(kGroupM) * n_tiles;
  const int64_t group = pid / per_group, first_m = group * kGroupM;
  const int64_t rows = m_tiles - first_m < kGroupM ? m_tiles - first_m : kGroupM;
  const int64_t in_group = pid % per_group;
  tm = first_m + in_group % rows;
  tn = in_group / rows;
}

// One output element through the epilogue (see GemmEpilogue); callers pass 0 for absent terms
// (c_old is 0 whenever beta is 0, so C is never read then).
LOOM_HD inline float epilogue_value(float acc, float alpha, float beta, float c_old, float bias, bool gelu, float res) {
  float v = fmaf(alpha, acc, beta * c_old);
  v = v + bias;
  if (gelu) v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
  return v + res;
}

}  // namespace mma_map

// The rules both hand-written GEMMs share, for a CTA tile of bm x bn (pure host logic): dtype bf16
// or f16; M, N, K >= 1; A, B, C non-null and 16-byte aligned; A.ld, B.ld, ldc multiples of 8 and at
// least the stored row length (A: K, or M when transposed; B: N, or K when transposed; C: N); bias
// null or 16-byte aligned; residual null or 16-byte aligned with ld_residual a multiple of 8 and
// >= N; the tile count fits a 1-D grid (< 2^31). C must not overlap A, B or bias (not checked).
inline bool gemm_tile_rules(DType dtype, int64_t M, int64_t N, int64_t K, GemmOperand A, GemmOperand B, const void* C,
                            int64_t ldc, const GemmEpilogue& e, int64_t bm, int64_t bn) {
  auto aligned = [](const void* p) { return p != nullptr && reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (dtype != DType::bf16 && dtype != DType::f16) return false;
  if (M < 1 || N < 1 || K < 1) return false;
  if (!aligned(A.data) || !aligned(B.data) || !aligned(C)) return false;
  if (A.ld % 8 != 0 || B.ld % 8 != 0 || ldc % 8 != 0) return false;
  if (A.ld < (A.trans ? M : K) || B.ld < (B.trans ? K : N) || ldc < N) return false;
  if (e.bias != nullptr && !aligned(e.bias)) return false;
  if (e.residual != nullptr && (!aligned(e.residual) || e.ld_residual % 8 != 0 || e.ld_residual < N)) return false;
  const int64_t m_tiles = (M + bm - 1) / bm, n_tiles = (N + bn - 1) / bn;
  return m_tiles <= INT32_MAX / n_tiles;  // blockIdx.x < 2^31
}

// Pure host logic, the rules gemm_mma_supported applies before looking at the device (unit-tested
// on CPU-only builds): gemm_tile_rules for its tile. Every layout (A.trans, B.trans) is accepted.
inline bool gemm_mma_layout_supported(DType dtype, int64_t M, int64_t N, int64_t K, GemmOperand A, GemmOperand B,
                                      const void* C, int64_t ldc, const GemmEpilogue& e) {
  return gemm_tile_rules(dtype, M, N, K, A, B, C, ldc, e, mma_map::kBM, mma_map::kBN);
}

// gemm_mma_layout_supported, and the current device can run the kernel (an sm_80 or sm_90a image
// loads on it and it grants the dynamic shared memory). False: use cuBLASLt (gemm.cu).
bool gemm_mma_supported(DType dtype, int64_t M, int64_t N, int64_t K, GemmOperand A, GemmOperand B, const void* C,
                        int64_t ldc, const GemmEpilogue& e);
// Runs on the current stream, asynchronously. Throws std::invalid_argument where gemm_mma_supported
// is false. Pointers are device pointers.
void gemm_mma(DType dtype, int64_t M, int64_t N, int64_t K, GemmOperand A, GemmOperand B, void* C, int64_t ldc,
              const GemmEpilogue& e);

}  // namespace loom::kernels::cuda
