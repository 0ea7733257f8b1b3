// The Hopper GEMM (kernels/cuda/gemm_wgmma.{h,cu}): its pure host logic, on any machine, and, built
// with -DLOOM_GEMM_WGMMA_ON_CUDA and linked with the CUDA kernels, the kernel itself on an sm_90 GPU.
//
// CPU suites (no CUDA headers needed):
//  - the wgmma shared-memory matrix descriptor: every field in the bit range the PTX ISA documents
//    ("Matrix Descriptor Format": start address >> 4 in [0,14), leading byte offset >> 4 in [16,30),
//    stride byte offset >> 4 in [32,46), base offset in [49,52), swizzle mode in [62,64) with 1 = 128 B),
//    worked examples, reserved bits left zero;
//  - the 128-byte swizzle: a bijection on every 1024-byte atom and on the whole tile, 16-byte chunks
//    kept whole, chunk c of row r at c ^ (r % 8) (the documented XOR of address bits [4,7) with [7,10));
//  - that the descriptors the kernel builds address exactly the bytes TMA wrote, under the model that
//    the tensor core forms start + (m/8) SBO + (m%8) 128 + 2k and swizzles the address bits;
//  - the mbarrier ring protocol (parities, arrival counts, release after wgmma.wait_group 1), run as a
//    random interleaving of the producer, the 8 consumer warps and the asynchronous TMA completions
//    over a model of mbarrier phases: no deadlock, no slot overwritten while read, every k-tile
//    consumed in order from the right slot;
//  - accumulator ownership, the CTA raster, the shared-memory layout, and the support rules.
//
// GPU suite GemmWgmmaCuda (-DLOOM_GEMM_WGMMA_ON_CUDA): random bf16/f16 inputs (never zeros, NaN in
// the padding between rows so an unfilled edge poisons the result), ragged and tile-multiple shapes,
// each epilogue option, against a double reference with the tolerance of test_gemm_blocked.cpp:
// |got - ref| <= 2u |ref| + 1e-4 max|ref|, u = 2^-8 (bf16) or 2^-11 (f16). Skipped visibly when there is
// no GPU or the GPU is not compute capability 9.0.
#include <gtest/gtest.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>
#include "kernels/cuda/gemm_wgmma.h"
#include "tests/kernels/gemm_check.h"
#ifdef LOOM_GEMM_WGMMA_ON_CUDA
#include <cuda_runtime.h>
#include "kernels/cuda/cuda.h"
#endif

using loom::kernels::bf16;
using loom::kernels::DType;
using loom::kernels::f16;
using loom::kernels::GemmOperand;
using loom::kernels::cuda::GemmEpilogue;
using loom::kernels::cuda::gemm_wgmma_layout_supported;
namespace wm = loom::kernels::cuda::wgmma_map;

#ifndef LOOM_GEMM_WGMMA_ON_CUDA

// ---------------------------------------------------------------- descriptor

TEST(GemmWgmmaDescriptor, FieldsSitInTheDocumentedBits) {
  using wm::Swizzle;
  // Each field set to all ones, alone: exactly its documented bit range.
  EXPECT_EQ(wm::smem_desc(0x3FFF0u, 0, 0, Swizzle::none), 0x3FFFull);
  EXPECT_EQ(wm::smem_desc(0, 0x3FFF0u, 0, Swizzle::none), 0x3FFFull << 16);
  EXPECT_EQ(wm::smem_desc(0, 0, 0x3FFF0u, Swizzle::none), 0x3FFFull << 32);
  EXPECT_EQ(wm::smem_desc(0, 0, 0, Swizzle::none, 7), 7ull << 49);
  EXPECT_EQ(wm::smem_desc(0, 0, 0, Swizzle::b32), 3ull << 62);
  // Swizzle mode encodings: 0 none, 1 128-byte, 2 64-byte, 3 32-byte.
  EXPECT_EQ(wm::smem_desc(0, 0, 0, Swizzle::b128) >> 62, 1u);
  EXPECT_EQ(wm::smem_desc(0, 0, 0, Swizzle::b64) >> 62, 2u);
  // Everything set: no bit outside the fields (reserved [14,16), [30,32), [46,49), [52,62) stay zero).
  const uint64_t all = wm::smem_desc(0x3FFF0u, 0x3FFF0u, 0x3FFF0u, Swizzle::b32, 7);
  const uint64_t fields = 0x3FFFull | 0x3FFFull << 16 | 0x3FFFull << 32 | 7ull << 49 | 3ull << 62;
  EXPECT_EQ(all, fields);
  EXPECT_EQ(all & ~fields, 0u);
  // The 4 low bits of addresses and offsets are dropped; the address keeps 18 bits (256 KiB window).
  EXPECT_EQ(wm::smem_desc(0x40Fu, 0x1Fu, 0x40Fu, Swizzle::none), wm::smem_desc(0x400u, 0x10u, 0x400u, Swizzle::none));
  EXPECT_EQ(wm::desc_start(wm::smem_desc(0x40000u + 0x1230u, 0, 0, Swizzle::none)), 0x1230u);
}

