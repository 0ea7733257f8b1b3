// CPU mirror of kernels/cuda/gemm_mma.cu; see gemm_blocked_mirror.h. The fragment layouts emulated here
// are those the PTX ISA documents for ldmatrix.m8n8.x4.b16 and mma.m16n8k16 (f32 += bf16/f16).
#include "tests/kernels/gemm_blocked_mirror.h"
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

namespace loom::kernels::cpu {
namespace {

using namespace cuda::mma_map;

[[noreturn]] void fail(const std::string& what) {
  throw std::logic_error("gemm_blocked_mirror: " + what);
}

// A quiet NaN in either format: what shared memory holds before a copy writes it.
template <class T> constexpr uint16_t kPoison = 0;
template <> constexpr uint16_t kPoison<bf16> = 0x7fc0;
template <> constexpr uint16_t kPoison<f16> = 0x7e00;

template <class T> float to_float(uint16_t bits) {
  T t;
  t.bits = bits;
  return float(t);
}

// One 32-bit register holding two 16-bit elements (lo = the lower address / lower index).
struct Reg {
  uint16_t lo, hi;
};

// One shared-memory tile slot: the data plus, per element, whether a copy has written it since
// the slot was last (re)assigned to a k-tile, so reads of padding or stale data are caught.
struct Slot {
  std::vector<uint16_t> data;
  std::vector<uint8_t> written;
  int64_t k_tile = -1;
};

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8j..8j+7 give the row addresses of 8x8
// matrix j, which lands in register j. Plain: lane l gets row l/4, elements 2(l%4), 2(l%4)+1 of the
// matrix. .trans: lane l gets column l/4, rows 2(l%4) and 2(l%4)+1 (the transposed matrix's row l/4).
void ldmatrix_x4(const Slot& s, bool k_major, const int (&addr)[32], bool trans, Reg (&out)[32][4]) {
  const int stride = tile_stride(k_major), cols = tile_cols(k_major), elems = tile_elems(k_major);
  for (int lane = 0; lane < 32; ++lane) {
    const int a = addr[lane];
    if (a < 0 || a + 8 > elems || a % 8 != 0 || a % stride + 8 > cols)
      fail("ldmatrix row address " + std::to_string(a) + " of lane " + std::to_string(lane) +
           " is misaligned or outside the tile's columns");
    for (int e = 0; e < 8; ++e)
      if (!s.written[size_t(a + e)]) fail("ldmatrix reads an element no copy wrote for this k-tile");
  }
  for (int j = 0; j < 4; ++j) {
    const int* rows = &addr[8 * j];
    for (int lane = 0; lane < 32; ++lane) {
      if (!trans) {
        const int r = rows[lane >> 2] + 2 * (lane & 3);
        out[lane][j] = {s.data[size_t(r)], s.data[size_t(r + 1)]};
      } else {
        const int c = lane >> 2, r = 2 * (lane & 3);
        out[lane][j] = {s.data[size_t(rows[r] + c)], s.data[size_t(rows[r + 1] + c)]};
      }
    }
  }
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}: with g = lane/4, t = lane%4,
// A registers: a0 (row g, k 2t..2t+1), a1 (row g+8, k 2t..), a2 (row g, k 2t+8..), a3 (row g+8, k 2t+8..);
// B registers: b0 (k 2t..2t+1, col g), b1 (k 2t+8..2t+9, col g);
// C/D: d0, d1 (row g, cols 2t, 2t+1), d2, d3 (row g+8, cols 2t, 2t+1).
template <class T>
void mma_16816(float (&d)[32][4], const Reg (&a)[32][4], const Reg (&b)[32][2]) {
  float A[16][16], B[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int r = 0; r < 4; ++r) {
      const int row = g + (r & 1) * 8, k = 2 * t + (r >> 1) * 8;
      A[row][k] = to_float<T>(a[lane][r].lo);
      A[row][k + 1] = to_float<T>(a[lane][r].hi);
    }
    for (int r = 0; r < 2; ++r) {
      B[2 * t + r * 8][g] = to_float<T>(b[lane][r].lo);
      B[2 * t + r * 8 + 1][g] = to_float<T>(b[lane][r].hi);
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; ++i) {
      const int row = g + (i >> 1) * 8, col = 2 * t + (i & 1);
      float chunk = 0.0f;  // the emulated order: this k16 chunk in f32, then into the accumulator
      for (int k = 0; k < kMmaK; ++k) chunk += A[row][k] * B[k][col];
      d[lane][i] += chunk;
    }
  }
}

// The copies the 256 threads issue for one operand's k-tile kt into `slot` (TileLoader::load).
template <class T>
void load_tile(Slot& slot, bool k_major, const uint16_t* base, int64_t ld, int64_t rows, int64_t cols, int64_t mn0,
               int64_t kt) {
  slot.k_tile = kt;
  std::fill(slot.written.begin(), slot.written.end(), uint8_t(0));
  for (int tid = 0; tid < kCtaThreads; ++tid)
    for (int i = 0; i < kChunksPerThread; ++i) {
      const Pos in_tile = chunk_pos(k_major, chunk_index(tid, i));
      const Pos g = chunk_global(k_major, mn0, kt, in_tile);
      const int valid = chunk_valid(g, rows, cols);
      const int64_t dst = in_tile.row * tile_stride(k_major) + in_tile.col;
      if (in_tile.col + kChunk > tile_cols(k_major) || dst + kChunk > tile_elems(k_major)) fail("copy outside the tile");
      for (int e = 0; e < kChunk; ++e) {
        if (slot.written[size_t(dst + e)]) fail("two copies write one shared-memory element");
        // cp.async with src-size = 2*valid bytes: the first `valid` elements from global, the rest zero.
        slot.data[size_t(dst + e)] = e < valid ? base[g.row * ld + g.col + e] : uint16_t(0);
        slot.written[size_t(dst + e)] = 1;
      }
    }
}

template <class T>
void run(int64_t M, int64_t N, int64_t K, GemmOperand A, GemmOperand B, uint16_t* C, int64_t ldc,
         const cuda::GemmEpilogue& e) {
  const bool ta = A.trans, tb = B.trans, a_kmajor = !ta, b_kmajor = tb;
  const auto* a = static_cast<const uint16_t*>(A.data);
  const auto* b = static_cast<const uint16_t*>(B.data);
  const auto* bias = static_cast<const uint16_t*>(e.bias);
  const auto* res = static_cast<const uint16_t*>(e.residual);
  // Stored shapes: A [M][K] or [K][M]; B [N][K] or [K][N].
  const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
  const float alpha = float(e.alpha), beta = float(e.beta);
  const int64_t m_tiles = (M + kBM - 1) / kBM, n_tiles = (N + kBN - 1) / kBN, k_tiles = (K + kBK - 1) / kBK;

  std::vector<uint8_t> tile_seen(size_t(m_tiles * n_tiles), 0), out_seen(size_t(M * N), 0);
  std::vector<Slot> sa(kStages), sb(kStages);
  for (Slot& s : sa) s.data.resize(size_t(tile_elems(a_kmajor))), s.written.resize(s.data.size());
  for (Slot& s : sb) s.data.resize(size_t(tile_elems(b_kmajor))), s.written.resize(s.data.size());
  // acc[warp][lane][mt][nt][i]: the registers of the CTA's 256 threads.
  std::vector<float> acc(size_t(8) * 32 * kMTiles * kNTiles * 4);
  auto acc_at = [&](int warp, int lane, int mt, int nt) {
    return &acc[((size_t(warp) * 32 + lane) * kMTiles * kNTiles + mt * kNTiles + nt) * 4];
  };

  for (int64_t pid = 0; pid < m_tiles * n_tiles; ++pid) {  // blockIdx.x
    int64_t tm, tn;
    cta_tile(pid, m_tiles, n_tiles, tm, tn);
    if (tm < 0 || tm >= m_tiles || tn < 0 || tn >= n_tiles || tile_seen[size_t(tm * n_tiles + tn)]++)
      fail("CTA " + std::to_string(pid) + " maps to a bad or repeated tile");
    const int64_t m0 = tm * kBM, n0 = tn * kBN;
    for (Slot& s : sa) std::fill(s.data.begin(), s.data.end(), kPoison<T>), s.k_tile = -1;
    for (Slot& s : sb) std::fill(s.data.begin(), s.data.end(), kPoison<T>), s.k_tile = -1;
    std::fill(acc.begin(), acc.end(), 0.0f);

    auto load = [&](int64_t kt) {
      const int64_t slot = kt % kStages;
      load_tile<T>(sa[size_t(slot)], a_kmajor, a, A.ld, a_rows, a_cols, m0, kt);
      load_tile<T>(sb[size_t(slot)], b_kmajor, b, B.ld, b_rows, b_cols, n0, kt);
    };
    for (int s = 0; s < kStages - 1; ++s)  // prologue
      if (s < k_tiles) load(s);
    for (int64_t kt = 0; kt < k_tiles; ++kt) {
      // The GPU copies k-tile kt + 3 while computing kt: its slot must not be kt's.
      const int64_t next = kt + kStages - 1;
      if (next < k_tiles) {
        if (next % kStages == kt % kStages) fail("a copy targets the slot being computed on");
        load(next);
      }
      const Slot& a_slot = sa[size_t(kt % kStages)];
      const Slot& b_slot = sb[size_t(kt % kStages)];
      if (a_slot.k_tile != kt || b_slot.k_tile != kt) fail("k-tile " + std::to_string(kt) + " is not in its slot");
      for (int warp = 0; warp < kCtaThreads / 32; ++warp) {
        const int wm = warp_m_of(warp), wn = warp_n_of(warp);
        for (int ks = 0; ks < kKSteps; ++ks) {
          Reg af[kMTiles][32][4], bq[kNTiles / 2][32][4];
          int addr[32];
          for (int mt = 0; mt < kMTiles; ++mt) {
            for (int lane = 0; lane < 32; ++lane) addr[lane] = a_frag_offset(ta, wm, mt, ks, lane);
            ldmatrix_x4(a_slot, a_kmajor, addr, /*trans=*/ta, af[mt]);
          }
          for (int np = 0; np < kNTiles / 2; ++np) {
            for (int lane = 0; lane < 32; ++lane) addr[lane] = b_frag_offset(tb, wn, np, ks, lane);
            ldmatrix_x4(b_slot, b_kmajor, addr, /*trans=*/!tb, bq[np]);
          }
          for (int mt = 0; mt < kMTiles; ++mt)
            for (int nt = 0; nt < kNTiles; ++nt) {
              Reg bf[32][2];
              float d[32][4];
              for (int lane = 0; lane < 32; ++lane) {
                bf[lane][0] = bq[nt / 2][lane][(nt % 2) * 2];
                bf[lane][1] = bq[nt / 2][lane][(nt % 2) * 2 + 1];
                for (int i = 0; i < 4; ++i) d[lane][i] = acc_at(warp, lane, mt, nt)[i];
              }
              mma_16816<T>(d, af[mt], bf);
              for (int lane = 0; lane < 32; ++lane)
                for (int i = 0; i < 4; ++i) acc_at(warp, lane, mt, nt)[i] = d[lane][i];
            }
        }
      }
    }

    // Epilogue: each lane's registers to the elements it owns.
    for (int warp = 0; warp < kCtaThreads / 32; ++warp)
      for (int lane = 0; lane < 32; ++lane)
        for (int mt = 0; mt < kMTiles; ++mt)
          for (int nt = 0; nt < kNTiles; ++nt)
            for (int i = 0; i < 4; ++i) {
              const int64_t row = m0 + acc_row(warp_m_of(warp), mt, lane, i);
              const int64_t col = n0 + acc_col(warp_n_of(warp), nt, lane, i);
              if (row >= M || col >= N) continue;
              if (out_seen[size_t(row * N + col)]++) fail("an output element is owned twice");
              uint16_t* cp = C + row * ldc + col;
              const float c_old = beta != 0.0f ? to_float<T>(*cp) : 0.0f;
              const float bv = bias ? to_float<T>(bias[col]) : 0.0f;
              const float rv = res ? to_float<T>(res[row * e.ld_residual + col]) : 0.0f;
              const float v = epilogue_value(acc_at(warp, lane, mt, nt)[i], alpha, beta, c_old, bv, e.gelu, rv);
              *cp = T(v).bits;
            }
  }
  for (uint8_t seen : out_seen)
    if (seen != 1) fail("an output element is owned by no lane");
}

}  // namespace

void gemm_blocked_mirror(DType dtype, int64_t M, int64_t N, int64_t K, GemmOperand A, GemmOperand B, void* C,
                         int64_t ldc, const cuda::GemmEpilogue& e) {
  if (!cuda::gemm_mma_layout_supported(dtype, M, N, K, A, B, C, ldc, e))
    throw std::invalid_argument("gemm_blocked_mirror: a problem gemm_mma does not take (dtype " +
                                std::string(dtype_name(dtype)) + ", M=" + std::to_string(M) + " N=" +
                                std::to_string(N) + " K=" + std::to_string(K) + "; see gemm_mma_layout_supported)");
  if (dtype == DType::bf16)
    run<bf16>(M, N, K, A, B, static_cast<uint16_t*>(C), ldc, e);
  else
    run<f16>(M, N, K, A, B, static_cast<uint16_t*>(C), ldc, e);
}

}  // namespace loom::kernels::cpu
