// Hand-written bf16/f16 tensor-core GEMM for Hopper (sm_90a): wgmma.mma_async fed by TMA
// (cp.async.bulk.tensor), warp-specialised, with the fused epilogue of gemm_mma (alpha, beta, bias,
// GELU, residual). API, semantics, the accepted problems and every constant / index map:
// kernels/cuda/gemm_wgmma.h (namespace wgmma_map), unit-tested on the CPU by
// tests/kernels/test_gemm_wgmma_rules.cpp.
//
// Scope (first version): bf16/f16 in, f32 accumulation, same dtype out; only the Linear-forward
// layout, A [M][K] and B stored [N][K] (both K contiguous); one output tile per CTA; no clusters.
// Other layouts are reported unsupported (callers fall back to gemm_mma or cuBLASLt).
//
// Tiling and warp roles
// - CTA tile 128 (M) x 128 (N), k-tile 64; 288 threads: warps 0-7 are two consumer warpgroups
//   (warpgroup g owns rows 64g..64g+63 of the tile and issues wgmma.mma_async.m64n128k16, f32 += bf16|f16,
//   64 f32 accumulators per thread), warp 8 is the producer (lane 0 issues all TMA loads; lanes 1-31
//   exit at once). 1-D grid of ceil(M/128) * ceil(N/128) CTAs mapped to tiles by wgmma_map::cta_tile
//   (groups of 8 M-tiles, as gemm_mma).
//
// Pipeline and mbarrier protocol (kStages = 6 slots; k-tile kt uses slot kt % 6, phase kt / 6)
// - The 12 mbarriers live in static shared memory (96 B; see gemm_wgmma.h for why static).
//   Thread 0 initialises full[s] (arrival count 1) and empty[s] (count 8) for every slot, then
//   fence.mbarrier_init.release.cluster; a __syncthreads publishes them before the roles split.
// - Producer, for kt = 0 .. k_tiles-1: wait empty[s] with parity ((kt/6)&1)^1 (the first pass over the
//   ring passes at once: a fresh barrier's "previous" phase counts as complete), then
//   mbarrier.arrive.expect_tx(full[s], 32768) and two cp.async.bulk.tensor.2d loads (A box 64 k x 128
//   rows at (kt*64, m0), B box 64 x 128 at (kt*64, n0)) completing on full[s]. A box that sticks out of
//   the matrix (ragged M, N or K) is zero-filled by TMA and still delivers the full box's bytes, so the
//   expected transaction count is always 32768.
// - Consumers, for each kt: wait full[s] with parity (kt/6)&1; wgmma.fence; 4 wgmma (k16 steps);
//   wgmma.commit_group; wgmma.wait_group 1, which retires k-tile kt-1's group, so its slot is no longer
//   read: lane 0 of each consumer warp then arrives on empty[(kt-1)%6] (8 arrivals complete the phase).
//   One wgmma group stays in flight across the next full-barrier wait. After the loop,
//   wgmma.wait_group 0. The last slot is never released (nothing waits for it).
// - The tensor core reads what TMA wrote through the async proxy on both sides, ordered by the
//   mbarrier's complete_tx; no generic-proxy writes to the ring happen, so no fence.proxy.async is
//   needed in the loop.
//
// Shared memory, swizzle and descriptors
// - Dynamic shared memory is rounded up to 1024 bytes; then 6 A tiles [128 m][64 k] and 6 B tiles
//   [128 n][64 k] (16 KiB each): 197,632 bytes of dynamic shared memory requested, plus 96 static
//   bytes of mbarriers (1 CTA per SM).
// - Tensor maps (host, cuTensorMapEncodeTiled via cudaGetDriverEntryPointByVersion, so no libcuda link):
//   2-D, dims {K, rows}, row stride ld*2 bytes, box {64, 128}, CU_TENSOR_MAP_SWIZZLE_128B, OOB fill
//   zeros. Each 128-byte row lands with its 16-byte chunk c at c ^ (row % 8) (wgmma_map::sw128_*).
// - wgmma descriptors (wgmma_map::kmajor_sw128_desc): start = tile + 128*row0 + 32*k_step, LBO 16
//   (unused for K-major swizzled operands), SBO 1024 (8-row groups), base offset 0, swizzle mode 1
//   (128 B). Both operands K-major: imm-trans-a = imm-trans-b = 0.
//
// Epilogue straight from registers: consumer thread t owns (wgmma_map::acc_row / acc_col) pairs of
// adjacent columns; it reads C (only when beta != 0), bias and residual as 32-bit pairs where both
// columns are inside N, applies mma_map::epilogue_value (the formula gemm_mma uses) and stores
// bf16x2/f16x2; row and column guards handle ragged M and N.
//
// Arch guard: the kernel body is compiled only where __CUDA_ARCH_FEAT_SM90_ALL is defined (nvcc's
// macro for compute_90a); the sm_80 image holds an empty kernel, which the host never launches:
// device_ready demands compute capability 9.0, a loaded binary of version 90, and the body's 96 bytes
// of static shared memory (a build for plain sm_90 or "native" compiles the body out and is refused).
//
// Status: written and compiled without a GPU. The host rules and the index/bit math are tested on the
// CPU; the kernel itself (descriptors on hardware, the mbarrier protocol, numbers) is checked only by
// the GemmWgmmaCuda suite in tests/kernels/test_gemm_wgmma_rules.cpp (-DLOOM_GEMM_WGMMA_ON_CUDA), which
// has not run on an sm_90 device yet.
//
// ptxas -v (nvcc 13.0 V13.0.88, 2026-12-06; -O3, __launch_bounds__(288, 1)):
//   sm_90a, bf16 and f16 alike: 94 registers, 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill
//   loads, 1 barrier, 96 bytes static shared memory (the mbarriers; 197,632 B dynamic); no ptxas
//   warning (in particular none about serialised wgmma).
//   sm_80 (body compiled out): 4 registers, 0 barriers, 736 bytes cmem[0].
#include <cuda.h>  // CUtensorMap and the driver enums only: the driver is reached via the runtime's entry-point query
#include <cudaTypedefs.h>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include "kernels/cuda/gemm_wgmma.h"
#include "kernels/cuda/launch.cuh"

