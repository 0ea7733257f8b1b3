// Hand-written bf16/f16 tensor-core GEMM for sm_80+ (mma.sync + ldmatrix + cp.async), with a fused
// epilogue (alpha, beta, bias, GELU, residual). API, semantics and the accepted problems:
// kernels/cuda/gemm_mma.h. CPU mirror of this exact blocking: tests/kernels/gemm_blocked_mirror.h.
//
// Tiling (constants and index maps in gemm_mma.h, namespace mma_map, shared with the mirror):
// - CTA tile 128 (M) x 128 (N), k-tile 32, 256 threads = 8 warps in a 2 (M) x 4 (N) grid; each warp
//   owns 64 x 32 of C: 4 m16 x 4 n8 fragments of mma.sync.m16n8k16 (row.col, f32 += bf16|f16),
//   64 f32 accumulators per thread. Per k-tile, per k16 step, a warp issues 4 ldmatrix.x4 for A,
//   2 ldmatrix.x4 for B and 16 mma.
// - 1-D grid of ceil(M/128) * ceil(N/128) CTAs; CTA ids are mapped to tiles in groups of 8 M-tiles
//   (mma_map::cta_tile) so that CTAs resident together share operand tiles in L2.
// - Global -> shared: cp.async.cg 16-byte copies, 2 per thread per operand per k-tile; a copy that
//   runs past the matrix (M, N or K edge) passes src-size < 16 (0 when entirely outside, with the
//   source pointer clamped to the operand's base) and the hardware zero-fills the rest. 4-stage ring:
//   the prologue issues k-tiles 0..2; iteration kt waits until k-tile kt has landed
//   (cp.async.wait_group 2), barriers once, issues k-tile kt+3 into the slot that k-tile kt-1 used
//   (every warp finished reading it before the barrier), then computes on slot kt % 4. One commit
//   group per iteration, empty past the end, so the wait count stays constant.
// - Shared memory keeps each operand as it is stored: K-major tiles [128][32+8] (A not transposed,
//   B transposed) or MN-major tiles [32][128+8] (A transposed, B not transposed); the 16-byte row
//   padding puts the 8 rows of every ldmatrix 8x8 matrix in distinct bank groups. K-major tiles are
//   read with ldmatrix, MN-major ones with ldmatrix.trans, both giving the mma's fragment layout.
//   80 KiB per CTA for the Linear layout (A [M][K], B [N][K]), 68-80 KiB for the others: opted in
//   with cudaFuncAttributeMaxDynamicSharedMemorySize; 2 CTAs per SM (__launch_bounds__(256, 2)).
// - Epilogue straight from registers: each lane owns pairs of adjacent columns (mma_map::acc_row /
//   acc_col), reads C (only when beta != 0), bias and residual as 32-bit pairs where both columns
//   are inside N, applies mma_map::epilogue_value and stores bf16x2/f16x2; row and column guards
//   handle ragged M and N.
//
// Status: written and compiled without a GPU. The index math is exercised by the CPU mirror's tests
// (tests/kernels/test_gemm_blocked.cpp); the kernel's results on hardware are checked by the same
// file's GemmMmaCuda suite (built with -DLOOM_GEMM_MMA_ON_CUDA), which has not run yet.
//
// ptxas -v (nvcc 13.0 V13.0.88, 2026-12-06; -O3, __launch_bounds__(256, 2) caps registers at 128):
//   every instantiation: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads, 1 barrier,
//   no static shared memory (all dynamic: 81920 B for A/B^T, 75776 B for A/B and A^T/B^T, 69632 B
//   for A^T/B), 480 bytes cmem[0] on sm_80. Registers (A/B^T = Linear forward):
//                 A,B^T  A,B  A^T,B  A^T,B^T
//     sm_80  bf16  128   128   122    127
//     sm_80  f16   128   128   122    127
//     sm_90a bf16  124   124   126    128
//     sm_90a f16   124   128   126    126
#include <atomic>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include "kernels/cuda/gemm_mma.h"
#include "kernels/cuda/launch.cuh"