TEST(GemmWgmmaDescriptor, WorkedExamples) {
  using wm::Swizzle;
  // A 128B-swizzled K-major tile at shared address 0x400: start 0x400 -> 0x40, LBO 16 -> 1,
  // SBO 1024 -> 64, mode 1 in bits 62-63.
  EXPECT_EQ(wm::smem_desc(0x400, 16, 1024, Swizzle::b128), 0x4000004000010040ull);
  // A non-swizzled ("interleaved") operand: start 0x1000, LBO 128 (8 rows x 16 B to the next core
  // matrix along K), SBO 256: 0x100 | 8 << 16 | 16 << 32, mode 0.
  EXPECT_EQ(wm::smem_desc(0x1000, 128, 256, Swizzle::none), 0x0000001000080100ull);
  // The kernel's descriptor: tile at 0x8000, rows 64.. (consumer warpgroup 1), k-step 3 (k 48..63):
  // start 0x8000 + 64*128 + 3*32 = 0xA060.
  const uint64_t d = wm::kmajor_sw128_desc(0x8000, 64, 3);
  EXPECT_EQ(wm::desc_start(d), 0xA060u);
  EXPECT_EQ(wm::desc_lbo(d), 16u);
  EXPECT_EQ(wm::desc_sbo(d), 1024u);
  EXPECT_EQ(wm::desc_base_offset(d), 0u);
  EXPECT_EQ(wm::desc_swizzle(d), Swizzle::b128);
  EXPECT_EQ(d, (uint64_t(0xA060 >> 4)) | 1ull << 16 | 64ull << 32 | 1ull << 62);
}

TEST(GemmWgmmaDescriptor, RoundTripsEveryFieldValue) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> u(0, (1u << 14) - 1);
  for (int i = 0; i < 2000; ++i) {
    const uint32_t a = u(rng) << 4, l = u(rng) << 4, s = u(rng) << 4, b = u(rng) & 7;
    const auto sw = wm::Swizzle(u(rng) & 3);
    const uint64_t d = wm::smem_desc(a, l, s, sw, b);
    ASSERT_EQ(wm::desc_start(d), a);
    ASSERT_EQ(wm::desc_lbo(d), l);
    ASSERT_EQ(wm::desc_sbo(d), s);
    ASSERT_EQ(wm::desc_base_offset(d), b);
    ASSERT_EQ(wm::desc_swizzle(d), sw);
  }
}

// ---------------------------------------------------------------- swizzle

TEST(GemmWgmmaSwizzle, XorPatternOfSixteenByteChunks) {
  // Chunk c (16 bytes) of row r is stored at chunk position c ^ (r % 8) of the same row; bytes within a
  // chunk keep their order.
  for (uint32_t r = 0; r < 128; ++r)
    for (uint32_t b = 0; b < 128; ++b) {
      const uint32_t off = wm::sw128_byte_offset(r, b);
      ASSERT_EQ(off / 128, r);                        // stays in its row
      ASSERT_EQ(off % 128 / 16, (b / 16) ^ (r % 8));  // chunk position
      ASSERT_EQ(off % 16, b % 16);                    // order within the chunk
      ASSERT_EQ(off, wm::swizzle128(r * 128 + b));    // = XOR of address bits [4,7) with [7,10)
    }
  // Worked entries: row 0 is unswizzled; row 1 swaps chunk pairs; row 7 reverses; row 8 repeats row 0.
  EXPECT_EQ(wm::sw128_byte_offset(0, 48), 48u);
  EXPECT_EQ(wm::sw128_byte_offset(1, 0), 128u + 16u);
  EXPECT_EQ(wm::sw128_byte_offset(1, 16), 128u + 0u);
  EXPECT_EQ(wm::sw128_byte_offset(7, 0), 7u * 128u + 112u);
  EXPECT_EQ(wm::sw128_byte_offset(8, 5), 8u * 128u + 5u);
  EXPECT_EQ(wm::sw128_elem_offset(3, 9), 3u * 128u + ((1u ^ 3u) * 16u) + 2u);  // element 9 = byte 18
}