// A driver call's CUresult, checked like LOOM_CUDA_CHECK (the driver's own message would need libcuda).
#define LOOM_CU_CHECK(call)                                                                               \
  do {                                                                                                    \
    const CUresult res_ = (call);                                                                         \
    if (res_ != CUDA_SUCCESS)                                                                             \
      throw std::runtime_error(std::string("CUDA driver error in ") + #call + " (" + __FILE__ + ":" +     \
                               std::to_string(__LINE__) + "): CUresult " + std::to_string(int(res_))); \
  } while (0)

namespace loom::kernels::cuda {
namespace {

using namespace wgmma_map;

struct WgmmaParams {
  uint16_t* c;
  const uint16_t* bias;      // nullptr: none
  const uint16_t* residual;  // nullptr: none
  int64_t ldc, ldr;
  int64_t M, N, K;
  int64_t m_tiles, n_tiles;
  float alpha, beta;
  bool gelu;
};

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LOOM_WGMMA_DEVICE 1
#endif

// The device helpers exist only in the sm_90a pass (elsewhere nothing references them).
#ifdef LOOM_WGMMA_DEVICE
// ---- mbarrier (shared::cta addresses) ----
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Makes the initialised barriers visible to the async proxy (TMA's complete_tx) and to other threads.
__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Blocks until the phase of parity `parity` has completed (try_wait may also return false after a
// time-out of its own; the loop retries).
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

// ---- TMA ----
__device__ __forceinline__ void prefetch_tensor_map(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}
// Box at (c0 = innermost coordinate = k, c1 = row) of `map` into shared memory at `dst`, completing
// `bar`'s transaction count.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int32_t c0,
                                            int32_t c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], "
      "[%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}

// ---- wgmma ----
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int Pending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(Pending) : "memory");
}
// Keeps the compiler from moving accumulator reads/writes across the asynchronous wgmma window.
__device__ __forceinline__ void fence_accumulators(float (&d)[kAccRegs]) {
#pragma unroll
  for (int i = 0; i < kAccRegs; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define LOOM_WGMMA_M64N128K16(TY)                                         \
  "{\n"                                                                   \
  ".reg .pred p;\n"                                                       \
  "setp.ne.b32 p, %66, 0;\n"                                              \
  "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY "\n"           \
  "{"                                                                     \
    "%0, %1, %2, %3, %4, %5, %6, %7, " \
    "%8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, " \
    "%24, %25, %26, %27, %28, %29, %30, %31, " \
    "%32, %33, %34, %35, %36, %37, %38, %39, " \
    "%40, %41, %42, %43, %44, %45, %46, %47, " \
    "%48, %49, %50, %51, %52, %53, %54, %55, " \
    "%56, %57, %58, %59, %60, %61, %62, %63" \
  "},\n"                                                                  \
  "%64, %65, p, 1, 1, 0, 0;\n"                                            \
  "}\n"
#define LOOM_WGMMA_ACC_OPERANDS(d) \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
    "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
    "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
    "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
    "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

// d (+)= A(64 x 16, descriptor da) * B(16 x 128, descriptor db), both K-major (no transpose), scale 1.
template <class T>
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[kAccRegs], uint64_t da, uint64_t db, uint32_t scale_d) {
  if constexpr (std::is_same_v<T, bf16>)
    asm volatile(LOOM_WGMMA_M64N128K16("bf16") : LOOM_WGMMA_ACC_OPERANDS(d) : "l"(da), "l"(db), "r"(scale_d));
  else
    asm volatile(LOOM_WGMMA_M64N128K16("f16") : LOOM_WGMMA_ACC_OPERANDS(d) : "l"(da), "l"(db), "r"(scale_d));
}

#endif  // LOOM_WGMMA_DEVICE

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

template <class T>
__global__ void __launch_bounds__(kCtaThreads, 1)
    gemm_wgmma_kernel(const __grid_constant__ CUtensorMap tmap_a, const __grid_constant__ CUtensorMap tmap_b,
                      const WgmmaParams p) {
#ifdef LOOM_WGMMA_DEVICE
  extern __shared__ unsigned char gemm_wgmma_smem[];
  __shared__ __align__(8) uint64_t gemm_wgmma_bars[2 * kStages];  // full[0..5], empty[0..5]
  static_assert(sizeof(gemm_wgmma_bars) == kBarrierBytes, "the host checks this size");
  const uint32_t raw = uint32_t(__cvta_generic_to_shared(gemm_wgmma_smem));
  const uint32_t base = (raw + uint32_t(kSmemAlign - 1)) & ~uint32_t(kSmemAlign - 1);
  const uint32_t bars = uint32_t(__cvta_generic_to_shared(gemm_wgmma_bars));
  auto full_bar = [bars](int s) { return bars + uint32_t(8 * s); };
  auto empty_bar = [bars](int s) { return bars + uint32_t(8 * (kStages + s)); };

  const int tid = int(threadIdx.x), warp = tid >> 5, lane = tid & 31;
  int64_t tm, tn;
  cta_tile(int64_t(blockIdx.x), p.m_tiles, p.n_tiles, tm, tn);
  const int64_t m0 = tm * kBM, n0 = tn * kBN;
  const int64_t k_tiles = (p.K + kBK - 1) / kBK;

  if (tid == 0) {
#pragma unroll
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full_bar(s), kFullArrivals);
      mbar_init(empty_bar(s), kEmptyArrivals);
    }
    fence_mbarrier_init();
  }
  __syncthreads();  // the last CTA-wide barrier: the roles split here

  if (warp == kProducerWarp) {
    if (lane == 0) {
      prefetch_tensor_map(&tmap_a);
      prefetch_tensor_map(&tmap_b);
      for (int64_t kt = 0; kt < k_tiles; ++kt) {
        const int s = stage_of(kt);
        mbar_wait(empty_bar(s), empty_parity(kt));
        const uint32_t full = full_bar(s);
        mbar_arrive_expect_tx(full, uint32_t(kTxBytes));
        const int32_t k0 = int32_t(kt * kBK);
        tma_load_2d(base + a_tile_offset(s), &tmap_a, full, k0, int32_t(m0));
        tma_load_2d(base + b_tile_offset(s), &tmap_b, full, k0, int32_t(n0));
      }
    }
    return;
  }

  // Consumers: warpgroup wg computes rows 64 wg .. 64 wg + 63 of the tile.
  const uint32_t wg = uint32_t(tid / kWarpgroupThreads);
  float acc[kAccRegs];
