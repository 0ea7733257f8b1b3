// Flash attention on CUDA (kernels/cuda/flash_attention.cu): bf16/f16 q, k, v with f32 accumulation,
// online softmax, the log-sum-exp saved for backward; causal and key-padding masks and an additive
// bias (without a gradient of its own). Head dims 64 and 128. Includers need no CUDA headers.
//
// Tensors are [B, H, S, D] views: a pointer plus element strides for b, h and s; d is unit-stride.
// The tiling and its arithmetic are mirrored on the CPU by tests/kernels/flash_mirror.h, which the
// CPU tests check against the plain reference.
#pragma once
#include <cstdint>
#include "kernels/common/dtype.h"

namespace loom::kernels::cuda {

struct FlashTensor {
  const void* data = nullptr;
  int64_t stride_b = 0, stride_h = 0, stride_s = 0;  // in elements; stride_d is 1
};

struct FlashParams {
  DType dtype = DType::bf16;  // of q, k, v, out, dout, dq, dk, dv and bias
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

// Whether the flash kernels take these tensors: bf16 or f16, D in {64, 128}, 16-byte aligned
// pointers and row strides that keep every row 16-byte aligned. Otherwise the caller composes.
bool flash_attention_supported(const FlashParams& p, bool backward);
// out and lse from q, k, v.
void flash_attention_forward(const FlashParams& p);
// dq_accum (f32; the caller converts it), dk and dv from q, k, v, out, lse and dout.
void flash_attention_backward(const FlashParams& p);

}  // namespace loom::kernels::cuda