TEST(GemmWgmmaSwizzle, BijectionOnAtomsAndTiles) {
  // The 128-row tile (16 KiB) maps onto itself one to one, and each 1024-byte atom onto itself.
  std::vector<int> hit(size_t(wm::kATileBytes), 0);
  for (uint32_t r = 0; r < uint32_t(wm::kBM); ++r)
    for (uint32_t b = 0; b < 128; ++b) {
      const uint32_t off = wm::sw128_byte_offset(r, b);
      ASSERT_LT(off, uint32_t(wm::kATileBytes));
      ASSERT_EQ(off / 1024, (r * 128 + b) / 1024);
      ++hit[off];
    }
  for (int h : hit) ASSERT_EQ(h, 1);
  for (uint32_t x = 0; x < 4096; ++x) ASSERT_EQ(wm::swizzle128(wm::swizzle128(x)), x);  // an involution
}

// The descriptors the kernel builds read (m, k) of each wgmma operand exactly where TMA put element
// (row0 + m, 16 k_step + k) of the tile, for every stage's A and B tile.
TEST(GemmWgmmaSwizzle, DescriptorsAddressWhatTmaWrote) {
  for (int s = 0; s < wm::kStages; ++s) {
    const uint32_t base = 0x400u * 3;  // any 1024-aligned shared base
    struct Operand { uint32_t tile; uint32_t row0; uint32_t rows; };
    const Operand ops[] = {{base + wm::a_tile_offset(s), 0, uint32_t(wm::kWgmmaM)},
                           {base + wm::a_tile_offset(s), uint32_t(wm::kWgmmaM), uint32_t(wm::kWgmmaM)},
                           {base + wm::b_tile_offset(s), 0, uint32_t(wm::kWgmmaN)}};
    for (const Operand& op : ops) {
      ASSERT_EQ(op.tile % 1024, 0u);
      for (uint32_t ks = 0; ks < uint32_t(wm::kKSteps); ++ks) {
        const uint64_t d = wm::kmajor_sw128_desc(op.tile, op.row0, ks);
        // base offset 0 is right: the start is inside the first 128-byte row of a 1024-byte atom.
        ASSERT_EQ((wm::desc_start(d) >> 7) & 7u, 0u);
        ASSERT_EQ(wm::desc_base_offset(d), 0u);
        std::set<uint32_t> seen;
        for (uint32_t m = 0; m < op.rows; ++m)
          for (uint32_t k = 0; k < uint32_t(wm::kWgmmaK); ++k) {
            const uint32_t got = wm::wgmma_read_offset(d, m, k);
            const uint32_t want = op.tile + wm::sw128_elem_offset(op.row0 + m, ks * wm::kWgmmaK + k);
            ASSERT_EQ(got, want) << "stage " << s << " row0 " << op.row0 << " ks " << ks << " m " << m << " k " << k;
            seen.insert(got);
          }
        ASSERT_EQ(seen.size(), size_t(op.rows) * wm::kWgmmaK);
      }
    }
  }
}

// ---------------------------------------------------------------- shared memory, pipeline