#pragma unroll
  for (int i = 0; i < kAccRegs; ++i) acc[i] = 0.0f;

  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    const int s = stage_of(kt);
    mbar_wait(full_bar(s), full_parity(kt));
    __syncwarp();  // reconverge after the spin loop: the wgmma instructions are .sync.aligned
    const uint32_t a_tile = base + a_tile_offset(s), b_tile = base + b_tile_offset(s);
    fence_accumulators(acc);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks)
      wgmma_m64n128k16<T>(acc, kmajor_sw128_desc(a_tile, wg * kWgmmaM, uint32_t(ks)),
                          kmajor_sw128_desc(b_tile, 0, uint32_t(ks)), 1u);
    wgmma_commit();
    fence_accumulators(acc);
    wgmma_wait<1>();  // k-tile kt-1's wgmma are done reading their slot
    fence_accumulators(acc);
    if (kt > 0 && lane == 0) mbar_arrive(empty_bar(stage_of(kt - 1)));
    __syncwarp();
  }
  wgmma_wait<0>();
  fence_accumulators(acc);

  // Epilogue: registers (2h, 2h + 1) are adjacent columns of one row.
#pragma unroll
  for (int h = 0; h < kAccRegs / 2; ++h) {
    const int64_t row = m0 + acc_row(tid, 2 * h);
    const int64_t col = n0 + acc_col(tid, 2 * h);
    if (row >= p.M || col >= p.N) continue;
    const bool pair = col + 1 < p.N;
    float c0 = 0, c1 = 0, b0 = 0, b1 = 0, r0 = 0, r1 = 0;
    uint16_t* cp = p.c + row * p.ldc + col;
    if (p.beta != 0.0f) load_pair<T>(cp, pair, c0, c1);
    if (p.bias) load_pair<T>(p.bias + col, pair, b0, b1);
    if (p.residual) load_pair<T>(p.residual + row * p.ldr + col, pair, r0, r1);
    const float v0 = mma_map::epilogue_value(acc[2 * h], p.alpha, p.beta, c0, b0, p.gelu, r0);
    const uint16_t s0 = to_bits<T>(v0);
    if (pair) {
      const float v1 = mma_map::epilogue_value(acc[2 * h + 1], p.alpha, p.beta, c1, b1, p.gelu, r1);
      *reinterpret_cast<uint32_t*>(cp) = uint32_t(s0) | uint32_t(to_bits<T>(v1)) << 16;
    } else {
      *cp = s0;
    }
  }
