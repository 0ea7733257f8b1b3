// Every kernel both backends implement, declared once. kernels/cpu/cpu.h and kernels/cuda/cuda.h
// declare these in their namespaces from this list, so core/ hands either backend the same
// arguments (LOOM_KERNEL in core/ops/common.h). A backend's kernels beyond the list (the CPU's sgemm,
// CUDA's runtime and deferred index checks) are declared in its own header.
//
// A family is one translation unit per backend: kernels/cpu/<family>.cpp and kernels/cuda/<family>.cu.
// Each defines LOOM_DEFINING_<FAMILY> before its includes (its own kernels are then not declared for
// it) and ends with LOOM_KERNELS_<FAMILY>(LOOM_KERNEL_DEFINED_HERE): a kernel of the list that the file
// does not define, or defines with another signature, is a compile error there. scripts/check-kernels
// (run by every build, also where nvcc is absent and the .cu files are not compiled) checks that each
// backend's family file defines each of its kernels and carries that check.
//
// Entries: X(return type, name, (parameters)). The CPU header documents each kernel.
#pragma once
#include <cstdint>
#include "kernels/common/attention_args.h"
#include "kernels/common/kernel_enums.h"
#include "kernels/common/view.h"

// ---- elementwise: copy (same shape, any strides, converts dtype), fill (any strides);
// unary: out = op(x; a, b), pow uses a as exponent, clamp uses [a, b], *_scalar use a;
// binary and where: operands already broadcast (expanded) to out's shape; comparisons write bool.
#define LOOM_KERNELS_ELEMENTWISE(X)                                                    \
  X(void, copy, (const View& src, const View& dst))                                    \
  X(void, fill, (const View& dst, double value))                                       \
  X(void, unary, (Unary op, const View& x, const View& out, double a, double b))       \
  X(void, binary, (Binary op, const View& a, const View& b, const View& out))          \
  X(void, where, (const View& cond, const View& a, const View& b, const View& out))

// ---- reductions: out has x's rank with the reduced dims (bits of dims_mask) of size 1, contiguous;
// argmax writes i64 with dim of size 1.
#define LOOM_KERNELS_REDUCE(X)                                                         \
  X(void, reduce, (Reduce op, const View& x, uint32_t dims_mask, const View& out))     \
  X(void, argmax, (const View& x, int dim, const View& out))

// ---- GEMM: C[M,N] = alpha * op(A)[M,K] · op(B)[K,N] + beta * C, all of dtype `dtype`, row-major
// (bf16/f16 accumulate in f32); the batched form runs `batch` products, the i-th operands and output
// `stride_*` elements after the first.
#define LOOM_KERNELS_GEMM(X)                                                                              \
  X(void, gemm, (DType dtype, int64_t M, int64_t N, int64_t K, double alpha, GemmOperand A, GemmOperand B, \
                 double beta, void* C, int64_t ldc))                                                       \
  X(void, gemm_strided_batched, (DType dtype, int64_t batch, int64_t M, int64_t N, int64_t K, double alpha, \
                                 GemmOperand A, int64_t stride_a, GemmOperand B, int64_t stride_b, double beta, \
                                 void* C, int64_t ldc, int64_t stride_c))

// ---- rows (x contiguous [rows, n]): softmax / log_softmax and their backward from y and dy;
// layer norm (mean, rstd f32, f64 for f64 inputs, [rows]; weight/bias/dweight/dbias may have null
// data; dweight and dbias summed over rows in fixed-size blocks, independent of thread count);
// cross-entropy: logits [N, C], targets i64/i32 [N] -> loss [N] (0 for ignored rows), lse [N];
// dlogits = scale * (softmax - (1-ε)·onehot - ε/C) for kept rows, 0 for ignored.
#define LOOM_KERNELS_ROWS(X)                                                                               \
  X(void, softmax, (const View& x, const View& y, bool log))                                               \
  X(void, softmax_backward, (const View& y, const View& dy, const View& dx, bool log))                     \
  X(void, layer_norm_forward, (const View& x, const View& weight, const View& bias, double eps,            \
                               const View& y, const View& mean, const View& rstd))                         \
  X(void, layer_norm_backward, (const View& dy, const View& x, const View& weight, const View& mean,       \
                                const View& rstd, const View& dx, const View& dweight, const View& dbias)) \
  X(void, cross_entropy_forward, (const View& logits, const View& targets, int64_t ignore_index,           \
                                  double smoothing, const View& loss, const View& lse))                    \
  X(void, cross_entropy_backward, (const View& logits, const View& targets, const View& lse,               \
                                   int64_t ignore_index, double smoothing, double scale, const View& dlogits))

// ---- indexing (contiguous tensors viewed as [outer, dim, inner]): gather out[o,i,n] = x[o, index[o,i,n], n];
// scatter_add out[o, index[o,i,n], n] += src[o,i,n] (out holds x already, deterministic order);
// index_select out[o,i,n] = x[o, index[i], n]; embedding_backward dweight[ids[j], :] += dy[j, :] in id
// order (no atomics); check_indices throws std::out_of_range naming `what` for an index outside
// [0, bound) that is not `allowed` (INT64_MIN: none is).
#define LOOM_KERNELS_INDEX(X)                                                                  \
  X(void, check_indices, (const View& index, int64_t bound, const char* what, int64_t allowed)) \
  X(void, gather, (const View& x, int dim, const View& index, const View& out))                \
  X(void, scatter_add, (const View& out, int dim, const View& index, const View& src))         \
  X(void, index_select, (const View& x, int dim, const View& index, const View& out))          \
  X(void, embedding_backward, (const View& dy, const View& ids, const View& dweight))