TEST(GemmWgmmaMap, SharedMemoryLayout) {
  EXPECT_EQ(wm::kATileBytes, 16384);
  EXPECT_EQ(wm::kBTileBytes, 16384);
  EXPECT_EQ(wm::kTxBytes, wm::kBK * (wm::kBM + wm::kBN) * 2);  // two full TMA boxes per stage
  EXPECT_EQ(wm::kSmemBytes, 197632);
  EXPECT_EQ(wm::kBarrierBytes, 96);
  EXPECT_LE(wm::kSmemBytes + wm::kBarrierBytes, 227 * 1024);
  std::vector<std::pair<uint32_t, uint32_t>> spans;  // [begin, end)
  for (int s = 0; s < wm::kStages; ++s) {
    EXPECT_EQ(wm::a_tile_offset(s) % 1024, 0u);
    EXPECT_EQ(wm::b_tile_offset(s) % 1024, 0u);
    spans.push_back({wm::a_tile_offset(s), wm::a_tile_offset(s) + wm::kATileBytes});
    spans.push_back({wm::b_tile_offset(s), wm::b_tile_offset(s) + wm::kBTileBytes});
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) EXPECT_LE(spans[i - 1].second, spans[i].first) << "overlap";
  EXPECT_LE(spans.back().second, uint32_t(wm::kSmemUsed));
  // The kernel rounds the dynamic base up to 1024: at most 1008 bytes lost (the base is 16-aligned).
  EXPECT_GE(wm::kSmemBytes - wm::kSmemUsed, 1024 - 16);
}

// A model of an mbarrier: the current phase, arrivals still expected in it, and the transaction
// count. try_wait.parity(p) succeeds when the phase with parity p has completed, i.e. when the current
// phase's parity differs from p (so a fresh barrier, in phase 0, passes a wait on parity 1).
struct MBarrier {
  int count = 0, pending = 0;
  int64_t tx = 0;
  int64_t phase = 0;
  void init(int n) { count = pending = n; }
  void maybe_complete() {
    if (pending == 0 && tx == 0) {
      ++phase;
      pending = count;
    }
  }
  void arrive() {
    ASSERT_GT(pending, 0);
    --pending;
    maybe_complete();
  }
  void arrive_expect_tx(int64_t bytes) {
    tx += bytes;
    arrive();
  }
  void complete_tx(int64_t bytes) {
    tx -= bytes;
    ASSERT_GE(tx, 0);
    maybe_complete();
  }
  bool try_wait_parity(uint32_t parity) const { return uint32_t(phase & 1) != parity; }
};

// The kernel's protocol, run under a random scheduler: one producer, kConsumerWarps consumer warps
// (each waits on full, "reads" the slot until it releases it one k-tile later, after
// wgmma.wait_group 1), and TMA loads that land at random later times.
void simulate_pipeline(int64_t k_tiles, unsigned seed) {
  constexpr int S = wm::kStages, W = wm::kConsumerWarps;
  MBarrier full[S], empty[S];
  for (int s = 0; s < S; ++s) {
    full[s].init(wm::kFullArrivals);
    empty[s].init(wm::kEmptyArrivals);
  }
  std::vector<int64_t> slot(S, -1);     // which k-tile a slot holds
  std::vector<std::vector<int>> readers(S, std::vector<int>(W, 0));
  struct Load { int s; int64_t kt; };
  std::vector<Load> in_flight;          // TMA loads issued, not landed
  int64_t produced = 0;
  bool producer_waiting_done = false;   // producer passed the empty wait for k-tile `produced`
  std::vector<int64_t> consumed(W, 0);  // next k-tile per warp
  std::vector<int64_t> held(W, -1);     // k-tile whose slot the warp still reads (released next round)
  std::vector<bool> finished(W, false);
  std::mt19937 rng(seed);
  for (int64_t step = 0; step < 1000000; ++step) {
    std::vector<int> runnable;  // 0: producer, 1: a landing TMA, 2 + w: consumer warp w
    if (produced < k_tiles) {
      const int s = wm::stage_of(produced);
      if (producer_waiting_done || empty[s].try_wait_parity(wm::empty_parity(produced))) runnable.push_back(0);
    }
    if (!in_flight.empty()) runnable.push_back(1);
    for (int w = 0; w < W; ++w) {
      if (finished[w]) continue;
      if (consumed[w] == k_tiles || full[wm::stage_of(consumed[w])].try_wait_parity(wm::full_parity(consumed[w])))
        runnable.push_back(2 + w);
    }
    if (runnable.empty()) {
      bool all = true;
      for (int w = 0; w < W; ++w) all = all && finished[w];
      ASSERT_TRUE(all && produced == k_tiles && in_flight.empty()) << "deadlock at step " << step;
      return;
    }
    const int who = runnable[std::uniform_int_distribution<size_t>(0, runnable.size() - 1)(rng)];
    if (who == 0) {  // producer: (wait passed) arrive.expect_tx, two TMA loads
      const int s = wm::stage_of(produced);
      ASSERT_NO_FATAL_FAILURE(full[s].arrive_expect_tx(wm::kTxBytes));
      in_flight.push_back({s, produced});
      ++produced;
      producer_waiting_done = false;
    } else if (who == 1) {  // the oldest or a random in-flight load lands
      const size_t i = std::uniform_int_distribution<size_t>(0, in_flight.size() - 1)(rng);
      const Load l = in_flight[i];
      in_flight.erase(in_flight.begin() + int64_t(i));
      for (int w = 0; w < W; ++w) ASSERT_EQ(readers[size_t(l.s)][size_t(w)], 0) << "slot overwritten while read";
      slot[size_t(l.s)] = l.kt;
      ASSERT_NO_FATAL_FAILURE(full[l.s].complete_tx(wm::kTxBytes));
    } else {
      const int w = who - 2;
      const int64_t kt = consumed[size_t(w)];
      if (kt < k_tiles) {  // wait passed: issue wgmma on slot s, then release k-tile kt-1's slot
        const int s = wm::stage_of(kt);
        ASSERT_EQ(slot[size_t(s)], kt) << "consumer read a stale slot";
        ++readers[size_t(s)][size_t(w)];
        if (held[size_t(w)] >= 0) {
          const int ps = wm::stage_of(held[size_t(w)]);
          --readers[size_t(ps)][size_t(w)];
          ASSERT_NO_FATAL_FAILURE(empty[ps].arrive());
        }
        held[size_t(w)] = kt;
        ++consumed[size_t(w)];
      } else {  // wgmma.wait_group 0; the last slot is never released
        finished[size_t(w)] = true;
      }
    }
  }
  FAIL() << "did not finish";
}