#endif
}

using KernelFn = void (*)(CUtensorMap, CUtensorMap, WgmmaParams);
constexpr int kKernels = 2;  // bf16, f16
const KernelFn kKernelTable[kKernels] = {&gemm_wgmma_kernel<bf16>, &gemm_wgmma_kernel<f16>};
constexpr int kernel_index(DType dtype) { return dtype == DType::f16 ? 1 : 0; }

// cuTensorMapEncodeTiled from the driver, through the runtime (no link to libcuda). nullptr when the
// installed driver does not provide it (then the kernel is reported unsupported).
PFN_cuTensorMapEncodeTiled_v12000 encode_tiled() {
  static std::atomic<PFN_cuTensorMapEncodeTiled_v12000> fn{nullptr};
  static std::atomic<bool> looked{false};
  static std::mutex mu;
  if (looked.load(std::memory_order_acquire)) return fn.load(std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(mu);
  if (!looked.load(std::memory_order_relaxed)) {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult query = cudaDriverEntryPointSymbolNotFound;
    LOOM_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &query));
    if (query == cudaDriverEntryPointSuccess && ptr != nullptr)
      fn.store(reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr), std::memory_order_relaxed);
    looked.store(true, std::memory_order_release);
  }
  return fn.load(std::memory_order_relaxed);
}

// The tensor map of a K-major operand: `rows` rows of `k` elements, row stride `ld` elements; boxes of
// kBK x box_rows, 128-byte swizzle, out-of-bounds elements read as zero.
CUtensorMap kmajor_tensor_map(DType dtype, const void* data, int64_t rows, int64_t k, int64_t ld, uint32_t box_rows) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = encode_tiled();
  if (encode == nullptr) throw std::runtime_error("cuda::gemm_wgmma: the driver provides no cuTensorMapEncodeTiled");
  CUtensorMap map;
  const cuuint64_t dims[2] = {cuuint64_t(k), cuuint64_t(rows)};
  const cuuint64_t strides[1] = {cuuint64_t(ld) * cuuint64_t(kElemBytes)};  // bytes, for dimension 1
  const cuuint32_t box[2] = {cuuint32_t(kBK), box_rows};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUtensorMapDataType type =
      dtype == DType::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  LOOM_CU_CHECK(encode(&map, type, 2, const_cast<void*>(data), dims, strides, box, element_strides,
                       CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                       CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE));
  return map;
}

