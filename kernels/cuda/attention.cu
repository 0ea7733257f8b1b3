// The ATTENTION family on CUDA (kernels/kernel_list.h, kernels/common/attention_args.h):
// flash attention forward and backward on tensor cores (mma.sync m16n8k16, bf16/f16 in, f32 out).
//
// Forward: one block of 4 warps per (b, h, 64 query rows); each warp owns 16 query rows. Q's tile
// stays in registers as A fragments; for each 64-key tile, K and Vᵀ are staged in shared memory,
// S = Q·Kᵀ is 8 n8-fragments per warp, masked and scaled, then the online softmax: the running
// row max m and sum l (per thread, l summed over the 4 threads of a quad only at the end), the
// accumulator O rescaled by exp(m_old - m_new), P = exp(S - m_new) rounded to the input dtype and
// fed straight from the S fragments (the C layout of two n8 tiles is the A layout of one k16
// chunk) into O += P·V. At the end O /= l and lse = m + ln l. Scores are kept in log2 units
// (scaled by log2 e) so the exponentials are exp2.
//
// Backward (FlashAttention-2's loop order): one block of 4 warps per (b, h, 64 key rows), each warp
// owning 16 of them, looping over the query tiles: Sᵀ = K·Qᵀ, Pᵀ = exp(Sᵀ - lse), dV += Pᵀ·dO,
// dPᵀ = V·dOᵀ, dSᵀ = Pᵀ∘(dPᵀ - Δ) with Δ = rowsum(dO∘O) precomputed, dK += dSᵀ·Q; dS goes through
// shared memory so each warp can add its 16 query rows of dQ += dS·K into an f32 buffer with
// atomics (other key tiles add theirs). dK, dV are written once at the end, scaled.
//
// Shared-memory rows are padded by 8 elements (16 bytes) so a quad's 32-bit fragment loads of 8
// consecutive rows fall in different banks. Operands that an mma needs "k-contiguous" in the other
// orientation (Vᵀ, Qᵀ, Kᵀ, dOᵀ) are stored transposed when staged. No cp.async pipelining or
// ldmatrix yet: this is the correct-first version, to be measured against cuDNN on a GPU.
//
// CPU mirror of this blocking: tests/kernels/flash_mirror.cpp (tested against the reference).
//
// ptxas -v (nvcc 13.0, 2026-12-06; the same for bf16 and f16, sm_80 / sm_90a):
//   forward   D64: 136 registers, D128: 183 registers; no spills; 27.6 / 52.2 KB dynamic shared memory
//   backward  D64: 176 / 181 registers, no spills; D128: 255 registers, 16 bytes spilled; 69 / 135 KB
//   delta     30 registers
// Status: compiled, never run (no GPU yet); tests/kernels/test_cuda_flash.cpp checks it on one.
#define LOOM_DEFINING_ATTENTION  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <atomic>
#include <cmath>
#include <stdexcept>
#include "kernels/cuda/cuda.h"
#include "kernels/cuda/launch.cuh"