namespace loom::kernels::cuda {
namespace {

using namespace mma_map;

struct MmaParams {
  const uint16_t* a;
  const uint16_t* b;
  uint16_t* c;
  const uint16_t* bias;      // nullptr: none
  const uint16_t* residual;  // nullptr: none
  int64_t lda, ldb, ldc, ldr;
  int64_t M, N, K;
  int64_t m_tiles, n_tiles;
  float alpha, beta;
  bool gelu;
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define LOOM_MMA_DEVICE 1
#endif

__device__ __forceinline__ void cp_async_16(uint32_t smem_addr, const void* gmem, int src_bytes) {
#ifdef LOOM_MMA_DEVICE
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr), "l"(gmem), "r"(src_bytes)
               : "memory");
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#ifdef LOOM_MMA_DEVICE
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
#ifdef LOOM_MMA_DEVICE
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
#endif
}

template <bool Trans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t smem_addr) {
#ifdef LOOM_MMA_DEVICE
  if constexpr (Trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr));
#endif
}

// d += a * b for one m16n8k16 fragment; T picks the input type.
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifdef LOOM_MMA_DEVICE
  if constexpr (std::is_same_v<T, bf16>)
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

template <class T>
__device__ __forceinline__ float to_float(uint16_t bits) {
  T t;
  t.bits = bits;
  return float(t);
}
template <class T>
__device__ __forceinline__ uint16_t to_bits(float v) {
  return T(v).bits;
}

// One operand's cp.async copies: this thread's kChunksPerThread chunks of every k-tile.
template <bool KMajor>
struct TileLoader {
  const uint16_t* base;
  int64_t ld, rows, cols;  // the stored matrix
  int64_t mn0;             // the CTA's first row of M (A) or column of N (B)
  Pos in_tile[kChunksPerThread];
  uint32_t smem_off[kChunksPerThread];  // bytes within a stage

  __device__ __forceinline__ TileLoader(const uint16_t* base_, int64_t ld_, int64_t rows_, int64_t cols_, int64_t mn0_,
                                        int tid)
      : base(base_), ld(ld_), rows(rows_), cols(cols_), mn0(mn0_) {
#pragma unroll
    for (int i = 0; i < kChunksPerThread; ++i) {
      in_tile[i] = chunk_pos(KMajor, chunk_index(tid, i));
      smem_off[i] = uint32_t(in_tile[i].row * tile_stride(KMajor) + in_tile[i].col) * 2u;
    }
  }

  __device__ __forceinline__ void load(uint32_t stage_addr, int64_t kt) const {
#pragma unroll
    for (int i = 0; i < kChunksPerThread; ++i) {
      const Pos g = chunk_global(KMajor, mn0, kt, in_tile[i]);
      const int valid = chunk_valid(g, rows, cols);
      const uint16_t* src = valid > 0 ? base + g.row * ld + g.col : base;
      cp_async_16(stage_addr + smem_off[i], src, valid * 2);
    }
  }
};

// Two adjacent elements (columns col, col + 1) or one (pair == false) as floats.
template <class T>
__device__ __forceinline__ void load_pair(const uint16_t* p, bool pair, float& x0, float& x1) {
  if (pair) {
    const uint32_t w = *reinterpret_cast<const uint32_t*>(p);
    x0 = to_float<T>(uint16_t(w & 0xffffu));
    x1 = to_float<T>(uint16_t(w >> 16));
  } else {
    x0 = to_float<T>(*p);
    x1 = 0.0f;
  }
}