TEST(GemmWgmmaPipeline, RingProtocolUnderRandomInterleavings) {
  for (int64_t k_tiles : {1, 2, 5, 6, 7, 12, 13, 40})
    for (unsigned seed = 0; seed < 20; ++seed) {
      SCOPED_TRACE("k_tiles " + std::to_string(k_tiles) + " seed " + std::to_string(seed));
      simulate_pipeline(k_tiles, seed);
      if (::testing::Test::HasFatalFailure()) return;
    }
}

TEST(GemmWgmmaPipeline, Parities) {
  for (int64_t kt = 0; kt < 5 * wm::kStages; ++kt) {
    EXPECT_EQ(wm::stage_of(kt), int(kt % wm::kStages));
    EXPECT_EQ(wm::full_parity(kt), uint32_t(kt / wm::kStages % 2));
    EXPECT_NE(wm::empty_parity(kt), wm::full_parity(kt));
  }
  EXPECT_EQ(wm::empty_parity(0), 1u);  // the first pass waits on the fresh barrier's "previous" phase
  EXPECT_EQ(wm::empty_parity(wm::kStages), 0u);
}

// ---------------------------------------------------------------- ownership, raster

TEST(GemmWgmmaMap, AccumulatorOwnership) {
  std::vector<int> hit(size_t(wm::kBM * wm::kBN), 0);
  for (int t = 0; t < wm::kConsumerThreads; ++t)
    for (int r = 0; r < wm::kAccRegs; ++r) {
      const int row = wm::acc_row(t, r), col = wm::acc_col(t, r);
      ASSERT_TRUE(row >= 0 && row < wm::kBM && col >= 0 && col < wm::kBN);
      ++hit[size_t(row * wm::kBN + col)];
      if (r % 2 == 1) {  // the pair (r-1, r): one row, adjacent columns, the first even
        ASSERT_EQ(wm::acc_row(t, r - 1), row);
        ASSERT_EQ(wm::acc_col(t, r - 1) + 1, col);
        ASSERT_EQ(col % 2, 1);
      }
      // A warpgroup owns its 64 rows; a warp its 16.
      ASSERT_EQ(row / 64, t / 128);
      ASSERT_EQ(row % 64 / 16, t / 32 % 4);
    }
  for (int h : hit) ASSERT_EQ(h, 1);
  // Worked entries of the m64nNk16 f32 D fragment: lane 5 holds row 1, columns 2-3 of each n8 block.
  EXPECT_EQ(wm::acc_row(0, 0), 0);
  EXPECT_EQ(wm::acc_row(0, 2), 8);
  EXPECT_EQ(wm::acc_row(5, 1), 1);
  EXPECT_EQ(wm::acc_col(5, 1), 3);
  EXPECT_EQ(wm::acc_col(5, 4), 10);
  EXPECT_EQ(wm::acc_row(32, 0), 16);
  EXPECT_EQ(wm::acc_row(128 + 97, 3), 64 + 48 + 0 + 8);
  EXPECT_EQ(wm::acc_col(31, 63), 120 + 6 + 1);
}

