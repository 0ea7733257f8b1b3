// GEMM through OpenBLAS: sgemm/dgemm directly; bf16/f16 widened to f32, multiplied, narrowed back.
#include <cblas.h>
#include <stdexcept>
#include <vector>
#include "kernels/cpu/cpu.h"

namespace loom::kernels::cpu {
namespace {

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
  cblas_sgemm(CblasRowMajor, A.trans ? CblasTrans : CblasNoTrans, B.trans ? CblasTrans : CblasNoTrans,
              int(M), int(N), int(K), float(alpha), a.data(), int(ac), b.data(), int(bc), float(beta),
              c.data(), int(N));
  for (int64_t r = 0; r < M; ++r)
    for (int64_t col = 0; col < N; ++col) C[r * ldc + col] = T(c[size_t(r * N + col)]);
}

}  // namespace

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
      cblas_sgemm(CblasRowMajor, ta, tb, int(M), int(N), int(K), float(alpha), static_cast<const float*>(A.data),
                  int(A.ld), static_cast<const float*>(B.data), int(B.ld), float(beta), static_cast<float*>(C),
                  int(ldc));
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
  // inside any region, even an inactive one, which would cost a large product its threads.
  if (batch > 1 && M * N * K <= (int64_t(1) << 20)) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < batch; ++i) product(i);
  } else {
    for (int64_t i = 0; i < batch; ++i) product(i);
  }
}

}  // namespace loom::kernels::cpu
