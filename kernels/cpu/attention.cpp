// Fused scaled-dot-product attention on the CPU, the twin of the GPU's flash attention: one task per
// (batch, head), in parallel; inside it, blocks of queries (query_block) against all keys. A block's
// scores live in a per-thread scratch of block x Sk, so the [B, H, Sq, Sk] probabilities are never stored:
// the forward keeps each query's log-sum-exp and the backward recomputes the probabilities from it.
// The softmax scale goes through the GEMM's alpha. Each (batch, head) is computed by one thread in
// a fixed order, so results do not depend on the thread count. f32 or f64, without a bias.
#define LOOM_DEFINING_ATTENTION  // its kernels are defined here, and checked at the end (kernels/kernel_list.h)
#include <cblas.h>
#include <omp.h>
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/vec_math.h"

namespace loom::kernels::cpu {
namespace {

// Queries are taken in equal blocks whose scores (block x Sk) fit in kScoreBudget floats, so a
// block's scratch stays in the core's L2 cache; short sequences (ViT's 50 or 197 tokens, the AST's
// 129) are one block, one GEMM per (batch, head) and product instead of a 64-row one and a ragged
// tail. The blocking depends on the shapes only, never on the thread count.
constexpr int64_t kScoreBudget = int64_t(1) << 16;  // 256 KiB of f32 (512 KiB of f64)
constexpr int64_t kMinQueryBlock = 16;

int64_t query_block(int64_t Sq, int64_t Sk) {
  const int64_t most = std::max(kMinQueryBlock, kScoreBudget / std::max<int64_t>(1, Sk));
  const int64_t blocks = std::max<int64_t>(1, (Sq + most - 1) / most);
  return std::max<int64_t>(1, (Sq + blocks - 1) / blocks);
}

// C[M,N] = alpha * op(A) op(B) + beta * C, row-major, in T (f32 or f64). Called inside the parallel
// region, where the BLAS libraries run single-threaded.
inline void gemm_t(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const float* A, int64_t lda,
                   const float* B, int64_t ldb, double beta, float* C, int64_t ldc) {
  sgemm(ta, tb, M, N, K, float(alpha), A, lda, B, ldb, float(beta), C, ldc);
}
inline void gemm_t(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
                   const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N), int(K),
              alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

// One (batch, head) matrix of a [B, H, S, D] view: its first element and row stride.
template <class T>
struct Mat {
  T* p;
  int64_t ld;
};
template <class T>
Mat<T> mat(const View& v, int64_t b, int64_t h) {
  const int64_t rows = v.shape[2], cols = v.shape[3];
  // A single row may carry any stride; BLAS wants ld >= cols.
  const int64_t ld = rows == 1 ? std::max<int64_t>(1, cols) : v.strides[2];
  return {v.ptr<T>() + b * v.strides[0] + h * v.strides[1], ld};
}

// BLAS reads a [B, H, S, D] view row by row: unit-stride last dim, rows not overlapping.
bool rows_readable(const View& v) {
  return v.ndim == 4 && (v.shape[3] <= 1 || v.strides[3] == 1) &&
         (v.shape[2] <= 1 || v.strides[2] >= std::max<int64_t>(1, v.shape[3]));
}

// Whether key j is hidden from query i.
struct Masks {
  const bool* padding = nullptr;  // [B, Sk] with strides, true = padding
  int64_t pad_b = 0, pad_j = 0;
  bool causal = false;
  bool blocked(int64_t b, int64_t i, int64_t j) const {
    return (causal && j > i) || (padding && padding[b * pad_b + j * pad_j]);
  }
  bool any() const { return causal || padding; }
};

Masks masks_of(const View& key_padding, bool causal) {
  Masks m;
  m.causal = causal;
  if (key_padding.data) {
    m.padding = key_padding.ptr<bool>();
    m.pad_b = key_padding.strides[0];
    m.pad_j = key_padding.strides[1];
  }
  return m;
}

template <class T>
void forward_typed(const View& q, const View& k, const View& v, const Masks& masks, double scale, const View& out,
                   const View& lse) {
  const int64_t B = q.shape[0], H = q.shape[1], Sq = q.shape[2], D = q.shape[3], Sk = k.shape[2], Dv = v.shape[3];
  T* lse_p = lse.ptr<T>();
  const int64_t query_rows = query_block(Sq, Sk);
#pragma omp parallel
  {
    std::vector<T> s(size_t(query_rows * std::max<int64_t>(1, Sk)));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const Mat<T> Q = mat<T>(q, b, h), K = mat<T>(k, b, h), V = mat<T>(v, b, h), O = mat<T>(out, b, h);
      for (int64_t i0 = 0; i0 < Sq; i0 += query_rows) {
        const int64_t bq = std::min(query_rows, Sq - i0);
        if (Sk == 0 || D == 0) {
          std::fill(s.begin(), s.end(), T(0));
        } else {
          gemm_t(false, true, bq, Sk, D, scale, Q.p + i0 * Q.ld, Q.ld, K.p, K.ld, 0.0, s.data(), Sk);
        }
        for (int64_t r = 0; r < bq; ++r) {
          T* row = s.data() + r * Sk;
          const int64_t i = i0 + r;
          if (masks.any())
            for (int64_t j = 0; j < Sk; ++j)
              if (masks.blocked(b, i, j)) row[j] = -std::numeric_limits<T>::infinity();
          const T m = vec::max_lanes<T>(Sk, [&](int64_t j) { return row[j]; });
          T* l = lse_p + (b * H + h) * Sq + i;
          if (m == -std::numeric_limits<T>::infinity()) {  // every key hidden: zero output, no mass
            for (int64_t j = 0; j < Sk; ++j) row[j] = T(0);
            *l = m;
            continue;
          }
          for (int64_t j = 0; j < Sk; ++j) row[j] = vec::exp_of(row[j] - m);
          const T sum = vec::sum_lanes<T>(Sk, [&](int64_t j) { return row[j]; });
          const T inv = T(1) / sum;
          for (int64_t j = 0; j < Sk; ++j) row[j] *= inv;
          *l = m + std::log(sum);
        }
        if (Dv == 0) continue;
        if (Sk == 0) {
          for (int64_t r = 0; r < bq; ++r) std::fill(O.p + (i0 + r) * O.ld, O.p + (i0 + r) * O.ld + Dv, T(0));
          continue;
        }
        gemm_t(false, false, bq, Dv, Sk, 1.0, s.data(), Sk, V.p, V.ld, 0.0, O.p + i0 * O.ld, O.ld);
      }
    }
  }
}

template <class T>
void backward_typed(const View& q, const View& k, const View& v, const Masks& masks, double scale, const View& out,
                    const View& lse, const View& dout, const View& dq, const View& dk, const View& dv) {
  const int64_t B = q.shape[0], H = q.shape[1], Sq = q.shape[2], D = q.shape[3], Sk = k.shape[2], Dv = v.shape[3];
  const T* lse_p = lse.ptr<T>();
  const int64_t query_rows = query_block(Sq, Sk);
#pragma omp parallel
  {
    std::vector<T> p(size_t(query_rows * std::max<int64_t>(1, Sk))), dp(p.size()), delta(static_cast<size_t>(query_rows));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const Mat<T> Q = mat<T>(q, b, h), K = mat<T>(k, b, h), V = mat<T>(v, b, h), O = mat<T>(out, b, h);
      const Mat<T> dO = mat<T>(dout, b, h), dQ = mat<T>(dq, b, h), dK = mat<T>(dk, b, h), dV = mat<T>(dv, b, h);
      if (Sq == 0) {  // no query looked at any key
        for (int64_t j = 0; j < Sk; ++j) {
          std::fill(dK.p + j * dK.ld, dK.p + j * dK.ld + D, T(0));
          std::fill(dV.p + j * dV.ld, dV.p + j * dV.ld + Dv, T(0));
        }
      }
      for (int64_t i0 = 0; i0 < Sq; i0 += query_rows) {
        const int64_t bq = std::min(query_rows, Sq - i0);
        const double accumulate = i0 == 0 ? 0.0 : 1.0;  // dK, dV: the first block writes, later ones add
        if (Sk == 0) {
          for (int64_t r = 0; r < bq; ++r) std::fill(dQ.p + (i0 + r) * dQ.ld, dQ.p + (i0 + r) * dQ.ld + D, T(0));
          continue;
        }
        // P = exp(scale * Q K^T - lse), zero where hidden (and on rows with no visible key).
        if (D == 0) std::fill(p.begin(), p.end(), T(0));
        else gemm_t(false, true, bq, Sk, D, scale, Q.p + i0 * Q.ld, Q.ld, K.p, K.ld, 0.0, p.data(), Sk);
        for (int64_t r = 0; r < bq; ++r) {
          T* row = p.data() + r * Sk;
          const int64_t i = i0 + r;
          const T l = lse_p[(b * H + h) * Sq + i];
          if (l == -std::numeric_limits<T>::infinity()) {
            for (int64_t j = 0; j < Sk; ++j) row[j] = T(0);
          } else {
            for (int64_t j = 0; j < Sk; ++j) row[j] = vec::exp_of(row[j] - l);
            if (masks.any())
              for (int64_t j = 0; j < Sk; ++j)
                if (masks.blocked(b, i, j)) row[j] = T(0);
          }
          // delta_i = sum_d dO[i, d] * O[i, d] = sum_j P[i, j] * dP[i, j]
          const T* o = O.p + i * O.ld;
          const T* g = dO.p + i * dO.ld;
          delta[size_t(r)] = vec::sum_lanes<T>(Dv, [&](int64_t c) { return o[c] * g[c]; });
        }
        if (Dv > 0) {
          // dV (+)= P^T dO;  dP = dO V^T
          gemm_t(true, false, Sk, Dv, bq, 1.0, p.data(), Sk, dO.p + i0 * dO.ld, dO.ld, accumulate, dV.p, dV.ld);
          gemm_t(false, true, bq, Sk, Dv, 1.0, dO.p + i0 * dO.ld, dO.ld, V.p, V.ld, 0.0, dp.data(), Sk);
        } else {
          std::fill(dp.begin(), dp.end(), T(0));
        }
        // dS = P * (dP - delta), into dp
        for (int64_t r = 0; r < bq; ++r) {
          const T* pr = p.data() + r * Sk;
          T* dr = dp.data() + r * Sk;
          const T d = delta[size_t(r)];
          for (int64_t j = 0; j < Sk; ++j) dr[j] = pr[j] * (dr[j] - d);
        }
        if (D > 0) {
          // dQ = scale * dS K;  dK (+)= scale * dS^T Q
          gemm_t(false, false, bq, D, Sk, scale, dp.data(), Sk, K.p, K.ld, 0.0, dQ.p + i0 * dQ.ld, dQ.ld);
          gemm_t(true, false, Sk, D, bq, scale, dp.data(), Sk, Q.p + i0 * Q.ld, Q.ld, accumulate, dK.p, dK.ld);
        }
      }
    }
  }
}