TEST(GemmWgmmaMap, CtaRasterIsABijection) {
  for (int64_t m_tiles : {1, 3, 8, 9, 17})
    for (int64_t n_tiles : {1, 2, 5}) {
      std::vector<int> seen(size_t(m_tiles * n_tiles), 0);
      for (int64_t pid = 0; pid < m_tiles * n_tiles; ++pid) {
        int64_t tm, tn;
        wm::cta_tile(pid, m_tiles, n_tiles, tm, tn);
        ASSERT_TRUE(tm >= 0 && tm < m_tiles && tn >= 0 && tn < n_tiles);
        ++seen[size_t(tm * n_tiles + tn)];
      }
      for (int s : seen) EXPECT_EQ(s, 1);
    }
}

// ---------------------------------------------------------------- rules

TEST(GemmWgmmaLayoutSupported, Rules) {
  alignas(16) static uint16_t buf[4096];
  const void* p = buf;
  const void* off = buf + 1;  // 2 bytes off 16-byte alignment
  auto ok = [&](DType t, GemmOperand A, GemmOperand B, const void* C, int64_t ldc, const GemmEpilogue& e,
                int64_t m = 100, int64_t n = 60, int64_t k = 40) {
    return gemm_wgmma_layout_supported(t, m, n, k, A, B, C, ldc, e);
  };
  const GemmEpilogue none;
  const GemmOperand A{p, false, 40}, B{p, true, 40};  // Linear forward: A [M][K], B [N][K]
  EXPECT_TRUE(ok(DType::bf16, A, B, p, 64, none));
  EXPECT_TRUE(ok(DType::f16, A, B, p, 64, none));
  // Only the Linear-forward layout.
  EXPECT_FALSE(ok(DType::bf16, GemmOperand{p, true, 104}, GemmOperand{p, false, 64}, p, 64, none));
  EXPECT_FALSE(ok(DType::bf16, GemmOperand{p, false, 40}, GemmOperand{p, false, 64}, p, 64, none));
  EXPECT_FALSE(ok(DType::bf16, GemmOperand{p, true, 104}, GemmOperand{p, true, 40}, p, 64, none));
  // dtype
  for (DType t : {DType::f32, DType::f64, DType::i32, DType::i64, DType::u8, DType::boolean})
    EXPECT_FALSE(ok(t, A, B, p, 64, none)) << loom::kernels::dtype_name(t);
  // sizes: empty problems; 1x1x1 is fine; TMA coordinates are 32-bit signed
  EXPECT_FALSE(ok(DType::bf16, A, B, p, 64, none, 0, 60, 40));
  EXPECT_FALSE(ok(DType::bf16, A, B, p, 64, none, 100, 0, 40));
  EXPECT_FALSE(ok(DType::bf16, A, B, p, 64, none, 100, 60, 0));
  EXPECT_FALSE(ok(DType::bf16, A, B, p, 64, none, -1, 60, 40));
  EXPECT_TRUE(ok(DType::bf16, GemmOperand{p, false, 8}, GemmOperand{p, true, 8}, p, 8, none, 1, 1, 1));
  const int64_t two31 = int64_t(1) << 31;
  EXPECT_FALSE(ok(DType::bf16, GemmOperand{p, false, two31}, GemmOperand{p, true, two31}, p, 64, none, 8, 8, two31));
  EXPECT_FALSE(ok(DType::bf16, A, B, p, 64, none, two31, 8, 40));
  EXPECT_FALSE(ok(DType::bf16, A, B, p, two31, none, 8, two31, 40));
  // alignment of A, B, C (TMA: 16-byte global address); null pointers
  EXPECT_FALSE(ok(DType::bf16, GemmOperand{off, false, 40}, B, p, 64, none));
  EXPECT_FALSE(ok(DType::bf16, A, GemmOperand{off, true, 40}, p, 64, none));
  EXPECT_FALSE(ok(DType::bf16, A, B, off, 64, none));
  EXPECT_FALSE(ok(DType::bf16, GemmOperand{nullptr, false, 40}, B, p, 64, none));
  EXPECT_FALSE(ok(DType::bf16, A, GemmOperand{nullptr, true, 40}, p, 64, none));
  EXPECT_FALSE(ok(DType::bf16, A, B, nullptr, 64, none));
  // leading dimensions: multiples of 8 elements (16-byte TMA strides), at least the row length
  EXPECT_FALSE(ok(DType::bf16, GemmOperand{p, false, 44}, B, p, 64, none));
  EXPECT_FALSE(ok(DType::bf16, A, GemmOperand{p, true, 44}, p, 64, none));
  EXPECT_FALSE(ok(DType::bf16, A, B, p, 68, none));
  EXPECT_FALSE(ok(DType::bf16, GemmOperand{p, false, 32}, B, p, 64, none));  // < K
  EXPECT_FALSE(ok(DType::bf16, A, GemmOperand{p, true, 32}, p, 64, none));   // < K
  EXPECT_FALSE(ok(DType::bf16, A, B, p, 56, none));                          // ldc < N
  EXPECT_FALSE(ok(DType::bf16, A, GemmOperand{p, true, -40}, p, 64, none));
  EXPECT_TRUE(ok(DType::bf16, GemmOperand{p, false, 48}, GemmOperand{p, true, 1024}, p, 64, none));  // wider is fine
  EXPECT_FALSE(ok(DType::bf16, GemmOperand{p, false, int64_t(1) << 39}, B, p, 64, none));  // stride >= 2^40 bytes
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
  const int64_t big = (int64_t(1) << 31) - 1;
  EXPECT_FALSE(ok(DType::bf16, GemmOperand{p, false, 8}, GemmOperand{p, true, 8}, p, big + 1, none, big, big, 8));
  EXPECT_TRUE(ok(DType::bf16, GemmOperand{p, false, 8}, GemmOperand{p, true, 8}, p, 1 << 20, none, 1 << 20, 1 << 20, 8));
}