namespace loom::kernels::cuda {
namespace {

// The kernels' own view of AttentionArgs: [B, H, S, D] tensors as a pointer plus element strides
// for b, h and s (d is unit-stride), masks and bias as raw strides.
struct FlashTensor {
  const void* data = nullptr;
  int64_t stride_b = 0, stride_h = 0, stride_s = 0;
};

struct FlashParams {
  DType dtype = DType::bf16;  // of q, k, v, out, dout, dk, dv and bias
  int64_t B = 0, H = 0, Sq = 0, Sk = 0, D = 0;  // v's head dim equals q's
  FlashTensor q, k, v, out;
  float* lse = nullptr;  // [B, H, Sq] contiguous f32 (natural log; +inf for a query with no visible key)
  float scale = 1.0f;
  bool causal = false;  // query i sees keys j <= i (top-left aligned, as the composed path)
  const uint8_t* key_padding = nullptr;  // bool [B, Sk], true = ignored key; null: none
  int64_t key_padding_stride_b = 0, key_padding_stride_k = 1;
  const void* bias = nullptr;  // additive, dtype; element (b, h, i, j) at the strides below (0 = broadcast)
  int64_t bias_stride_b = 0, bias_stride_h = 0, bias_stride_q = 0, bias_stride_k = 0;
  // backward only
  FlashTensor dout, dk, dv;
  float* dq_accum = nullptr;  // [B, H, Sq, D] contiguous f32, zeroed by the caller
  float* delta = nullptr;     // [B, H, Sq] contiguous f32 scratch: rowsum(dout * out)
};

constexpr int kBlockQ = 64, kBlockK = 64, kWarps = 4, kFlashThreads = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

template <class T> struct Pack;
template <> struct Pack<__nv_bfloat16> {
  static __device__ __forceinline__ uint32_t two(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
  static __device__ __forceinline__ float2 unpack(uint32_t u) {
    __nv_bfloat162 v = *reinterpret_cast<__nv_bfloat162*>(&u);
    return __bfloat1622float2(v);
  }
  static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
  static __device__ __forceinline__ __nv_bfloat16 from(float f) { return __float2bfloat16_rn(f); }
};
template <> struct Pack<__half> {
  static __device__ __forceinline__ uint32_t two(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
  static __device__ __forceinline__ float2 unpack(uint32_t u) {
    __half2 v = *reinterpret_cast<__half2*>(&u);
    return __half22float2(v);
  }
  static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }
  static __device__ __forceinline__ __half from(float f) { return __float2half_rn(f); }
};

template <class T> __device__ __forceinline__ uint32_t ld32(const T* p) { return *reinterpret_cast<const uint32_t*>(p); }

// Rows [row0, row0 + rows) of a [S, D] slice (row stride `stride`) into shared memory with row
// pitch `pitch`, 16 bytes at a time; rows at or past `limit` are zero. With `transposed_pitch` > 0
// the tile is also (or only, when `pitch` is 0) stored transposed: element (r, d) at d * tp + r.
template <class T, int D>
__device__ __forceinline__ void stage_rows(const T* src, int64_t stride, int64_t row0, int64_t limit, int rows, T* dst,
                                           int pitch, T* dst_t, int tp) {
  constexpr int kChunks = D / 8;
  for (int i = threadIdx.x; i < rows * kChunks; i += kFlashThreads) {
    const int r = i / kChunks, col = (i % kChunks) * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row0 + r < limit) v = *reinterpret_cast<const uint4*>(src + (row0 + r) * stride + col);
    if (dst) *reinterpret_cast<uint4*>(dst + r * pitch + col) = v;
    if (dst_t) {
      const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
      for (int j = 0; j < 8; ++j) dst_t[(col + j) * tp + r] = e[j];
    }
  }
}

// Whether key `col` is hidden from query `row` (past the end, padding, or the future under causal).
__device__ __forceinline__ bool masked(const FlashParams& p, int64_t b, int64_t row, int64_t col) {
  if (col >= p.Sk) return true;
  if (p.causal && col > row) return true;
  if (p.key_padding && p.key_padding[b * p.key_padding_stride_b + col * p.key_padding_stride_k]) return true;
  return false;
}

template <class T>
__device__ __forceinline__ float bias_at(const FlashParams& p, int64_t b, int64_t h, int64_t row, int64_t col) {
  if (!p.bias || row >= p.Sq || col >= p.Sk) return 0.f;
  const T* bias = static_cast<const T*>(p.bias);
  return Pack<T>::load(bias + b * p.bias_stride_b + h * p.bias_stride_h + row * p.bias_stride_q + col * p.bias_stride_k);
}

// ------------------------------------------------------------------------------------------ forward
template <class T, int D>
__global__ void __launch_bounds__(kFlashThreads) flash_forward_kernel(FlashParams p) {
  constexpr int LD = D + 8, LDT = kBlockK + 8;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);  // [kBlockQ][LD]
  T* sK = sQ + kBlockQ * LD;            // [kBlockK][LD]
  T* sVt = sK + kBlockK * LD;           // [D][LDT]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int64_t bh = blockIdx.x, b = bh / p.H, h = bh % p.H;
  const int64_t q0 = int64_t(blockIdx.y) * kBlockQ;
  const T* Q = static_cast<const T*>(p.q.data) + b * p.q.stride_b + h * p.q.stride_h;
  const T* K = static_cast<const T*>(p.k.data) + b * p.k.stride_b + h * p.k.stride_h;
  const T* V = static_cast<const T*>(p.v.data) + b * p.v.stride_b + h * p.v.stride_h;

