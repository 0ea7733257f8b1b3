// GEMM through cuBLASLt (the hand-written GEMM plugs in behind the same entry point), single or
// strided-batched, with the descriptors and the heuristic's algorithm cached per problem.
// loom is row-major and cuBLAS column-major: a row-major C[M,N] is a column-major C^T[N,M], so we
// compute C^T = op(B)^T · op(A)^T, passing B first. f32 uses full-f32 compute (no TF32) so results
// match the CPU at ~1e-5; bf16/f16 multiply in tensor cores and accumulate in f32.
#define LOOM_DEFINING_GEMM  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include <cublasLt.h>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include "kernels/cuda/gemm_mma.h"
#include "kernels/cuda/gemm_wgmma.h"
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

std::atomic<bool> g_gemm_mma{false};  // set_gemm_mma_default

constexpr size_t kWorkspaceBytes = size_t(32) << 20;
constexpr int kMaxDevices = 64;

// One handle per device, and one workspace per (device, stream): two streams running GEMMs at
// once must not share scratch memory. Created on first use and kept for the process.
struct LtContext {
  cublasLtHandle_t handle = nullptr;
  std::map<cudaStream_t, void*> workspaces;
};

std::mutex& lt_mutex() {
  static std::mutex mu;
  return mu;
}

LtContext& lt_context_locked(int dev) {
  static LtContext contexts[kMaxDevices];
  if (dev < 0 || dev >= kMaxDevices) throw std::runtime_error("cuda::gemm: device index out of range");
  LtContext& c = contexts[dev];
  if (!c.handle) LOOM_CUBLAS_CHECK(cublasLtCreate(&c.handle));
  return c;
}

// RAII for the descriptors, so an error path does not leak them.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  Descriptors() = default;
  Descriptors(const Descriptors&) = delete;
  Descriptors& operator=(const Descriptors&) = delete;
  ~Descriptors() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// Everything cuBLASLt's heuristic depends on: shapes, transposes, leading dims, the batch and its
// strides, and the operands' alignments (an algorithm chosen for 256-byte aligned pointers may not
// run on a slice 4 bytes off).
struct PlanKey {
  int device;
  DType dtype;
  int64_t M, N, K, lda, ldb, ldc, batch, stride_a, stride_b, stride_c;
  bool ta, tb;
  uint32_t align_a, align_b, align_c;
  bool operator==(const PlanKey& o) const {  // (CUDA here is C++17: no defaulted comparison)
    return device == o.device && dtype == o.dtype && M == o.M && N == o.N && K == o.K && lda == o.lda && ldb == o.ldb &&
           ldc == o.ldc && batch == o.batch && stride_a == o.stride_a && stride_b == o.stride_b &&
           stride_c == o.stride_c && ta == o.ta && tb == o.tb && align_a == o.align_a && align_b == o.align_b &&
           align_c == o.align_c;
  }
};
struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    size_t h = std::hash<int64_t>()(k.M);
    for (int64_t v : {k.N, k.K, k.lda, k.ldb, k.ldc, k.batch, k.stride_a, k.stride_b, k.stride_c,
                      int64_t(k.device), int64_t(k.dtype), int64_t(k.ta) << 1 | int64_t(k.tb),
                      int64_t(k.align_a) << 32 | int64_t(k.align_b) << 16 | int64_t(k.align_c)})
      h = h * 1000003u ^ std::hash<int64_t>()(v);
    return h;
  }
};

// The descriptors and the heuristic's choice for one PlanKey, built once: creating them and running
// the heuristic on every call cost more host time than a small GEMM takes on the device.
struct Plan {
  Descriptors d;
  cublasLtMatmulAlgo_t algo{};
  bool has_algo = false;  // false: cublasLtMatmul runs its own heuristic (the heuristic found none)
};

uint32_t alignment_of(const void* p, int64_t stride_bytes) {
  uint32_t a = 256;
  while (a > 1 && ((reinterpret_cast<uintptr_t>(p) % a) != 0 || (stride_bytes % a) != 0)) a /= 2;
  return a;
}

template <class T>
__global__ void scale_kernel(T* c, int64_t rows, int64_t cols, int64_t ldc, float beta) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    T* p = c + (i / cols) * ldc + i % cols;
    *p = beta == 0.0f ? store<T>(acc_t<T>(0)) : store<T>(acc_t<T>(beta) * load(*p));
  }
}

void set_batch(cublasLtMatrixLayout_t layout, int64_t batch, int64_t stride) {
  if (batch == 1) return;
  const int32_t count = int32_t(batch);
  LOOM_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
  LOOM_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
}