#endif  // !LOOM_GEMM_WGMMA_ON_CUDA

// ---------------------------------------------------------------- the kernel on an sm_90 GPU

#ifdef LOOM_GEMM_WGMMA_ON_CUDA
namespace {

namespace kc = loom::kernels::cuda;

using namespace loom::testing::gemm;
constexpr DType kTypes[] = {DType::bf16, DType::f16};

void run_all(const Cases& cases) { loom::testing::gemm::run_all(cases, on_cuda(kc::gemm_wgmma_supported, kc::gemm_wgmma)); }

Case shape(DType t, int64_t M, int64_t N, int64_t K) {
  Case c;  // the layout gemm_wgmma takes: A [M][K], B [N][K]
  c.dtype = t, c.M = M, c.N = N, c.K = K;
  return c;
}

bool device_is_sm90() {
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) return false;
  return major == 9 && minor == 0;
}

}  // namespace

#define LOOM_NEED_SM90()                                                                    \
  if (kc::device_count() == 0) GTEST_SKIP() << "no GPU";                                    \
  if (!device_is_sm90()) GTEST_SKIP() << "the GPU is not compute capability 9.0 (sm_90a)"

TEST(GemmWgmmaCuda, TileMultiples) {
  LOOM_NEED_SM90();
  Cases out;
  for (DType t : kTypes) {
    out.push_back({shape(t, 128, 128, 64), unsigned(100 + out.size())});
    out.push_back({shape(t, 256, 384, 256), unsigned(100 + out.size())});
  }
  run_all(out);
}

// More k-tiles than ring slots (6): the ring wraps several times, the barriers change phase.
TEST(GemmWgmmaCuda, LongKWrapsTheRing) {
  LOOM_NEED_SM90();
  Cases out;
  for (DType t : kTypes) {
    out.push_back({shape(t, 128, 128, 64 * 13 + 5), unsigned(200 + out.size())});
    out.push_back({shape(t, 200, 136, 64 * 6), unsigned(200 + out.size())});
    out.push_back({shape(t, 64, 64, 64 * 7), unsigned(200 + out.size())});
  }
  run_all(out);
}

