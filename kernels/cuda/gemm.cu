// GEMM through cuBLASLt (the hand-written GEMM plugs in behind the same entry point).
// loom is row-major and cuBLAS column-major: a row-major C[M,N] is a column-major C^T[N,M], so we
// compute C^T = op(B)^T · op(A)^T, passing B first. f32 uses full-f32 compute (no TF32) so results
// match the CPU at ~1e-5; bf16/f16 multiply in tensor cores and accumulate in f32.
#include <cublasLt.h>
#include <mutex>
#include <string>
#include "kernels/cuda/launch.cuh"

#define LOOM_CUBLAS_CHECK(call)                                                                  \
  do {                                                                                           \
    cublasStatus_t st_ = (call);                                                                 \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                            \
      throw std::runtime_error(std::string("cuBLASLt error in ") + #call + " (" + __FILE__ + ":" + \
                               std::to_string(__LINE__) + "): " + cublasLtGetStatusString(st_));   \
  } while (0)

namespace loom::kernels::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;
constexpr int kMaxDevices = 64;

struct LtContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

// One handle and workspace per device, created on first use and kept for the process.
LtContext& lt_context() {
  static std::mutex mu;
  static LtContext contexts[kMaxDevices];
  const int dev = current_device();
  if (dev < 0 || dev >= kMaxDevices) throw std::runtime_error("cuda::gemm: device index out of range");
  std::lock_guard<std::mutex> lock(mu);
  LtContext& c = contexts[dev];
  if (!c.handle) {
    LOOM_CUBLAS_CHECK(cublasLtCreate(&c.handle));
    LOOM_CUDA_CHECK(cudaMalloc(&c.workspace, kWorkspaceBytes));
  }
  return c;
}

// RAII for the per-call descriptors, so an error path does not leak them.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  ~Descriptors() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

template <class T>
__global__ void scale_kernel(T* c, int64_t rows, int64_t cols, int64_t ldc, float beta) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    T* p = c + (i / cols) * ldc + i % cols;
    *p = beta == 0.0f ? store<T>(acc_t<T>(0)) : store<T>(acc_t<T>(beta) * load(*p));
  }
}

}  // namespace

void gemm(DType dtype, int64_t M, int64_t N, int64_t K, double alpha, GemmOperand A, GemmOperand B, double beta,
          void* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // the empty product: C = beta * C, made explicit
    dispatch_float(dtype, "cuda::gemm", [&](auto tag) {
      using T = typename decltype(tag)::type;
      scale_kernel<T><<<blocks_for(M * N), kThreads, 0, stream()>>>(static_cast<T*>(C), M, N, ldc, float(beta));
      LOOM_CUDA_LAUNCH_CHECK();
    });
    return;
  }
  cudaDataType_t data;
  cublasComputeType_t compute;
  cudaDataType_t scale = CUDA_R_32F;
  switch (dtype) {
    case DType::f32: data = CUDA_R_32F; compute = CUBLAS_COMPUTE_32F; break;
    case DType::f64: data = CUDA_R_64F; compute = CUBLAS_COMPUTE_64F; scale = CUDA_R_64F; break;
    case DType::bf16: data = CUDA_R_16BF; compute = CUBLAS_COMPUTE_32F; break;
    case DType::f16: data = CUDA_R_16F; compute = CUBLAS_COMPUTE_32F; break;
    default: throw std::invalid_argument("cuda::gemm: unsupported dtype " + std::string(dtype_name(dtype)));
  }
  LtContext& ctx = lt_context();
  Descriptors d;
  LOOM_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, compute, scale));
  // First cuBLAS operand is B (column-major view of row-major storage is its transpose).
  const cublasOperation_t ta = B.trans ? CUBLAS_OP_T : CUBLAS_OP_N, tb = A.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  LOOM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  LOOM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  // Stored column-major shapes: B as (N x K) untransposed or (K x N) transposed; A as (K x M) or (M x K).
  LOOM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.a, data, B.trans ? K : N, B.trans ? N : K, B.ld));
  LOOM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.b, data, A.trans ? M : K, A.trans ? K : M, A.ld));
  LOOM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.c, data, N, M, ldc));
  const float alpha_f = float(alpha), beta_f = float(beta);
  const void* pa = dtype == DType::f64 ? static_cast<const void*>(&alpha) : &alpha_f;
  const void* pb = dtype == DType::f64 ? static_cast<const void*>(&beta) : &beta_f;
  // algo = nullptr: cuBLASLt runs its heuristic for this problem and the given workspace.
  LOOM_CUBLAS_CHECK(cublasLtMatmul(ctx.handle, d.op, pa, B.data, d.a, A.data, d.b, pb, C, d.c, C, d.c, nullptr,
                                   ctx.workspace, kWorkspaceBytes, stream()));
}

}  // namespace loom::kernels::cuda