template <class T, bool TA, bool TB>
__global__ void __launch_bounds__(kCtaThreads, 2) gemm_mma_kernel(const MmaParams p) {
#ifdef LOOM_MMA_DEVICE
  constexpr bool a_kmajor = !TA, b_kmajor = TB;
  constexpr uint32_t a_stage_bytes = tile_elems(a_kmajor) * 2, b_stage_bytes = tile_elems(b_kmajor) * 2;
  extern __shared__ __align__(16) unsigned char gemm_mma_smem[];
  const uint32_t sa = uint32_t(__cvta_generic_to_shared(gemm_mma_smem));
  const uint32_t sb = sa + kStages * a_stage_bytes;

  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp_m_of(warp), warp_n = warp_n_of(warp);
  int64_t tm, tn;
  cta_tile(int64_t(blockIdx.x), p.m_tiles, p.n_tiles, tm, tn);
  const int64_t m0 = tm * kBM, n0 = tn * kBN;

  // Stored shapes: A [M][K] or [K][M]; B [N][K] or [K][N].
  const TileLoader<a_kmajor> la(p.a, p.lda, TA ? p.K : p.M, TA ? p.M : p.K, m0, tid);
  const TileLoader<b_kmajor> lb(p.b, p.ldb, TB ? p.N : p.K, TB ? p.K : p.N, n0, tid);

  float acc[kMTiles][kNTiles][4];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;

  const int64_t k_tiles = (p.K + kBK - 1) / kBK;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) {
      la.load(sa + s * a_stage_bytes, s);
      lb.load(sb + s * b_stage_bytes, s);
    }
    cp_async_commit();
  }

  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kStages - 2>();  // this thread's copies of k-tile kt have landed
    __syncthreads();               // everyone's have; and everyone is done with k-tile kt-1's slot
    const int64_t next = kt + kStages - 1;
    if (next < k_tiles) {
      const uint32_t slot = uint32_t(next % kStages);
      la.load(sa + slot * a_stage_bytes, next);
      lb.load(sb + slot * b_stage_bytes, next);
    }
    cp_async_commit();

    const uint32_t slot = uint32_t(kt % kStages);
    const uint32_t a_base = sa + slot * a_stage_bytes, b_base = sb + slot * b_stage_bytes;
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      uint32_t af[kMTiles][4], bfr[kNTiles / 2][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
        ldmatrix_x4<TA>(af[mt], a_base + uint32_t(a_frag_offset(TA, warp_m, mt, ks, lane)) * 2u);
#pragma unroll
      for (int np = 0; np < kNTiles / 2; ++np)
        ldmatrix_x4<!TB>(bfr[np], b_base + uint32_t(b_frag_offset(TB, warp_n, np, ks, lane)) * 2u);
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt)
          mma_16816<T>(acc[mt][nt], af[mt], bfr[nt / 2][(nt % 2) * 2], bfr[nt / 2][(nt % 2) * 2 + 1]);
    }
  }
  cp_async_wait<0>();  // only empty groups can be pending here; drain them before exit

  // Epilogue: registers (i = 0, 1) and (2, 3) of each fragment are column pairs of one row.
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t row = m0 + acc_row(warp_m, mt, lane, 2 * h);
        const int64_t col = n0 + acc_col(warp_n, nt, lane, 2 * h);
        if (row >= p.M || col >= p.N) continue;
        const bool pair = col + 1 < p.N;
        float c0 = 0, c1 = 0, b0 = 0, b1 = 0, r0 = 0, r1 = 0;
        uint16_t* cp = p.c + row * p.ldc + col;
        if (p.beta != 0.0f) load_pair<T>(cp, pair, c0, c1);
        if (p.bias) load_pair<T>(p.bias + col, pair, b0, b1);
        if (p.residual) load_pair<T>(p.residual + row * p.ldr + col, pair, r0, r1);
        const float v0 = epilogue_value(acc[mt][nt][2 * h], p.alpha, p.beta, c0, b0, p.gelu, r0);
        const uint16_t s0 = to_bits<T>(v0);
        if (pair) {
          const float v1 = epilogue_value(acc[mt][nt][2 * h + 1], p.alpha, p.beta, c1, b1, p.gelu, r1);
          *reinterpret_cast<uint32_t*>(cp) = uint32_t(s0) | uint32_t(to_bits<T>(v1)) << 16;
        } else {
          *cp = s0;
        }
      }
#endif
}

template <class T, bool TA, bool TB>
constexpr auto kernel_of() {
  return &gemm_mma_kernel<T, TA, TB>;
}

// The eight instantiations, indexed by dtype (bf16 0, f16 1) * 4 + A.trans * 2 + B.trans.
using KernelFn = void (*)(MmaParams);
constexpr int kKernels = 8;
const KernelFn kKernelTable[kKernels] = {
    kernel_of<bf16, false, false>(), kernel_of<bf16, false, true>(), kernel_of<bf16, true, false>(),
    kernel_of<bf16, true, true>(),   kernel_of<f16, false, false>(),  kernel_of<f16, false, true>(),
    kernel_of<f16, true, false>(),   kernel_of<f16, true, true>()};
constexpr int kernel_index(DType dtype, bool ta, bool tb) { return (dtype == DType::f16 ? 4 : 0) + ta * 2 + tb; }