  stage_rows<T, D>(Q, p.q.stride_s, q0, p.Sq, kBlockQ, sQ, LD, nullptr, 0);
  __syncthreads();
  const int qr = warp * 16;  // this warp's first row in the tile
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    qf[kk][0] = ld32(sQ + (qr + g) * LD + kk * 16 + 2 * c);
    qf[kk][1] = ld32(sQ + (qr + g + 8) * LD + kk * 16 + 2 * c);
    qf[kk][2] = ld32(sQ + (qr + g) * LD + kk * 16 + 2 * c + 8);
    qf[kk][3] = ld32(sQ + (qr + g + 8) * LD + kk * 16 + 2 * c + 8);
  }
  float o[D / 8][4];
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // rows g and g + 8 (log2 units for m)
  const int64_t row[2] = {q0 + qr + g, q0 + qr + g + 8};

  int64_t k_tiles = (p.Sk + kBlockK - 1) / kBlockK;
  if (p.causal) {  // key tiles wholly in the future of every query of this tile are skipped
    const int64_t last = (q0 + kBlockQ + kBlockK - 1) / kBlockK;
    if (last < k_tiles) k_tiles = last;
  }
  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    const int64_t k0 = kt * kBlockK;
    __syncthreads();  // every warp is done with the previous tile
    stage_rows<T, D>(K, p.k.stride_s, k0, p.Sk, kBlockK, sK, LD, nullptr, 0);
    stage_rows<T, D>(V, p.v.stride_s, k0, p.Sk, kBlockK, nullptr, 0, sVt, LDT);
    __syncthreads();

    float s[kBlockK / 8][4];
#pragma unroll
    for (int nt = 0; nt < kBlockK / 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const T* kp = sK + (nt * 8 + g) * LD + kk * 16 + 2 * c;
        Pack<T>::mma(s[nt], qf[kk], ld32(kp), ld32(kp + 8));
      }
    }
    // Scale, bias, masks; the tile's row maxima.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kBlockK / 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = i / 2;
        const int64_t col = k0 + nt * 8 + 2 * c + (i & 1);
        float x = s[nt][i] * p.scale + bias_at<T>(p, b, h, row[r], col);
        x = masked(p, b, row[r], col) ? -INFINITY : x * kLog2e;
        s[nt][i] = x;
        mx[r] = fmaxf(mx[r], x);
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    }
    float base[2], alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(m[r], mx[r]);
      base[r] = m_new == -INFINITY ? 0.f : m_new;  // nothing visible yet: exp2(-inf - 0) = 0, no NaN
      alpha[r] = exp2f(m[r] - base[r]);
      m[r] = m_new;
      l[r] *= alpha[r];
    }
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      o[dt][0] *= alpha[0];
      o[dt][1] *= alpha[0];
      o[dt][2] *= alpha[1];
      o[dt][3] *= alpha[1];
    }
    // P = exp2(S - m), summed in f32 as computed, fed to the mma rounded to T.
#pragma unroll
    for (int nt = 0; nt < kBlockK / 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float e = exp2f(s[nt][i] - base[i / 2]);
        s[nt][i] = e;
        l[i / 2] += e;
      }
