// The Hopper (sm_90a) tensor-core GEMM (gemm_wgmma.cu): wgmma.mma_async fed by TMA, warp-specialised.
// Its host API, the rules for which problems it takes, and the pure index/bit math the kernel uses
// (shared-memory layout, the 128-byte swizzle, the wgmma shared-memory matrix descriptor, accumulator
// ownership, the CTA raster), written once here as LOOM_HD functions so that
// tests/kernels/test_gemm_wgmma_rules.cpp checks them on a CPU-only machine. Includable without CUDA
// headers, like kernels/cuda/cuda.h.
//
// Semantics are exactly those of gemm_mma (gemm_mma.h), epilogue included (alpha, beta, bias, GELU,
// residual, in that order, f32, one rounding to `dtype` at the end; mma_map::epilogue_value is the
// shared formula).
//
// Scope of this first version:
//  - bf16 or f16 inputs, f32 accumulation, output of the same dtype;
//  - only the Linear-forward layout: A not transposed ([M][K], K contiguous) and B transposed (stored
//    [N][K], K contiguous). Both operands are then "K-major", the one layout that needs no
//    transposing descriptor. Every other layout is reported unsupported (the caller uses gemm_mma or
//    cuBLASLt);
//  - one output tile per CTA (no persistent scheduler, no clusters / TMA multicast, no stream-K);
//  - the epilogue writes straight from the accumulator registers (no shared-memory staging, no TMA store).
#pragma once
#include <cstdint>
#include "kernels/cuda/gemm_mma.h"

