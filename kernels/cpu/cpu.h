// CPU kernels: reference loops parallelised with OpenMP, GEMM through oneDNN or OpenBLAS.
// Kernels take Views (pointer, dtype, shape, strides) and never allocate tensors; outputs are
// contiguous unless stated. bf16/f16 are computed in f32, f64 in f64.
#pragma once
#include <cstdint>
#include "kernels/common/kernel_enums.h"
#include "kernels/common/view.h"
#include "kernels/kernel_list.h"

namespace loom::kernels::cpu {

using kernels::AdamWTensor;
using kernels::Binary;
using kernels::GemmOperand;
using kernels::Reduce;
using kernels::Unary;

// The kernels of kernels/kernel_list.h (documented there), each in its family's file.
LOOM_DECLARE_LISTED_KERNELS

// ---- beyond the list: GEMM libraries (gemm.cpp) ----
// f32 C[M,N] = alpha * op(A) op(B) + beta * C, row-major, through the chosen library: oneDNN's sgemm
// where loom was built with it (its JIT kernels use AVX-512 where the CPU has it; 15-30% faster than
// OpenBLAS 0.3.21 on the demo models' shapes), else OpenBLAS. LOOM_CPU_GEMM=openblas|onednn picks one
// at start-up. Both run single-threaded inside a parallel region. oneDNN's results are bitwise the
// same for any thread count; OpenBLAS splits long inner dimensions (weight gradients) over threads,
// so its last bits depend on the count (LargeThreads.LinearForwardAndBackward).
void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
// "onednn" or "openblas": the library sgemm uses (throws for a bad LOOM_CPU_GEMM).
const char* sgemm_library();
// One library by name, whatever LOOM_CPU_GEMM says (loom-bench compares them); oneDNN only where built in.
enum class SgemmLibrary { openblas, onednn };
bool sgemm_library_built(SgemmLibrary library);
void sgemm_with(SgemmLibrary library, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace loom::kernels::cpu