// M, N not multiples of 128, K not a multiple of 64 (nor of 8): TMA zero fill and guarded stores.
TEST(GemmWgmmaCuda, RaggedShapes) {
  LOOM_NEED_SM90();
  struct Shape { int64_t M, N, K; };
  const Shape shapes[] = {{130, 67, 45}, {1, 200, 64}, {200, 1, 40}, {130, 67, 8}, {129, 129, 65},
                          {7, 5, 1},     {3, 300, 17}, {127, 9, 100}, {65, 250, 130}};
  Cases out;
  for (DType t : kTypes)
    for (const Shape& s : shapes) out.push_back({shape(t, s.M, s.N, s.K), unsigned(300 + out.size())});
  run_all(out);
}

// More than 8 M-tiles and several N-tiles: the grouped raster and its last, partial group.
TEST(GemmWgmmaCuda, ManyTilesGroupedRaster) {
  LOOM_NEED_SM90();
  Cases out;
  for (DType t : kTypes) out.push_back({shape(t, 1100, 300, 72), unsigned(400 + out.size())});
  run_all(out);
}

TEST(GemmWgmmaCuda, WideLeadingDimensions) {
  LOOM_NEED_SM90();
  Cases out;
  for (DType t : kTypes) {
    Case c = shape(t, 70, 140, 50);
    c.extra_ld = 24;
    out.push_back({c, unsigned(500 + out.size())});
  }
  run_all(out);
}

TEST(GemmWgmmaCuda, EachEpilogueOption) {
  LOOM_NEED_SM90();
  Cases out;
  for (DType t : kTypes)
    for (int option = 0; option < 6; ++option) {
      Case c = shape(t, 130, 67, 45);
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
  run_all(out);
}

TEST(GemmWgmmaCuda, AllEpilogueOptionsTogether) {
  LOOM_NEED_SM90();
  Cases out;
  for (DType t : kTypes) {
    Case c = shape(t, 131, 133, 70);
    c.alpha = 0.5, c.beta = 0.25, c.bias = true, c.gelu = true, c.residual = true;
    out.push_back({c, unsigned(700 + out.size())});
  }
  run_all(out);
}

TEST(GemmWgmmaCuda, ResidualMayBeC) {
  LOOM_NEED_SM90();
  Cases out;
  for (DType t : kTypes) {
    Case c = shape(t, 150, 70, 40);
    c.bias = true, c.gelu = true, c.residual = true, c.residual_is_c = true;
    out.push_back({c, unsigned(800 + out.size())});
  }
  run_all(out);
}

TEST(GemmWgmmaCuda, BetaZeroDoesNotReadC) {
  LOOM_NEED_SM90();
  Cases out;
  for (DType t : kTypes) {
    Case c = shape(t, 40, 24, 16);
    c.c_nan = true, c.bias = true;
    out.push_back({c, unsigned(900 + out.size())});
  }
  run_all(out);
}

// The other layouts are refused (callers fall back), both by the query and by the call.
TEST(GemmWgmmaCuda, OtherLayoutsAreUnsupported) {
  LOOM_NEED_SM90();
  std::mt19937 rng(1);
  const Matrix m = random_matrix(DType::bf16, 64, 64, 64, rng);
  DeviceBuffer a(m.v), b(m.v), c(m.v);
  const GemmEpilogue e;
  ASSERT_TRUE(kc::gemm_wgmma_supported(DType::bf16, 64, 64, 64, GemmOperand{a.p, false, 64}, GemmOperand{b.p, true, 64},
                                       c.p, 64, e));
  for (auto [ta, tb] : {std::pair{false, false}, std::pair{true, false}, std::pair{true, true}}) {
    EXPECT_FALSE(kc::gemm_wgmma_supported(DType::bf16, 64, 64, 64, GemmOperand{a.p, ta, 64}, GemmOperand{b.p, tb, 64},
                                          c.p, 64, e));
    EXPECT_THROW(
        kc::gemm_wgmma(DType::bf16, 64, 64, 64, GemmOperand{a.p, ta, 64}, GemmOperand{b.p, tb, 64}, c.p, 64, e),
        std::invalid_argument);
  }
}
#endif  // LOOM_GEMM_WGMMA_ON_CUDA