#pragma unroll
    for (int kc = 0; kc < kBlockK / 16; ++kc) {
      const uint32_t a[4] = {Pack<T>::two(s[2 * kc][0], s[2 * kc][1]), Pack<T>::two(s[2 * kc][2], s[2 * kc][3]),
                             Pack<T>::two(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                             Pack<T>::two(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        const T* vp = sVt + (dt * 8 + g) * LDT + kc * 16 + 2 * c;
        Pack<T>::mma(o[dt], a, ld32(vp), ld32(vp + 8));
      }
    }
  }
  // The quad's partial sums, then O / l and lse.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  T* O = static_cast<T*>(const_cast<void*>(p.out.data)) + b * p.out.stride_b + h * p.out.stride_h;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (row[r] >= p.Sq) continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;  // a query with every key hidden: zeros, as the reference
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      const uint32_t pair = Pack<T>::two(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
      *reinterpret_cast<uint32_t*>(O + row[r] * p.out.stride_s + dt * 8 + 2 * c) = pair;
    }
    if (c == 0) p.lse[bh * p.Sq + row[r]] = l[r] > 0.f ? (m[r] + log2f(l[r])) * kLn2 : INFINITY;
  }
}

// ----------------------------------------------------------------------------------------- backward
// delta[row] = Σ_d dout[row, d] · out[row, d], one warp per row.
template <class T, int D>
__global__ void flash_delta_kernel(FlashParams p) {
  const int64_t rows = p.B * p.H * p.Sq;
  const int lane = threadIdx.x % 32;
  for (int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; w < rows;
       w += int64_t(gridDim.x) * blockDim.x / 32) {
    const int64_t bh = w / p.Sq, i = w % p.Sq, b = bh / p.H, h = bh % p.H;
    const T* o = static_cast<const T*>(p.out.data) + b * p.out.stride_b + h * p.out.stride_h + i * p.out.stride_s;
    const T* d = static_cast<const T*>(p.dout.data) + b * p.dout.stride_b + h * p.dout.stride_h + i * p.dout.stride_s;
    float acc = 0.f;
    for (int j = lane; j < D; j += 32) acc += Pack<T>::load(o + j) * Pack<T>::load(d + j);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) p.delta[w] = acc;
  }
}

template <class T, int D>
__global__ void __launch_bounds__(kFlashThreads) flash_backward_kernel(FlashParams p) {
  constexpr int LD = D + 8, LDQ = kBlockQ + 8, LDK = kBlockK + 8;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sK = reinterpret_cast<T*>(smem);  // [kBlockK][LD]
  T* sV = sK + kBlockK * LD;            // [kBlockK][LD]
  T* sKt = sV + kBlockK * LD;           // [D][LDK]
  T* sQ = sKt + D * LDK;                // [kBlockQ][LD]
  T* sQt = sQ + kBlockQ * LD;           // [D][LDQ]
  T* sdO = sQt + D * LDQ;               // [kBlockQ][LD]
  T* sdOt = sdO + kBlockQ * LD;         // [D][LDQ]
  T* sdS = sdOt + D * LDQ;              // [kBlockQ][LDK]: dS[q][key]
  float* sLse = reinterpret_cast<float*>(sdS + kBlockQ * LDK);  // [kBlockQ], log2 units
  float* sDelta = sLse + kBlockQ;                                // [kBlockQ]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int64_t bh = blockIdx.x, b = bh / p.H, h = bh % p.H;
  const int64_t k0 = int64_t(blockIdx.y) * kBlockK;
  const T* Q = static_cast<const T*>(p.q.data) + b * p.q.stride_b + h * p.q.stride_h;
  const T* K = static_cast<const T*>(p.k.data) + b * p.k.stride_b + h * p.k.stride_h;
  const T* V = static_cast<const T*>(p.v.data) + b * p.v.stride_b + h * p.v.stride_h;
  const T* dO = static_cast<const T*>(p.dout.data) + b * p.dout.stride_b + h * p.dout.stride_h;

  stage_rows<T, D>(K, p.k.stride_s, k0, p.Sk, kBlockK, sK, LD, sKt, LDK);
  stage_rows<T, D>(V, p.v.stride_s, k0, p.Sk, kBlockK, sV, LD, nullptr, 0);

  const int kr = warp * 16;  // this warp's first key row in the tile
  const int64_t key[2] = {k0 + kr + g, k0 + kr + g + 8};
  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt)