std::unique_ptr<Plan> make_plan(cublasLtHandle_t handle, const PlanKey& k) {
  cudaDataType_t data;
  cublasComputeType_t compute;
  cudaDataType_t scale = CUDA_R_32F;
  switch (k.dtype) {
    case DType::f32: data = CUDA_R_32F; compute = CUBLAS_COMPUTE_32F; break;
    case DType::f64: data = CUDA_R_64F; compute = CUBLAS_COMPUTE_64F; scale = CUDA_R_64F; break;
    case DType::bf16: data = CUDA_R_16BF; compute = CUBLAS_COMPUTE_32F; break;
    case DType::f16: data = CUDA_R_16F; compute = CUBLAS_COMPUTE_32F; break;
    default: throw std::invalid_argument("cuda::gemm: unsupported dtype " + std::string(dtype_name(k.dtype)));
  }
  auto plan = std::make_unique<Plan>();
  Descriptors& d = plan->d;
  LOOM_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, compute, scale));
  // First cuBLAS operand is B (column-major view of row-major storage is its transpose).
  const cublasOperation_t ta = k.tb ? CUBLAS_OP_T : CUBLAS_OP_N, tb = k.ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  LOOM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  LOOM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  // Stored column-major shapes: B as (N x K) untransposed or (K x N) transposed; A as (K x M) or (M x K).
  LOOM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.a, data, k.tb ? k.K : k.N, k.tb ? k.N : k.K, k.ldb));
  LOOM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.b, data, k.ta ? k.M : k.K, k.ta ? k.K : k.M, k.lda));
  LOOM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.c, data, k.N, k.M, k.ldc));
  set_batch(d.a, k.batch, k.stride_b);
  set_batch(d.b, k.batch, k.stride_a);
  set_batch(d.c, k.batch, k.stride_c);

  cublasLtMatmulPreference_t pref = nullptr;
  LOOM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t workspace = kWorkspaceBytes;
  const uint32_t align_a = k.align_b, align_b = k.align_a, align_c = k.align_c;  // cuBLAS's A is loom's B
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace));
  if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a));
  if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b));
  if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof(align_c));
  if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof(align_c));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(handle, d.op, d.a, d.b, d.c, d.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED) LOOM_CUBLAS_CHECK(st);
  if (st == CUBLAS_STATUS_SUCCESS && found > 0) {
    plan->algo = result.algo;
    plan->has_algo = true;
  }
  return plan;
}

void run_gemm(DType dtype, int64_t batch, int64_t M, int64_t N, int64_t K, double alpha, GemmOperand A, int64_t stride_a,
              GemmOperand B, int64_t stride_b, double beta, void* C, int64_t ldc, int64_t stride_c) {
  if (M == 0 || N == 0 || batch == 0) return;
  if (K == 0) {  // the empty product: C = beta * C, made explicit
    dispatch_float(dtype, "cuda::gemm", [&](auto tag) {
      using T = typename decltype(tag)::type;
      for (int64_t i = 0; i < batch; ++i) {
        scale_kernel<T><<<blocks_for(M * N), kThreads, 0, stream()>>>(static_cast<T*>(C) + i * stride_c, M, N, ldc, float(beta));
        LOOM_CUDA_LAUNCH_CHECK();
      }
    });
    return;
  }
  if (batch > INT32_MAX) throw std::invalid_argument("cuda::gemm: batch of " + std::to_string(batch) + " exceeds cuBLASLt's int32 count");
  const int64_t es = int64_t(dtype_size(dtype));
  const int dev = current_device();
  const PlanKey key{dev, dtype, M, N, K, A.ld, B.ld, ldc, batch, stride_a, stride_b, stride_c, A.trans, B.trans,
                    alignment_of(A.data, batch > 1 ? stride_a * es : 0), alignment_of(B.data, batch > 1 ? stride_b * es : 0),
                    alignment_of(C, batch > 1 ? stride_c * es : 0)};
  const cudaStream_t s = stream();
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  const Plan* plan = nullptr;
  {
    std::lock_guard<std::mutex> lock(lt_mutex());
    LtContext& ctx = lt_context_locked(dev);
    handle = ctx.handle;
    void*& ws = ctx.workspaces[s];
    if (!ws) LOOM_CUDA_CHECK(cudaMalloc(&ws, kWorkspaceBytes));
    workspace = ws;
    static std::unordered_map<PlanKey, std::unique_ptr<Plan>, PlanKeyHash> plans;  // immutable once made
    std::unique_ptr<Plan>& p = plans[key];
    if (!p) p = make_plan(handle, key);
    plan = p.get();
  }
  const float alpha_f = float(alpha), beta_f = float(beta);
  const void* pa = dtype == DType::f64 ? static_cast<const void*>(&alpha) : &alpha_f;
  const void* pb = dtype == DType::f64 ? static_cast<const void*>(&beta) : &beta_f;
  const Descriptors& d = plan->d;
  LOOM_CUBLAS_CHECK(cublasLtMatmul(handle, d.op, pa, B.data, d.a, A.data, d.b, pb, C, d.c, C, d.c,
                                   plan->has_algo ? &plan->algo : nullptr, workspace, kWorkspaceBytes, s));
}

}  // namespace

void set_gemm_mma_default(bool on) { g_gemm_mma.store(on); }
bool gemm_mma_default() { return g_gemm_mma.load(); }

void gemm(DType dtype, int64_t M, int64_t N, int64_t K, double alpha, GemmOperand A, GemmOperand B, double beta,
          void* C, int64_t ldc) {
  if (g_gemm_mma.load() && (dtype == DType::bf16 || dtype == DType::f16)) {
    GemmEpilogue e;
    e.alpha = alpha;
    e.beta = beta;
    // Hopper: wgmma fed by TMA where it takes the problem (the Linear layout); else mma.sync.
    if (gemm_wgmma_supported(dtype, M, N, K, A, B, C, ldc, e)) return gemm_wgmma(dtype, M, N, K, A, B, C, ldc, e);
    if (gemm_mma_supported(dtype, M, N, K, A, B, C, ldc, e)) return gemm_mma(dtype, M, N, K, A, B, C, ldc, e);
  }
  run_gemm(dtype, 1, M, N, K, alpha, A, 0, B, 0, beta, C, ldc, 0);
}

void gemm_strided_batched(DType dtype, int64_t batch, int64_t M, int64_t N, int64_t K, double alpha, GemmOperand A,
                          int64_t stride_a, GemmOperand B, int64_t stride_b, double beta, void* C, int64_t ldc,
                          int64_t stride_c) {
  run_gemm(dtype, batch, M, N, K, alpha, A, stride_a, B, stride_b, beta, C, ldc, stride_c);
}

LOOM_KERNELS_GEMM(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cuda