constexpr int kMaxDevices = 64;

// Per device, once: can the kernel run here? Compute capability exactly 9.0 (the sm_90a image runs
// nowhere else; elsewhere the sm_80 image, whose kernel is empty, could load), the loaded binary is
// version 90 and holds the real body (its static mbarriers: a plain sm_90 build compiles the body out),
// the opt-in shared memory suffices, the driver has cuTensorMapEncodeTiled. If so, raise the dynamic
// shared-memory limit. 0 unknown, 1 yes, -1 no.
bool device_ready(int dev) {
  static std::atomic<int> state[kMaxDevices];
  static std::mutex mu;
  if (dev < 0 || dev >= kMaxDevices) return false;
  if (const int s = state[dev].load(std::memory_order_acquire); s != 0) return s > 0;
  std::lock_guard<std::mutex> lock(mu);
  if (const int s = state[dev].load(std::memory_order_relaxed); s != 0) return s > 0;
  int major = 0, minor = 0, optin = 0;
  LOOM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  LOOM_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  LOOM_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  bool ok = major == 9 && minor == 0 && encode_tiled() != nullptr;
  for (int i = 0; i < kKernels && ok; ++i) {
    cudaFuncAttributes attr{};
    const cudaError_t err = cudaFuncGetAttributes(&attr, kKernelTable[i]);
    if (err == cudaErrorInvalidDeviceFunction || err == cudaErrorNoKernelImageForDevice) {
      (void)cudaGetLastError();  // clear it: the caller falls back
      ok = false;
      break;
    }
    LOOM_CUDA_CHECK(err);
    // binaryVersion 90 and the static barriers: the sm_90a body, not an sm_90/PTX image without it.
    if (attr.binaryVersion != 90 || int(attr.sharedSizeBytes) < kBarrierBytes ||
        kSmemBytes + int(attr.sharedSizeBytes) > optin) {
      ok = false;
      break;
    }
    LOOM_CUDA_CHECK(cudaFuncSetAttribute(kKernelTable[i], cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  }
  state[dev].store(ok ? 1 : -1, std::memory_order_release);
  return ok;
}

}  // namespace

bool gemm_wgmma_supported(DType dtype, int64_t M, int64_t N, int64_t K, GemmOperand A, GemmOperand B, const void* C,
                          int64_t ldc, const GemmEpilogue& e) {
  return gemm_wgmma_layout_supported(dtype, M, N, K, A, B, C, ldc, e) && device_ready(current_device());
}

void gemm_wgmma(DType dtype, int64_t M, int64_t N, int64_t K, GemmOperand A, GemmOperand B, void* C, int64_t ldc,
                const GemmEpilogue& e) {
  if (!gemm_wgmma_layout_supported(dtype, M, N, K, A, B, C, ldc, e))
    throw std::invalid_argument("cuda::gemm_wgmma: unsupported problem (" + std::string(dtype_name(dtype)) +
                                ", M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                                (A.trans ? ", A^T" : ", A") + (B.trans ? " B^T" : " B") + ", lda=" +
                                std::to_string(A.ld) + " ldb=" + std::to_string(B.ld) + " ldc=" + std::to_string(ldc) +
                                "; see gemm_wgmma_layout_supported)");
  if (!device_ready(current_device()))
    throw std::invalid_argument("cuda::gemm_wgmma: the current device cannot run the sm_90a kernel");
  const CUtensorMap map_a = kmajor_tensor_map(dtype, A.data, M, K, A.ld, uint32_t(kBM));
  const CUtensorMap map_b = kmajor_tensor_map(dtype, B.data, N, K, B.ld, uint32_t(kBN));
  WgmmaParams p{};
  p.c = static_cast<uint16_t*>(C);
  p.bias = static_cast<const uint16_t*>(e.bias);
  p.residual = static_cast<const uint16_t*>(e.residual);
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
  const unsigned grid = unsigned(p.m_tiles * p.n_tiles);
  kKernelTable[kernel_index(dtype)]<<<grid, kCtaThreads, kSmemBytes, stream()>>>(map_a, map_b, p);
  LOOM_CUDA_LAUNCH_CHECK();
}

}  // namespace loom::kernels::cuda