#pragma unroll
    for (int i = 0; i < 4; ++i) dk[dt][i] = dv[dt][i] = 0.f;

  // Under causal, query tiles wholly before this key tile see none of it.
  const int64_t q_first = p.causal ? k0 / kBlockQ : 0;
  const int64_t q_tiles = (p.Sq + kBlockQ - 1) / kBlockQ;
  for (int64_t qt = q_first; qt < q_tiles; ++qt) {
    const int64_t q0 = qt * kBlockQ;
    __syncthreads();  // the previous query tile's shared data is no longer read
    stage_rows<T, D>(Q, p.q.stride_s, q0, p.Sq, kBlockQ, sQ, LD, sQt, LDQ);
    stage_rows<T, D>(dO, p.dout.stride_s, q0, p.Sq, kBlockQ, sdO, LD, sdOt, LDQ);
    for (int i = threadIdx.x; i < kBlockQ; i += kFlashThreads) {
      const bool in = q0 + i < p.Sq;
      sLse[i] = in ? p.lse[bh * p.Sq + q0 + i] * kLog2e : INFINITY;  // past the end: P = 0
      sDelta[i] = in ? p.delta[bh * p.Sq + q0 + i] : 0.f;
    }
    __syncthreads();

    // Sᵀ = K·Qᵀ (16 keys x 64 queries per warp), then Pᵀ.
    float pt[kBlockQ / 8][4];
#pragma unroll
    for (int nt = 0; nt < kBlockQ / 8; ++nt) {
      pt[nt][0] = pt[nt][1] = pt[nt][2] = pt[nt][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const uint32_t a[4] = {ld32(sK + (kr + g) * LD + kk * 16 + 2 * c), ld32(sK + (kr + g + 8) * LD + kk * 16 + 2 * c),
                               ld32(sK + (kr + g) * LD + kk * 16 + 2 * c + 8),
                               ld32(sK + (kr + g + 8) * LD + kk * 16 + 2 * c + 8)};
        const T* qp = sQ + (nt * 8 + g) * LD + kk * 16 + 2 * c;
        Pack<T>::mma(pt[nt], a, ld32(qp), ld32(qp + 8));
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int qi = nt * 8 + 2 * c + (i & 1);
        const int64_t qrow = q0 + qi, kcol = key[i / 2];
        const float x = pt[nt][i] * p.scale + bias_at<T>(p, b, h, qrow, kcol);
        pt[nt][i] = masked(p, b, qrow, kcol) ? 0.f : exp2f(x * kLog2e - sLse[qi]);
      }
    }
    // dV += Pᵀ·dO: Pᵀ's C fragments are the A fragments (k = query).
#pragma unroll
    for (int kc = 0; kc < kBlockQ / 16; ++kc) {
      const uint32_t a[4] = {Pack<T>::two(pt[2 * kc][0], pt[2 * kc][1]), Pack<T>::two(pt[2 * kc][2], pt[2 * kc][3]),
                             Pack<T>::two(pt[2 * kc + 1][0], pt[2 * kc + 1][1]),
                             Pack<T>::two(pt[2 * kc + 1][2], pt[2 * kc + 1][3])};
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        const T* dp = sdOt + (dt * 8 + g) * LDQ + kc * 16 + 2 * c;
        Pack<T>::mma(dv[dt], a, ld32(dp), ld32(dp + 8));
      }
    }
    // dPᵀ = V·dOᵀ, then dSᵀ = Pᵀ∘(dPᵀ - Δ) in place of dPᵀ.
    float dst[kBlockQ / 8][4];