// ---- randomness: element i uses Philox counter offset + i, the same streams on both backends;
// dropout y = keep ? x*scale : 0 with keep = uniform >= p, mask (u8) written when its data is non-null.
#define LOOM_KERNELS_RANDOM(X)                                                 \
  X(void, uniform, (const View& out, uint64_t seed, uint64_t offset))          \
  X(void, normal, (const View& out, uint64_t seed, uint64_t offset))           \
  X(void, dropout, (const View& x, double p, uint64_t seed, uint64_t offset, const View& y, const View& mask))

// ---- sorting along the last dim of a contiguous [rows, n] tensor: stable, out i64.
#define LOOM_KERNELS_SORT(X) X(void, argsort, (const View& x, bool descending, const View& out))

// ---- fused AdamW over many tensors, f32 or f64:
// m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; p = p*decay - step_size * m / (sqrt(v)*rbc2 + eps)
#define LOOM_KERNELS_OPTIM(X) \
  X(void, adamw, (DType dtype, const AdamWTensor* tensors, int64_t count, double beta1, double beta2, double eps))

// ---- fused attention (kernels/common/attention_args.h): softmax(scale·q·kᵀ + bias, masked)·v without
// the [B, H, Sq, Sk] probabilities kept, the backward recomputing them from lse. Whether a backend
// takes these arguments (dtype, head dim, alignment) is its attention_supported; where it does not,
// core/ composes the attention from GEMMs and a softmax. CPU: f32/f64, no bias; CUDA (flash):
// bf16/f16, head dims 64 and 128, 16-byte aligned rows.
#define LOOM_KERNELS_ATTENTION(X)                                      \
  X(bool, attention_supported, (const AttentionArgs& a, bool backward)) \
  X(void, attention_forward, (const AttentionArgs& a))                  \
  X(void, attention_backward, (const AttentionArgs& a))

// Declares one kernel (in the including backend's namespace).
#define LOOM_DECLARE_KERNEL(ret, name, params) ret name params;
// At the end of a family's file: each kernel of the family must be defined above, with its signature.
#define LOOM_KERNEL_DEFINED_HERE(ret, name, params) [[maybe_unused]] static ret(*const name##_is_defined_here) params = &name;

// The backend headers' declarations: every family but the one the including file defines.
#ifndef LOOM_DEFINING_ELEMENTWISE
#define LOOM_DECLARE_ELEMENTWISE LOOM_KERNELS_ELEMENTWISE(LOOM_DECLARE_KERNEL)
#else
#define LOOM_DECLARE_ELEMENTWISE
#endif
#ifndef LOOM_DEFINING_REDUCE
#define LOOM_DECLARE_REDUCE LOOM_KERNELS_REDUCE(LOOM_DECLARE_KERNEL)
#else
#define LOOM_DECLARE_REDUCE
#endif
#ifndef LOOM_DEFINING_GEMM
#define LOOM_DECLARE_GEMM LOOM_KERNELS_GEMM(LOOM_DECLARE_KERNEL)
#else
#define LOOM_DECLARE_GEMM
#endif
#ifndef LOOM_DEFINING_ROWS
#define LOOM_DECLARE_ROWS LOOM_KERNELS_ROWS(LOOM_DECLARE_KERNEL)
#else
#define LOOM_DECLARE_ROWS
#endif
#ifndef LOOM_DEFINING_INDEX
#define LOOM_DECLARE_INDEX LOOM_KERNELS_INDEX(LOOM_DECLARE_KERNEL)
#else
#define LOOM_DECLARE_INDEX
#endif
#ifndef LOOM_DEFINING_ATTENTION
#define LOOM_DECLARE_ATTENTION LOOM_KERNELS_ATTENTION(LOOM_DECLARE_KERNEL)
#else
#define LOOM_DECLARE_ATTENTION
#endif
#ifndef LOOM_DEFINING_RANDOM
#define LOOM_DECLARE_RANDOM LOOM_KERNELS_RANDOM(LOOM_DECLARE_KERNEL)
#else
#define LOOM_DECLARE_RANDOM
#endif
#ifndef LOOM_DEFINING_SORT
#define LOOM_DECLARE_SORT LOOM_KERNELS_SORT(LOOM_DECLARE_KERNEL)
#else
#define LOOM_DECLARE_SORT
#endif
#ifndef LOOM_DEFINING_OPTIM
#define LOOM_DECLARE_OPTIM LOOM_KERNELS_OPTIM(LOOM_DECLARE_KERNEL)
#else
#define LOOM_DECLARE_OPTIM
#endif
#define LOOM_DECLARE_LISTED_KERNELS \
  LOOM_DECLARE_ELEMENTWISE LOOM_DECLARE_REDUCE LOOM_DECLARE_GEMM LOOM_DECLARE_ROWS LOOM_DECLARE_INDEX LOOM_DECLARE_RANDOM \
  LOOM_DECLARE_SORT LOOM_DECLARE_OPTIM LOOM_DECLARE_ATTENTION