constexpr int kMaxDevices = 64;

// Per device, once: can the kernels run here (an image for this architecture, enough opt-in
// shared memory)? If so, raise each kernel's dynamic shared-memory limit. 0 unknown, 1 yes, -1 no.
bool device_ready(int dev) {
  static std::atomic<int> state[kMaxDevices];
  static std::mutex mu;
  if (dev < 0 || dev >= kMaxDevices) return false;
  if (const int s = state[dev].load(std::memory_order_acquire); s != 0) return s > 0;
  std::lock_guard<std::mutex> lock(mu);
  if (const int s = state[dev].load(std::memory_order_relaxed); s != 0) return s > 0;
  int optin = 0, major = 0;
  LOOM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  LOOM_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  bool ok = major >= 8;
  for (int i = 0; i < kKernels && ok; ++i) {
    const bool ta = (i >> 1) & 1, tb = i & 1;
    const int smem = smem_bytes(ta, tb);
    cudaFuncAttributes attr{};
    const cudaError_t err = cudaFuncGetAttributes(&attr, kKernelTable[i]);
    if (err == cudaErrorInvalidDeviceFunction || err == cudaErrorNoKernelImageForDevice) {
      (void)cudaGetLastError();  // clear it: the caller falls back to cuBLASLt
      ok = false;
      break;
    }
    LOOM_CUDA_CHECK(err);
    if (attr.binaryVersion < 80 || smem + int(attr.sharedSizeBytes) > optin) {
      ok = false;
      break;
    }
    LOOM_CUDA_CHECK(cudaFuncSetAttribute(kKernelTable[i], cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    LOOM_CUDA_CHECK(cudaFuncSetAttribute(kKernelTable[i], cudaFuncAttributePreferredSharedMemoryCarveout,
                                         int(cudaSharedmemCarveoutMaxShared)));
  }
  state[dev].store(ok ? 1 : -1, std::memory_order_release);
  return ok;
}

}  // namespace

bool gemm_mma_supported(DType dtype, int64_t M, int64_t N, int64_t K, GemmOperand A, GemmOperand B, const void* C,
                        int64_t ldc, const GemmEpilogue& e) {
  return gemm_mma_layout_supported(dtype, M, N, K, A, B, C, ldc, e) && device_ready(current_device());
}

void gemm_mma(DType dtype, int64_t M, int64_t N, int64_t K, GemmOperand A, GemmOperand B, void* C, int64_t ldc,
              const GemmEpilogue& e) {
  if (!gemm_mma_layout_supported(dtype, M, N, K, A, B, C, ldc, e))
    throw std::invalid_argument("cuda::gemm_mma: unsupported problem (" + std::string(dtype_name(dtype)) + ", M=" +
                                std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                                ", lda=" + std::to_string(A.ld) + " ldb=" + std::to_string(B.ld) + " ldc=" +
                                std::to_string(ldc) + "; see gemm_mma_layout_supported)");
  if (!device_ready(current_device()))
    throw std::invalid_argument("cuda::gemm_mma: the current device cannot run the sm_80/sm_90a kernel");
  MmaParams p{};
  p.a = static_cast<const uint16_t*>(A.data);
  p.b = static_cast<const uint16_t*>(B.data);
  p.c = static_cast<uint16_t*>(C);
  p.bias = static_cast<const uint16_t*>(e.bias);
  p.residual = static_cast<const uint16_t*>(e.residual);
  p.lda = A.ld;
  p.ldb = B.ld;
  p.ldc = ldc;
  p.ldr = e.ld_residual;
  p.M = M;
  p.N = N;
  p.K = K;
  p.m_tiles = (M + kBM - 1) / kBM;
  p.n_tiles = (N + kBN - 1) / kBN;
  p.alpha = float(e.alpha);
  p.beta = float(e.beta);
  p.gelu = e.gelu;
  const KernelFn kernel = kKernelTable[kernel_index(dtype, A.trans, B.trans)];
  const unsigned grid = unsigned(p.m_tiles * p.n_tiles);
  kernel<<<grid, kCtaThreads, smem_bytes(A.trans, B.trans), stream()>>>(p);
  LOOM_CUDA_LAUNCH_CHECK();
}

}  // namespace loom::kernels::cuda