#pragma unroll
    for (int nt = 0; nt < kBlockQ / 8; ++nt) {
      dst[nt][0] = dst[nt][1] = dst[nt][2] = dst[nt][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const uint32_t a[4] = {ld32(sV + (kr + g) * LD + kk * 16 + 2 * c), ld32(sV + (kr + g + 8) * LD + kk * 16 + 2 * c),
                               ld32(sV + (kr + g) * LD + kk * 16 + 2 * c + 8),
                               ld32(sV + (kr + g + 8) * LD + kk * 16 + 2 * c + 8)};
        const T* dp = sdO + (nt * 8 + g) * LD + kk * 16 + 2 * c;
        Pack<T>::mma(dst[nt], a, ld32(dp), ld32(dp + 8));
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int qi = nt * 8 + 2 * c + (i & 1);
        const float ds = pt[nt][i] * (dst[nt][i] - sDelta[qi]);
        dst[nt][i] = ds;
        sdS[qi * LDK + kr + g + (i / 2) * 8] = Pack<T>::from(ds);
      }
    }
    // dK += dSᵀ·Q (scaled at the end).
#pragma unroll
    for (int kc = 0; kc < kBlockQ / 16; ++kc) {
      const uint32_t a[4] = {Pack<T>::two(dst[2 * kc][0], dst[2 * kc][1]), Pack<T>::two(dst[2 * kc][2], dst[2 * kc][3]),
                             Pack<T>::two(dst[2 * kc + 1][0], dst[2 * kc + 1][1]),
                             Pack<T>::two(dst[2 * kc + 1][2], dst[2 * kc + 1][3])};
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        const T* qp = sQt + (dt * 8 + g) * LDQ + kc * 16 + 2 * c;
        Pack<T>::mma(dk[dt], a, ld32(qp), ld32(qp + 8));
      }
    }
    __syncthreads();  // the whole dS tile is in shared memory
    // dQ[q rows of this warp] += scale · dS·K, added into the f32 buffer.
    const int qr = warp * 16;
    uint32_t af[kBlockK / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBlockK / 16; ++kk) {
      af[kk][0] = ld32(sdS + (qr + g) * LDK + kk * 16 + 2 * c);
      af[kk][1] = ld32(sdS + (qr + g + 8) * LDK + kk * 16 + 2 * c);
      af[kk][2] = ld32(sdS + (qr + g) * LDK + kk * 16 + 2 * c + 8);
      af[kk][3] = ld32(sdS + (qr + g + 8) * LDK + kk * 16 + 2 * c + 8);
    }
    float* dq = p.dq_accum + bh * p.Sq * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int kk = 0; kk < kBlockK / 16; ++kk) {
        const T* kp = sKt + (dt * 8 + g) * LDK + kk * 16 + 2 * c;
        Pack<T>::mma(acc, af[kk], ld32(kp), ld32(kp + 8));
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t qrow = q0 + qr + g + (i / 2) * 8;
        if (qrow < p.Sq) atomicAdd(dq + qrow * D + dt * 8 + 2 * c + (i & 1), acc[i] * p.scale);
      }
    }
  }
  // dK (scaled) and dV for this warp's keys.
  T* dK = static_cast<T*>(const_cast<void*>(p.dk.data)) + b * p.dk.stride_b + h * p.dk.stride_h;
  T* dV = static_cast<T*>(const_cast<void*>(p.dv.data)) + b * p.dv.stride_b + h * p.dv.stride_h;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (key[r] >= p.Sk) continue;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      *reinterpret_cast<uint32_t*>(dK + key[r] * p.dk.stride_s + dt * 8 + 2 * c) =
          Pack<T>::two(dk[dt][2 * r] * p.scale, dk[dt][2 * r + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(dV + key[r] * p.dv.stride_s + dt * 8 + 2 * c) = Pack<T>::two(dv[dt][2 * r], dv[dt][2 * r + 1]);
    }
  }
}

template <int D> constexpr size_t forward_smem_bytes() { return size_t(2) * ((kBlockQ + kBlockK) * (D + 8) + D * (kBlockK + 8)); }
template <int D> constexpr size_t backward_smem_bytes() {
  return size_t(2) * (2 * kBlockK * (D + 8) + D * (kBlockK + 8) + 2 * kBlockQ * (D + 8) + 2 * D * (kBlockQ + 8) +
                      kBlockQ * (kBlockK + 8)) +
         sizeof(float) * 2 * kBlockQ;
}