template <class F>
void dispatch_attention(DType t, F f) {
  if (t == DType::f32) return f(float{});
  if (t == DType::f64) return f(double{});
  throw std::invalid_argument("attention: fused CPU attention takes f32 or f64, got " + std::string(dtype_name(t)));
}

}  // namespace

bool attention_supported(const AttentionArgs& a, bool backward) {
  if ((a.q.dtype != DType::f32 && a.q.dtype != DType::f64) || a.bias.data) return false;
  for (const View* v : {&a.q, &a.k, &a.v, &a.out})
    if (!rows_readable(*v)) return false;
  if (a.lse.dtype != a.q.dtype || !a.lse.contiguous()) return false;
  if (!backward) return true;
  for (const View* v : {&a.dout, &a.dq, &a.dk, &a.dv})
    if (!rows_readable(*v)) return false;
  return a.dq.dtype == a.q.dtype;
}

void attention_forward(const AttentionArgs& a) {
  if (!attention_supported(a, false))
    throw std::invalid_argument("attention: the CPU kernel does not take these arguments (attention_supported)");
  const Masks masks = masks_of(a.key_padding, a.causal);
  dispatch_attention(a.q.dtype, [&](auto tag) {
    using T = decltype(tag);
    forward_typed<T>(a.q, a.k, a.v, masks, a.scale, a.out, a.lse);
  });
}

void attention_backward(const AttentionArgs& a) {
  if (!attention_supported(a, true))
    throw std::invalid_argument("attention: the CPU kernel does not take these arguments (attention_supported)");
  const Masks masks = masks_of(a.key_padding, a.causal);
  dispatch_attention(a.q.dtype, [&](auto tag) {
    using T = decltype(tag);
    backward_typed<T>(a.q, a.k, a.v, masks, a.scale, a.out, a.lse, a.dout, a.dq, a.dk, a.dv);
  });
}

LOOM_KERNELS_ATTENTION(LOOM_KERNEL_DEFINED_HERE)

}  // namespace loom::kernels::cpu
