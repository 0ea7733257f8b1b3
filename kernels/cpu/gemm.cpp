// GEMM through a BLAS library: f32 through oneDNN or OpenBLAS (sgemm below), f64 through OpenBLAS;
// bf16/f16 widened to f32, multiplied, narrowed back.
#define LOOM_DEFINING_GEMM  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include <cblas.h>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>
#include "kernels/cpu/cpu.h"
#ifdef LOOM_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

namespace loom::kernels::cpu {
namespace {

SgemmLibrary choose_sgemm_library() {
  const char* env = std::getenv("LOOM_CPU_GEMM");
  const std::string v = env ? env : "";
#ifdef LOOM_HAVE_ONEDNN
  if (v.empty() || v == "onednn") return SgemmLibrary::onednn;
  if (v == "openblas") return SgemmLibrary::openblas;
#else
  if (v.empty() || v == "openblas") return SgemmLibrary::openblas;
  if (v == "onednn")
    throw std::invalid_argument("LOOM_CPU_GEMM=onednn: this loom was built without oneDNN (install libdnnl-dev and "
                                "configure again)");
#endif
  throw std::invalid_argument("LOOM_CPU_GEMM=" + v + ": expected openblas or onednn");
}

SgemmLibrary sgemm_choice() {
  static const SgemmLibrary choice = choose_sgemm_library();
  return choice;
}

// Row-major matrix of rows x cols with leading dim ld, converted to a dense f32 copy.
template <class T>
std::vector<float> widen(const T* p, int64_t rows, int64_t cols, int64_t ld) {
  std::vector<float> out(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[size_t(r * cols + c)] = float(p[r * ld + c]);
  return out;
}

template <class T>
void gemm_half(int64_t M, int64_t N, int64_t K, double alpha, GemmOperand A, GemmOperand B, double beta,
               void* Cv, int64_t ldc) {
  const int64_t ar = A.trans ? K : M, ac = A.trans ? M : K;
  const int64_t br = B.trans ? N : K, bc = B.trans ? K : N;
  auto a = widen(static_cast<const T*>(A.data), ar, ac, A.ld);
  auto b = widen(static_cast<const T*>(B.data), br, bc, B.ld);
  T* C = static_cast<T*>(Cv);
  std::vector<float> c(size_t(M * N), 0.0f);
  if (beta != 0.0) c = widen(C, M, N, ldc);
  sgemm(A.trans, B.trans, M, N, K, float(alpha), a.data(), ac, b.data(), bc, float(beta), c.data(), N);
  for (int64_t r = 0; r < M; ++r)
    for (int64_t col = 0; col < N; ++col) C[r * ldc + col] = T(c[size_t(r * N + col)]);
}

}  // namespace

const char* sgemm_library() { return sgemm_choice() == SgemmLibrary::onednn ? "onednn" : "openblas"; }

bool sgemm_library_built(SgemmLibrary library) {
#ifdef LOOM_HAVE_ONEDNN
  (void)library;
  return true;
#else
  return library == SgemmLibrary::openblas;
#endif
}

void sgemm_with(SgemmLibrary library, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (library == SgemmLibrary::onednn) {
#ifdef LOOM_HAVE_ONEDNN
    const dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (st != dnnl_success)
      throw std::runtime_error("gemm: oneDNN's sgemm failed (status " + std::to_string(int(st)) + ") for M " +
                               std::to_string(M) + ", N " + std::to_string(N) + ", K " + std::to_string(K) + ", lda " +
                               std::to_string(lda) + ", ldb " + std::to_string(ldb) + ", ldc " + std::to_string(ldc));
    return;
#else
    throw std::invalid_argument("gemm: this loom was built without oneDNN");
#endif
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N), int(K),
              alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  sgemm_with(sgemm_choice(), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm(DType dtype, int64_t M, int64_t N, int64_t K, double alpha, GemmOperand A, GemmOperand B,
          double beta, void* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // BLAS may skip scaling C; make the empty product explicit
    dispatch_float(dtype, "gemm", [&](auto tag_) {
    using scalar_t = typename decltype(tag_)::type;
      auto* c = static_cast<scalar_t*>(C);
      for (int64_t r = 0; r < M; ++r)
        for (int64_t col = 0; col < N; ++col)
          c[r * ldc + col] = beta == 0.0 ? scalar_t(0.0f) : scalar_t(float(beta) * float(c[r * ldc + col]));
    });
    return;
  }
  const auto ta = A.trans ? CblasTrans : CblasNoTrans, tb = B.trans ? CblasTrans : CblasNoTrans;
  switch (dtype) {
    case DType::f32:
      sgemm(A.trans, B.trans, M, N, K, float(alpha), static_cast<const float*>(A.data), A.ld,
            static_cast<const float*>(B.data), B.ld, float(beta), static_cast<float*>(C), ldc);
      return;
    case DType::f64:
      cblas_dgemm(CblasRowMajor, ta, tb, int(M), int(N), int(K), alpha, static_cast<const double*>(A.data),
                  int(A.ld), static_cast<const double*>(B.data), int(B.ld), beta, static_cast<double*>(C), int(ldc));
      return;
    case DType::bf16: return gemm_half<bf16>(M, N, K, alpha, A, B, beta, C, ldc);
    case DType::f16: return gemm_half<f16>(M, N, K, alpha, A, B, beta, C, ldc);
    default: throw std::invalid_argument("gemm: unsupported dtype " + std::string(dtype_name(dtype)));
  }
}

void gemm_strided_batched(DType dtype, int64_t batch, int64_t M, int64_t N, int64_t K, double alpha, GemmOperand A,
                          int64_t stride_a, GemmOperand B, int64_t stride_b, double beta, void* C, int64_t ldc,
                          int64_t stride_c) {
  const int64_t es = int64_t(dtype_size(dtype));
  auto product = [&](int64_t i) {
    gemm(dtype, M, N, K, alpha, {static_cast<const char*>(A.data) + i * stride_a * es, A.trans, A.ld},
         {static_cast<const char*>(B.data) + i * stride_b * es, B.trans, B.ld}, beta, static_cast<char*>(C) + i * stride_c * es,
         ldc);
  };
  // Many small products (attention's per-head GEMMs on the composed path) are spread over the
  // threads, one whole product each. Only then is a parallel region opened: OpenBLAS runs serially
  // inside any region, even an inactive one, which would cost a large product its threads (oneDNN
  // runs single-threaded inside an active one).
  if (batch > 1 && M * N * K <= (int64_t(1) << 20)) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < batch; ++i) product(i);
  } else {
    for (int64_t i = 0; i < batch; ++i) product(i);
  }
}

LOOM_KERNELS_GEMM(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cpu