// Kernels over 48 KB of dynamic shared memory say so once per device (one flag set per kernel).
constexpr int kMaxDevices = 64;
template <class Kernel> void allow_smem(Kernel kernel, size_t bytes, std::atomic<bool> (&done)[kMaxDevices]) {
  const int dev = current_device();
  if (dev >= 0 && dev < kMaxDevices && done[dev].load()) return;
  LOOM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  if (dev >= 0 && dev < kMaxDevices) done[dev].store(true);
}

// The most dynamic shared memory a block may opt into on the current device (99 KB on sm_86/89,
// 163 KB on sm_80, 227 KB on sm_90), read once per device.
size_t smem_optin_limit() {
  static std::atomic<int> limits[kMaxDevices] = {};
  const int dev = current_device();
  if (dev < 0 || dev >= kMaxDevices) return 0;
  int v = limits[dev].load();
  if (v == 0) {
    LOOM_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    limits[dev].store(v);
  }
  return size_t(v);
}

template <class T, int D> void launch_forward(const FlashParams& p) {
  const size_t smem = forward_smem_bytes<D>();
  static std::atomic<bool> allowed[kMaxDevices] = {};
  allow_smem(flash_forward_kernel<T, D>, smem, allowed);
  const dim3 grid(unsigned(p.B * p.H), unsigned((p.Sq + kBlockQ - 1) / kBlockQ));
  flash_forward_kernel<T, D><<<grid, kFlashThreads, smem, stream()>>>(p);
  LOOM_CUDA_LAUNCH_CHECK();
}

template <class T, int D> void launch_backward(const FlashParams& p) {
  flash_delta_kernel<T, D><<<blocks_for(p.B * p.H * p.Sq * 32), kThreads, 0, stream()>>>(p);
  LOOM_CUDA_LAUNCH_CHECK();
  const size_t smem = backward_smem_bytes<D>();
  static std::atomic<bool> allowed[kMaxDevices] = {};
  allow_smem(flash_backward_kernel<T, D>, smem, allowed);
  const dim3 grid(unsigned(p.B * p.H), unsigned((p.Sk + kBlockK - 1) / kBlockK));
  flash_backward_kernel<T, D><<<grid, kFlashThreads, smem, stream()>>>(p);
  LOOM_CUDA_LAUNCH_CHECK();
}

template <template <class, int> class F> void dispatch(const FlashParams& p) {
  const bool bf = p.dtype == DType::bf16;
  if (p.D == 64) return bf ? F<__nv_bfloat16, 64>::run(p) : F<__half, 64>::run(p);
  return bf ? F<__nv_bfloat16, 128>::run(p) : F<__half, 128>::run(p);
}
template <class T, int D> struct Forward { static void run(const FlashParams& p) { launch_forward<T, D>(p); } };
template <class T, int D> struct Backward { static void run(const FlashParams& p) { launch_backward<T, D>(p); } };

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }
bool row_aligned(const FlashTensor& t) {  // every row start 16-byte aligned (8 elements of 2 bytes)
  return t.data && aligned16(t.data) && t.stride_b % 8 == 0 && t.stride_h % 8 == 0 && t.stride_s % 8 == 0;
}


FlashTensor flash_tensor(const View& v) { return {v.data, v.strides[0], v.strides[1], v.strides[2]}; }

bool unit_rows(const View& v) { return v.ndim == 4 && (v.shape[3] <= 1 || v.strides[3] == 1); }
bool f32_contiguous(const View& v) { return v.data && v.dtype == DType::f32 && v.contiguous(); }

