// CPU kernels: reference loops parallelised with OpenMP, GEMM through oneDNN or OpenBLAS.
// Kernels take Views (pointer, dtype, shape, strides) and never allocate tensors; outputs are
// contiguous unless stated. bf16/f16 are computed in f32, f64 in f64.
#pragma once
#include <cstdint>
#include "kernels/common/kernel_enums.h"
#include "kernels/common/view.h"

namespace loom::kernels::cpu {

using kernels::AdamWTensor;
using kernels::Binary;
using kernels::GemmOperand;
using kernels::Reduce;
using kernels::Unary;

// ---- elementwise (elementwise.cpp) ----
void copy(const View& src, const View& dst);  // same shape, any strides, converts dtype
void fill(const View& dst, double value);     // any strides

// out = op(x; a, b): pow uses a as exponent, clamp uses [a, b], *_scalar use a.
void unary(Unary op, const View& x, const View& out, double a = 0, double b = 0);

// a and b are already broadcast (expanded) to out's shape; comparisons write bool.
void binary(Binary op, const View& a, const View& b, const View& out);
void where(const View& cond, const View& a, const View& b, const View& out);

// ---- reductions (reduce.cpp) ----
// out has x's rank with the reduced dims (bits of dims_mask) of size 1; out contiguous.
void reduce(Reduce op, const View& x, uint32_t dims_mask, const View& out);
void argmax(const View& x, int dim, const View& out);  // out i64 with dim of size 1

// ---- GEMM (gemm.cpp) ----
// C[M,N] = alpha * op(A)[M,K] · op(B)[K,N] + beta * C; all of dtype `dtype`, row-major.
void gemm(DType dtype, int64_t M, int64_t N, int64_t K, double alpha, GemmOperand A, GemmOperand B,
          double beta, void* C, int64_t ldc);
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
// The same for `batch` products, the i-th operands and output `stride_*` elements after the first.
void gemm_strided_batched(DType dtype, int64_t batch, int64_t M, int64_t N, int64_t K, double alpha, GemmOperand A,
                          int64_t stride_a, GemmOperand B, int64_t stride_b, double beta, void* C, int64_t ldc,
                          int64_t stride_c);

// ---- fused attention (attention.cpp), CPU only; f32 or f64 ----
// q [B,H,Sq,D], k [B,H,Sk,D], v [B,H,Sk,Dv], out [B,H,Sq,Dv]: any strides with a unit-stride last dim.
// key_padding: bool [B, Sk] (true = hidden) or null data; causal hides key j from query i when j > i.
// lse [B,H,Sq] contiguous, of q's dtype: each query's log-sum-exp of its scaled scores (-inf when
// it sees no key; its output is then zero). The backward writes dq, dk, dv (same layouts as q, k, v).
void attention_forward(const View& q, const View& k, const View& v, const View& key_padding, bool causal,
                       double scale, const View& out, const View& lse);
void attention_backward(const View& q, const View& k, const View& v, const View& key_padding, bool causal,
                        double scale, const View& out, const View& lse, const View& dout, const View& dq,
                        const View& dk, const View& dv);

// ---- rows: softmax, layer norm, cross-entropy (rows.cpp). x is contiguous [rows, n]. ----
void softmax(const View& x, const View& y, bool log);
// dx from y and dy: softmax dx = y*(dy - Σdy*y); log_softmax dx = dy - exp(y)*Σdy
void softmax_backward(const View& y, const View& dy, const View& dx, bool log);
// mean, rstd: f32 (f64 for f64 inputs) [rows]. weight/bias may have null data.
void layer_norm_forward(const View& x, const View& weight, const View& bias, double eps,
                        const View& y, const View& mean, const View& rstd);
// dweight/dbias may have null data; summed over rows in fixed-size blocks so results do not depend on thread count.
void layer_norm_backward(const View& dy, const View& x, const View& weight, const View& mean,
                         const View& rstd, const View& dx, const View& dweight, const View& dbias);
// logits [N, C], targets i64/i32 [N] -> loss [N] (0 for ignored rows), lse [N]; f32/f64 as logits' compute type
void cross_entropy_forward(const View& logits, const View& targets, int64_t ignore_index,
                           double smoothing, const View& loss, const View& lse);
// dlogits[i] = scale * (softmax - (1-ε)·onehot - ε/C) for kept rows, 0 for ignored
void cross_entropy_backward(const View& logits, const View& targets, const View& lse,
                            int64_t ignore_index, double smoothing, double scale, const View& dlogits);

// ---- indexing (index.cpp). Tensors contiguous, viewed as [outer, dim, inner]. ----
// out[o, i, n] = x[o, index[o, i, n], n]
void gather(const View& x, int dim, const View& index, const View& out);
// out[o, index[o, i, n], n] += src[o, i, n]  (out holds x already); deterministic order
void scatter_add(const View& out, int dim, const View& index, const View& src);
// out[o, i, n] = x[o, index[i], n]
void index_select(const View& x, int dim, const View& index, const View& out);
// dweight[ids[j], :] += dy[j, :], in id order per column block (deterministic, no atomics)
void embedding_backward(const View& dy, const View& ids, const View& dweight);
// Throws std::out_of_range naming `what` if an index is outside [0, bound) and is not `allowed`.
void check_indices(const View& index, int64_t bound, const char* what, int64_t allowed = INT64_MIN);

// ---- randomness (random.cpp): element i uses Philox counter offset + i ----
void uniform(const View& out, uint64_t seed, uint64_t offset);
void normal(const View& out, uint64_t seed, uint64_t offset);
// y = keep ? x*scale : 0 with keep = uniform >= p, mask (u8) written when its data is non-null
void dropout(const View& x, double p, uint64_t seed, uint64_t offset, const View& y, const View& mask);

// ---- sorting (sort.cpp): along the last dim of a contiguous [rows, n] tensor ----
void argsort(const View& x, bool descending, const View& out);  // stable, out i64

// ---- optimizer (optim.cpp): fused AdamW over many tensors, f32 or f64 ----
// m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; p = p*decay - step_size * m / (sqrt(v)*rbc2 + eps)
void adamw(DType dtype, const AdamWTensor* tensors, int64_t count, double beta1, double beta2, double eps);

}  // namespace loom::kernels::cpu
