// The blocking of the CUDA flash attention kernels (kernels/cuda/attention.cu) on the CPU, for
// one (batch, head) slice, so the tiling math can be tested where there is no GPU: 64-query by
// 64-key tiles, the online softmax in log2 units (running max, rescaled sum and accumulator, a
// query with no visible key giving zeros and lse = +inf), causal tiles skipped as the kernel skips
// them, and the backward's loop order (key tiles outside, query tiles inside: dK and dV per key
// tile, dQ accumulated across key tiles). `round` stands for the kernel's narrowing of P and dS to
// bf16/f16 before they enter a product (identity: exact f32 tiling math).
#pragma once
#include <cstdint>
#include <functional>

namespace loom::kernels::cpu {

struct FlashMirrorSlice {
  int64_t Sq = 0, Sk = 0, D = 0;
  const float *q = nullptr, *k = nullptr, *v = nullptr;  // [Sq][D], [Sk][D], [Sk][D] dense
  float scale = 1.0f;
  bool causal = false;
  const bool* key_padding = nullptr;  // [Sk], true = hidden; null: none
  const float* bias = nullptr;        // [Sq][Sk] additive; null: none
  std::function<float(float)> round = [](float x) { return x; };
};

constexpr int64_t kFlashMirrorBlockQ = 64, kFlashMirrorBlockK = 64;

// out [Sq][D], lse [Sq] (natural log).
void flash_forward_mirror(const FlashMirrorSlice& s, float* out, float* lse);
// dq, dk, dv ([Sq][D], [Sk][D], [Sk][D]) from out, lse and dout as the forward left them.
void flash_backward_mirror(const FlashMirrorSlice& s, const float* out, const float* lse, const float* dout, float* dq,
                           float* dk, float* dv);

}  // namespace loom::kernels::cpu