FlashParams params_of(const AttentionArgs& a) {
  FlashParams p;
  p.dtype = a.q.dtype;
  p.B = a.q.shape[0], p.H = a.q.shape[1], p.Sq = a.q.shape[2], p.Sk = a.k.shape[2], p.D = a.q.shape[3];
  p.q = flash_tensor(a.q), p.k = flash_tensor(a.k), p.v = flash_tensor(a.v), p.out = flash_tensor(a.out);
  p.lse = a.lse.ptr<float>();
  p.scale = float(a.scale);
  p.causal = a.causal;
  if (a.key_padding.data) {
    p.key_padding = a.key_padding.ptr<const uint8_t>();
    p.key_padding_stride_b = a.key_padding.strides[0], p.key_padding_stride_k = a.key_padding.strides[1];
  }
  if (a.bias.data) {
    p.bias = a.bias.data;
    p.bias_stride_b = a.bias.strides[0], p.bias_stride_h = a.bias.strides[1];
    p.bias_stride_q = a.bias.strides[2], p.bias_stride_k = a.bias.strides[3];
  }
  if (a.dout.data) p.dout = flash_tensor(a.dout), p.dk = flash_tensor(a.dk), p.dv = flash_tensor(a.dv);
  p.dq_accum = a.dq.ptr<float>();
  p.delta = a.delta.ptr<float>();
  return p;
}

// The shapes, dtypes and layouts the kernels take; the alignment rules follow.
bool flash_takes(const AttentionArgs& a, bool backward) {
  const DType t = a.q.dtype;
  if (t != DType::bf16 && t != DType::f16) return false;
  // No query or no key: the composed path writes the zeros (the kernels would leave dk, dv unwritten).
  if (a.q.ndim != 4 || a.k.ndim != 4 || a.q.shape[2] == 0 || a.k.shape[2] == 0) return false;
  for (const View* v : {&a.q, &a.k, &a.v, &a.out})
    if (!unit_rows(*v) || v->dtype != t) return false;
  if (a.v.shape[3] != a.q.shape[3] || !f32_contiguous(a.lse)) return false;
  if (a.bias.data && (a.bias.ndim != 4 || a.bias.dtype != t)) return false;
  if (a.key_padding.data && (a.key_padding.ndim != 2 || a.key_padding.dtype != DType::boolean)) return false;
  if (!backward) return true;
  for (const View* v : {&a.dout, &a.dk, &a.dv})
    if (!unit_rows(*v) || v->dtype != t) return false;
  return f32_contiguous(a.dq) && f32_contiguous(a.delta);
}

bool flash_supported(const FlashParams& p, bool backward) {
  if (p.D != 64 && p.D != 128) return false;
  if (p.B * p.H > int64_t(INT32_MAX) || (p.Sq + kBlockQ - 1) / kBlockQ > 65535 || (p.Sk + kBlockK - 1) / kBlockK > 65535)
    return false;
  if (!row_aligned(p.q) || !row_aligned(p.k) || !row_aligned(p.v)) return false;
  if (!p.lse || !row_aligned(p.out)) return false;
  // A device whose blocks cannot hold the tiles (the D128 backward needs 135 KB) composes instead.
  const size_t need = p.D == 64 ? (backward ? backward_smem_bytes<64>() : forward_smem_bytes<64>())
                                : (backward ? backward_smem_bytes<128>() : forward_smem_bytes<128>());
  if (need > smem_optin_limit()) return false;
  if (!backward) return true;
  // Backward reads dout by rows like q and writes dk and dv in pairs.
  return row_aligned(p.dout) && row_aligned(p.dk) && row_aligned(p.dv) && p.dq_accum && p.delta;
}

}  // namespace

bool attention_supported(const AttentionArgs& a, bool backward) {
  return flash_takes(a, backward) && flash_supported(params_of(a), backward);
}

void attention_forward(const AttentionArgs& a) {
  if (!attention_supported(a, false)) throw std::invalid_argument("flash attention: these arguments are not supported");
  const FlashParams p = params_of(a);
  if (p.B * p.H == 0 || p.Sq == 0) return;
  dispatch<Forward>(p);
}

void attention_backward(const AttentionArgs& a) {
  if (!attention_supported(a, true)) throw std::invalid_argument("flash attention backward: these arguments are not supported");
  const FlashParams p = params_of(a);
  if (p.B * p.H == 0 || p.Sq == 0 || p.Sk == 0) return;
  dispatch<Backward>(p);
}

LOOM_KERNELS_ATTENTION(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cuda