namespace loom::kernels::cuda {

namespace wgmma_map {

// ---- tiling ----
constexpr int kBM = 128, kBN = 128, kBK = 64;  // CTA tile (M x N) and k-tile
constexpr int kStages = 6;                     // TMA -> wgmma shared-memory ring depth
constexpr int kElemBytes = 2;                  // bf16 / f16
constexpr int kWarpgroupThreads = 128;         // 4 consecutive warps, the first a multiple of 4
constexpr int kConsumerWarpgroups = 2;         // each owns 64 rows of the CTA tile: one m64n128 wgmma
constexpr int kConsumerThreads = kConsumerWarpgroups * kWarpgroupThreads;  // 256 = warps 0..7
constexpr int kConsumerWarps = kConsumerThreads / 32;                      // 8
constexpr int kProducerWarp = kConsumerWarps;                              // warp 8: one lane issues TMA
constexpr int kCtaThreads = kConsumerThreads + 32;                         // 288
constexpr int kWgmmaM = 64, kWgmmaN = kBN, kWgmmaK = 16;                   // wgmma.m64n128k16
constexpr int kKSteps = kBK / kWgmmaK;                                     // 4 wgmma per k-tile
constexpr int kAccRegs = kWgmmaM * kWgmmaN / kWarpgroupThreads;            // 64 f32 per consumer thread
constexpr int kGroupM = 8;  // CTA raster: 8 M-tiles walked together (L2 reuse), as gemm_mma
static_assert(kBM == kConsumerWarpgroups * kWgmmaM, "the consumer warpgroups split the tile's rows");
static_assert(kWgmmaN % 8 == 0 && kWgmmaN >= 8 && kWgmmaN <= 256, "wgmma N for 16-bit inputs");

// ---- the 128-byte swizzle ----
// A k-tile row is kBK elements = 128 bytes, the TMA/wgmma 128B-swizzle span. TMA (CU_TENSOR_MAP_
// SWIZZLE_128B) writes a box of R rows x 128 bytes as R rows of 128 bytes, but within each 1024-byte
// group of 8 rows the 16-byte chunk c of row r lands in chunk position c ^ (r % 8). Equivalently, on
// the byte offset x from a 1024-byte-aligned base: bits [4,7) are XORed with bits [7,10).
constexpr int kSwizzleBytes = 128;
constexpr int kSwizzleAtomBytes = 8 * kSwizzleBytes;  // 1024: 8 rows, the pattern's period
static_assert(kBK * kElemBytes == kSwizzleBytes, "one k-tile row is exactly one 128-byte swizzle row");

// The swizzle as a function of a byte offset from a 1024-byte-aligned address (an involution).
LOOM_HD constexpr uint32_t swizzle128(uint32_t x) { return x ^ (((x >> 7) & 7u) << 4); }
// Byte offset, from the tile's (1024-aligned) base, of byte `col_byte` (0..127) of row `row` of a
// 128B-swizzled tile whose rows are 128 bytes.
LOOM_HD constexpr uint32_t sw128_byte_offset(uint32_t row, uint32_t col_byte) {
  return row * kSwizzleBytes + ((((col_byte >> 4) ^ (row & 7u)) << 4) | (col_byte & 15u));
}
// The same for element (row, col) of 16-bit elements (col 0..63).
LOOM_HD constexpr uint32_t sw128_elem_offset(uint32_t row, uint32_t col) {
  return sw128_byte_offset(row, col * kElemBytes);
}

// ---- the wgmma shared-memory matrix descriptor (PTX ISA, "Matrix Descriptor Format", sm_90) ----
// 64 bits:  [0,14)  start address >> 4 (shared-space byte address, 18 significant bits)
//           [16,30) leading dimension byte offset >> 4
//           [32,46) stride dimension byte offset >> 4
//           [49,52) matrix base offset (0 when the swizzle pattern starts at a 1024/512/256-aligned
//                   address, which this kernel guarantees)
//           [62,64) swizzle mode: 0 none, 1 128-byte, 2 64-byte, 3 32-byte
// (Not the sm_100 tcgen05 descriptor, which has a fixed 0b001 at [46,49) and a 3-bit mode at [61,64).)
enum class Swizzle : uint32_t { none = 0, b128 = 1, b64 = 2, b32 = 3 };

LOOM_HD constexpr uint64_t smem_desc(uint32_t smem_addr, uint32_t lbo_bytes, uint32_t sbo_bytes, Swizzle swizzle,
                                     uint32_t base_offset = 0) {
  return uint64_t((smem_addr & 0x3FFFFu) >> 4) | uint64_t((lbo_bytes & 0x3FFFFu) >> 4) << 16 |
         uint64_t((sbo_bytes & 0x3FFFFu) >> 4) << 32 | uint64_t(base_offset & 7u) << 49 |
         uint64_t(uint32_t(swizzle) & 3u) << 62;
}
// Field decoders (bytes), for the tests and for reading a descriptor back.
LOOM_HD constexpr uint32_t desc_start(uint64_t d) { return uint32_t(d & 0x3FFFu) << 4; }
LOOM_HD constexpr uint32_t desc_lbo(uint64_t d) { return uint32_t((d >> 16) & 0x3FFFu) << 4; }
LOOM_HD constexpr uint32_t desc_sbo(uint64_t d) { return uint32_t((d >> 32) & 0x3FFFu) << 4; }
LOOM_HD constexpr uint32_t desc_base_offset(uint64_t d) { return uint32_t((d >> 49) & 7u); }
LOOM_HD constexpr Swizzle desc_swizzle(uint64_t d) { return Swizzle(uint32_t(d >> 62) & 3u); }

// The operand of one wgmma (64 rows of A, or all kBN rows of B, by 16 k) inside a K-major
// 128B-swizzled tile at `tile_addr` (1024-byte aligned): rows row0.. (a multiple of 8), k-step
// `k_step` (k = 16 k_step .. 16 k_step + 15).
//  - SBO = 1024: the distance between consecutive 8-row groups ("core matrices" along M/N).
//  - LBO: for a K-major swizzled operand the whole k16 extent (32 bytes) lies inside one 128-byte
//    swizzle row, so no second core matrix along K is addressed; the field is unused, set to 16 bytes
//    (encoded 1) as is customary.
//  - the k-step is selected by advancing the start address by 32 bytes within the (unswizzled) row:
//    the hardware applies the swizzle to the final address bits, so start + 32 k_step addresses the
//    same bytes TMA placed for k = 16 k_step.. (see wgmma_read_offset, and the test that checks it).
constexpr uint32_t kKMajorSbo = kSwizzleAtomBytes;  // 1024
constexpr uint32_t kKMajorLbo = 16;
LOOM_HD constexpr uint64_t kmajor_sw128_desc(uint32_t tile_addr, uint32_t row0, uint32_t k_step) {
  return smem_desc(tile_addr + row0 * kSwizzleBytes + k_step * kWgmmaK * kElemBytes, kKMajorLbo, kKMajorSbo,
                   Swizzle::b128);
}
// The model of what the tensor core reads for a K-major, 128B-swizzled descriptor `d` (start address
// relative to a 1024-aligned base, base offset 0): element (m, k) of the operand (m < 64 or N, k < 16)
// is at the swizzled image of start + (m / 8) * SBO + (m % 8) * 128 + 2k. Used by the tests to check
// that the descriptors address exactly the bytes TMA wrote (sw128_elem_offset).
LOOM_HD constexpr uint32_t wgmma_read_offset(uint64_t d, uint32_t m, uint32_t k) {
  return swizzle128(desc_start(d) + (m / 8) * desc_sbo(d) + (m % 8) * kSwizzleBytes + k * kElemBytes);
}

// ---- shared memory ----
// Dynamic, from a 1024-byte-aligned base (the kernel rounds the dynamic shared-memory address up,
// hence the kSmemAlign slack in kSmemBytes): kStages A tiles [128 rows m][64 k], then kStages B tiles
// [128 rows n][64 k], each 16 KiB and swizzled as above.
// Static: the kStages "full" and kStages "empty" mbarriers (8 B each, kBarrierBytes). They are static
// on purpose: only the real (sm_90a) kernel body declares them, so an image whose body was compiled
// out (a build for plain sm_90 or for "native" instead of sm_90a) shows sharedSizeBytes 0 and is
// refused by the host instead of running an empty kernel.
constexpr int kSmemAlign = kSwizzleAtomBytes;
constexpr int kATileBytes = kBM * kBK * kElemBytes;  // 16384
constexpr int kBTileBytes = kBN * kBK * kElemBytes;  // 16384
constexpr int kTxBytes = kATileBytes + kBTileBytes;  // bytes TMA delivers per stage (full boxes, OOB zeros included)
LOOM_HD constexpr uint32_t a_tile_offset(int stage) { return uint32_t(stage * kATileBytes); }
LOOM_HD constexpr uint32_t b_tile_offset(int stage) { return uint32_t(kStages * kATileBytes + stage * kBTileBytes); }
constexpr int kSmemUsed = kStages * kTxBytes;
constexpr int kSmemBytes = kSmemUsed + kSmemAlign;  // dynamic shared memory requested: 197,632 B
constexpr int kBarrierBytes = 2 * kStages * 8;      // static shared memory: 96 B
constexpr int kSmemLimitSm90 = 227 * 1024;          // opt-in maximum per block on sm_90
static_assert(kSmemBytes + kBarrierBytes <= kSmemLimitSm90, "fits an H100/H200 CTA");

// ---- the pipeline ----
// k-tile kt uses stage kt % kStages; its barriers are in phase kt / kStages, so waits use parity
// (kt / kStages) & 1 on "full" (consumers) and the opposite parity on "empty" (the producer: on the
// first pass through the ring it waits on the phase "before" phase 0, which counts as complete).
LOOM_HD constexpr int stage_of(int64_t kt) { return int(kt % kStages); }
LOOM_HD constexpr uint32_t full_parity(int64_t kt) { return uint32_t((kt / kStages) & 1); }
LOOM_HD constexpr uint32_t empty_parity(int64_t kt) { return full_parity(kt) ^ 1u; }
constexpr int kFullArrivals = 1;                // the producer's arrive.expect_tx (+ the TMA bytes)
constexpr int kEmptyArrivals = kConsumerWarps;  // one elected lane per consumer warp

// ---- accumulator ownership (wgmma m64nNk16, f32 D fragment) ----
// Consumer thread t (0..255) of the CTA: warpgroup t / 128 owns tile rows 64 (t / 128) ..; within it
// warp w = (t / 32) % 4 owns 16 rows; register r (0..63) of lane l is row 16 w + l / 4 (+ 8 when
// r % 4 >= 2), column 8 (r / 4) + 2 (l % 4) + r % 2. Registers (2h, 2h + 1) are adjacent columns.
LOOM_HD constexpr int acc_row(int t, int r) {
  return (t / kWarpgroupThreads) * kWgmmaM + ((t / 32) % 4) * 16 + (t % 32) / 4 + ((r >> 1) & 1) * 8;
}
LOOM_HD constexpr int acc_col(int t, int r) { return (r >> 2) * 8 + (t % 4) * 2 + (r & 1); }

// ---- CTA raster ----
// CTA `pid` computes output tile (tm, tn): groups of kGroupM M-tiles walked column by column.
LOOM_HD inline void cta_tile(int64_t pid, int64_t m_tiles, int64_t n_tiles, int64_t& tm, int64_t& tn) {
  const int64_t per_group = int64_t(kGroupM) * n_tiles;
  const int64_t group = pid / per_group, first_m = group * kGroupM;
  const int64_t rows = m_tiles - first_m < kGroupM ? m_tiles - first_m : kGroupM;
  const int64_t in_group = pid % per_group;
  tm = first_m + in_group % rows;
  tn = in_group / rows;
}

}  // namespace wgmma_map

// Pure host logic, the rules gemm_wgmma_supported applies before looking at the device (unit-tested
// on CPU-only builds): gemm_tile_rules (gemm_mma.h) for its tile, and
//  - M, N, K each below 2^31 (TMA coordinates are signed 32-bit);
//  - layout: A not transposed and B transposed (the Linear forward) only;
//  - row strides below 2^40 bytes (the 16-byte alignment and ld multiples of 8 are TMA's needs too).
inline bool gemm_wgmma_layout_supported(DType dtype, int64_t M, int64_t N, int64_t K, GemmOperand A, GemmOperand B,
                                        const void* C, int64_t ldc, const GemmEpilogue& e) {
  if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) return false;
  if (A.trans || !B.trans) return false;
  if (A.ld >= (int64_t(1) << 39) || B.ld >= (int64_t(1) << 39)) return false;  // 2-byte elements: stride < 2^40 B
  return gemm_tile_rules(dtype, M, N, K, A, B, C, ldc, e, wgmma_map::kBM, wgmma_map::kBN);
}

// gemm_wgmma_layout_supported, and the current device can run the kernel: compute capability exactly
// 9.0 (an sm_90a image runs nowhere else), the sm_90a image loads, it grants kSmemBytes of dynamic
// shared memory, and the driver provides cuTensorMapEncodeTiled. Queried once per device.
// False: use gemm_mma or cuBLASLt.
bool gemm_wgmma_supported(DType dtype, int64_t M, int64_t N, int64_t K, GemmOperand A, GemmOperand B, const void* C,
                          int64_t ldc, const GemmEpilogue& e);
// Runs on the current stream, asynchronously. Throws std::invalid_argument where gemm_wgmma_supported
// is false, std::runtime_error on a CUDA/driver error. Pointers are device pointers.
void gemm_wgmma(DType dtype, int64_t M, int64_t N, int64_t K, GemmOperand A, GemmOperand B, void* C, int64_t ldc,
                const GemmEpilogue& e);

}  // namespace loom::kernels::cuda
