// A CPU mirror of the hand-written tensor-core GEMM (kernels/cuda/gemm_mma.cu), for machines
// without a GPU: it documents and tests the kernel's tiling and edge math. Plain C++, no CUDA.
//
// It walks the kernel's own index maps (kernels/cuda/gemm_mma.h, namespace mma_map): CTA tiles in
// launch order, k-tiles of 32 through a 4-slot ring of shared-memory tiles with the kernel's padded
// layout, filled chunk by chunk (16 bytes, zero-filled past M, N or K) by the kernel's 256 "threads";
// fragments fetched by an emulation of ldmatrix.x4 (and .trans) at the addresses each lane supplies;
// an emulated mma.m16n8k16 per fragment; the epilogue per lane-owned element. Along the way it
// checks what the GPU would not report: every ldmatrix row lies inside the tile's written columns
// (padding and unloaded slots hold NaN, so a stray read also poisons the result), a load never
// targets the slot being computed on, every output element is written exactly once.
//
// Accumulation order emulated (the hardware's order inside one m16n8k16 is unspecified): per output
// element, per k16 step in increasing k, the 16 products (exact in f32 for bf16/f16 inputs) are
// summed in f32 in increasing k, and that chunk sum is added to the f32 accumulator. So results
// agree with the GPU to f32 rounding before the final rounding to bf16/f16, not bitwise; the
// epilogue is the kernel's own function (mma_map::epilogue_value), erf from the host libm.
#pragma once
#include <cstdint>
#include "kernels/common/dtype.h"
#include "kernels/common/kernel_enums.h"
#include "kernels/cuda/gemm_mma.h"

namespace loom::kernels::cpu {

// Same arguments and semantics as cuda::gemm_mma, with host pointers; throws std::invalid_argument
// where cuda::gemm_mma_layout_supported is false, and std::logic_error if an internal check fails.
// Slow (one emulated warp instruction at a time): meant for tests on small shapes.
void gemm_blocked_mirror(DType dtype, int64_t M, int64_t N, int64_t K, GemmOperand A, GemmOperand B, void* C,
                         int64_t ldc, const cuda::GemmEpilogue& e);

}  // namespace loom::kernels::cpu
