// Large-shape tests: the OpenMP-parallel and blocked kernel paths that tests/core/test_op_cases.cpp
// (inputs of at most 64 elements) never reaches. Each op's main operand has more than
// kernels::cpu::kParallelGrain (2^15) elements, and dims avoid multiples of the kernels' block sizes
// (32-row layer-norm blocks, 64-column embedding blocks, 256-column reduction blocks, 8192-element
// reduction chunks).
//   LargeForward   f32 and f64 forwards against the double-precision reference (reference.h, plus
//                  odometer-based copies of its broadcasting/reduction/indexing helpers, for speed)
//   LargeBackward  f64 gradients against closed-form gradients written here with plain loops (and,
//                  for layer_norm, against the same op run one row at a time)
//   LargeThreads   results that must be bitwise identical for 1, 2 and 3 OpenMP threads
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "kernels/cpu/cpu.h"
#include "reference.h"

using namespace loom;
namespace ops = loom::ops;
using ref::Ref;

namespace {

using Dims = std::vector<int64_t>;

int64_t count_of(const Dims& s) { return ref::numel(s); }

double round_to(double x, DType dt) { return dt == DType::f32 ? double(float(x)) : x; }

// n values ±[lo, hi] (never zero), already representable in `dt`.
std::vector<double> rnd(int64_t n, std::mt19937& rng, DType dt = DType::f64, double lo = 0.1, double hi = 1.0) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = round_to((u(rng) < 0.5 ? -1.0 : 1.0) * (lo + (hi - lo) * u(rng)), dt);
  return v;
}

std::vector<int64_t> rnd_idx(int64_t n, int64_t hi, std::mt19937& rng) {
  std::uniform_int_distribution<int64_t> k(0, hi - 1);
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t& x : v) x = k(rng);
  return v;
}

Tensor mk(const std::vector<double>& v, const Dims& s, DType dt) { return Tensor::from(v, Shape(s), dt); }
Tensor mk_idx(const std::vector<int64_t>& v, const Dims& s) { return Tensor::from(v, Shape(s), DType::i64); }
Ref R(const std::vector<double>& v, const Dims& s) { return Ref{s, v}; }
Ref R_idx(const std::vector<int64_t>& v, const Dims& s) { return Ref{s, std::vector<double>(v.begin(), v.end())}; }

// ---- faster stand-ins for the reference's per-element-unravel helpers ----
// Same definitions as reference.h (plain loops in double), but walking indices with an odometer
// instead of unravelling each flat index, so references for ~100k-element tensors stay cheap.
namespace fast {

Dims contiguous_strides(const Dims& s) {
  Dims st(s.size(), 1);
  for (int d = int(s.size()) - 2; d >= 0; --d) st[size_t(d)] = st[size_t(d) + 1] * s[size_t(d) + 1];
  return st;
}

// Calls f(flat, off) for every element of shape s in row-major order, off = offset + Σ idx[d]·st[d].
template <class F> void walk(const Dims& s, const Dims& st, int64_t offset, F f) {
  const int nd = int(s.size());
  const int64_t n = ref::numel(s);
  Dims idx(s.size(), 0);
  int64_t off = offset;
  for (int64_t flat = 0; flat < n; ++flat) {
    f(flat, off);
    for (int d = nd - 1; d >= 0; --d) {
      const size_t k = size_t(d);
      if (++idx[k] < s[k]) { off += st[k]; break; }
      off -= st[k] * (s[k] - 1);
      idx[k] = 0;
    }
  }
}

Ref strided(const Ref& a, const Dims& s, const Dims& st, int64_t offset = 0) {
  Ref out = ref::zeros(s);
  fast::walk(s, st, offset, [&](int64_t f, int64_t off) { out.v[size_t(f)] = a.v[size_t(off)]; });
  return out;
}

Ref broadcast_to(const Ref& a, const Dims& s) {
  if (a.shape == s) return a;
  const size_t lead = s.size() - a.shape.size();
  Dims st(s.size(), 0), cs = fast::contiguous_strides(a.shape);
  for (size_t i = 0; i < a.shape.size(); ++i) st[lead + i] = a.shape[i] == 1 ? 0 : cs[i];
  return fast::strided(a, s, st);
}

Ref permute(const Ref& a, const std::vector<int>& perm) {
  Dims s, st, cs = fast::contiguous_strides(a.shape);
  for (int p : perm) s.push_back(a.shape[size_t(p)]), st.push_back(cs[size_t(p)]);
  return fast::strided(a, s, st);
}

Ref transpose(const Ref& a, int d0, int d1) {
  std::vector<int> perm(size_t(a.ndim()));
  for (int i = 0; i < a.ndim(); ++i) perm[size_t(i)] = i;
  std::swap(perm[size_t(ref::wrap(d0, a.ndim()))], perm[size_t(ref::wrap(d1, a.ndim()))]);
  return fast::permute(a, perm);
}

template <class F> Ref zip(const Ref& a, const Ref& b, F f) {
  const Dims s = ref::broadcast_shape(a.shape, b.shape);
  Ref A = fast::broadcast_to(a, s), B = fast::broadcast_to(b, s), out = ref::zeros(s);
  for (size_t i = 0; i < out.v.size(); ++i) out.v[i] = f(A.v[i], B.v[i]);
  return out;
}
Ref add(const Ref& a, const Ref& b) { return fast::zip(a, b, [](double x, double y) { return x + y; }); }
Ref sub(const Ref& a, const Ref& b) { return fast::zip(a, b, [](double x, double y) { return x - y; }); }
Ref mul(const Ref& a, const Ref& b) { return fast::zip(a, b, [](double x, double y) { return x * y; }); }
Ref div(const Ref& a, const Ref& b) { return fast::zip(a, b, [](double x, double y) { return x / y; }); }

// Output strides (0 along reduced dims) of the keepdim result of reducing `dims` of shape s.
struct Reduction { std::vector<bool> red; Dims keep, out_strides; };
Reduction reduction_of(const Dims& s, const std::vector<int>& dims) {
  Reduction r;
  r.red = ref::reduced_mask(int(s.size()), dims);
  r.keep = ref::reduced_shape(s, r.red, true);
  Dims cs = fast::contiguous_strides(r.keep);
  for (size_t d = 0; d < s.size(); ++d) r.out_strides.push_back(r.red[d] ? 0 : cs[d]);
  return r;
}

template <class F> Ref reduce(const Ref& a, const std::vector<int>& dims, bool keepdim, double init, F f) {
  Reduction r = fast::reduction_of(a.shape, dims);
  Ref out = ref::full(r.keep, init);
  fast::walk(a.shape, r.out_strides, 0, [&](int64_t i, int64_t o) { out.v[size_t(o)] = f(out.v[size_t(o)], a.v[size_t(i)]); });
  out.shape = ref::reduced_shape(a.shape, r.red, keepdim);
  return out;
}
Ref sum(const Ref& a, const std::vector<int>& dims = {}, bool keepdim = false) {
  return fast::reduce(a, dims, keepdim, 0.0, [](double acc, double x) { return acc + x; });
}
Ref mean(const Ref& a, const std::vector<int>& dims = {}, bool keepdim = false) {
  Ref s = fast::sum(a, dims, keepdim);
  const double count = double(a.numel()) / double(s.numel());
  for (double& x : s.v) x /= count;
  return s;
}
Ref amax(const Ref& a, const std::vector<int>& dims = {}, bool keepdim = false) {
  return fast::reduce(a, dims, keepdim, -std::numeric_limits<double>::infinity(),
                [](double acc, double x) { return std::max(acc, x); });
}
Ref logsumexp(const Ref& a, const std::vector<int>& dims, bool keepdim = false) {
  Reduction r = fast::reduction_of(a.shape, dims);
  Ref m = fast::amax(a, dims, true), s = ref::zeros(r.keep);
  fast::walk(a.shape, r.out_strides, 0,
       [&](int64_t i, int64_t o) { s.v[size_t(o)] += std::exp(a.v[size_t(i)] - m.v[size_t(o)]); });
  for (size_t o = 0; o < s.v.size(); ++o) s.v[o] = m.v[o] + std::log(s.v[o]);
  s.shape = ref::reduced_shape(a.shape, r.red, keepdim);
  return s;
}

// out[o, j, i] = x[o, index[o, j, i], i] along dim.
Ref gather(const Ref& x, int dim, const Ref& index) {
  dim = ref::wrap(dim, x.ndim());
  ref::Axis xa = ref::axis_of(x.shape, dim), ia = ref::axis_of(index.shape, dim);
  Ref out = ref::zeros(index.shape);
  for (int64_t o = 0; o < ia.outer; ++o)
    for (int64_t j = 0; j < ia.n; ++j)
      for (int64_t i = 0; i < ia.inner; ++i) {
        const int64_t k = ia.pos(o, j, i), t = int64_t(index.v[size_t(k)]);
        ref::check(t >= 0 && t < xa.n, "gather: index out of range");
        out.v[size_t(k)] = x.v[size_t(xa.pos(o, t, i))];
      }
  return out;
}
// out[o, j, i] = x[o, index[j], i] along dim.
Ref index_select(const Ref& x, int dim, const Ref& index) {
  dim = ref::wrap(dim, x.ndim());
  Dims s = x.shape;
  s[size_t(dim)] = index.numel();
  ref::Axis xa = ref::axis_of(x.shape, dim), oa = ref::axis_of(s, dim);
  Ref out = ref::zeros(s);
  for (int64_t o = 0; o < oa.outer; ++o)
    for (int64_t j = 0; j < oa.n; ++j)
      for (int64_t i = 0; i < oa.inner; ++i) {
        const int64_t t = int64_t(index.v[size_t(j)]);
        ref::check(t >= 0 && t < xa.n, "index_select: index out of range");
        out.v[size_t(oa.pos(o, j, i))] = x.v[size_t(xa.pos(o, t, i))];
      }
  return out;
}
// x with src[o, j, i] added at x[o, index[o, j, i], i].
Ref scatter_add(const Ref& x, int dim, const Ref& index, const Ref& src) {
  dim = ref::wrap(dim, x.ndim());
  ref::Axis xa = ref::axis_of(x.shape, dim), ia = ref::axis_of(index.shape, dim);
  Ref out = x;
  for (int64_t o = 0; o < ia.outer; ++o)
    for (int64_t j = 0; j < ia.n; ++j)
      for (int64_t i = 0; i < ia.inner; ++i) {
        const int64_t k = ia.pos(o, j, i), t = int64_t(index.v[size_t(k)]);
        ref::check(t >= 0 && t < xa.n, "scatter_add: index out of range");
        out.v[size_t(xa.pos(o, t, i))] += src.v[size_t(k)];
      }
  return out;
}

// numpy matmul of operands with at least 2 dims: batch dims broadcast, then plain triple loops.
Ref matmul(const Ref& a, const Ref& b) {
  const int64_t m = a.shape[a.shape.size() - 2], k = a.shape.back(), n = b.shape.back();
  ref::check(b.shape[b.shape.size() - 2] == k, "matmul: inner dims differ");
  Dims batch = ref::broadcast_shape(Dims(a.shape.begin(), a.shape.end() - 2), Dims(b.shape.begin(), b.shape.end() - 2));
  Dims sa = batch, sb = batch, so = batch;
  sa.insert(sa.end(), {m, k});
  sb.insert(sb.end(), {k, n});
  so.insert(so.end(), {m, n});
  Ref A = fast::broadcast_to(a, sa), B = fast::broadcast_to(b, sb), out = ref::zeros(so);
  for (int64_t bi = 0; bi < ref::numel(batch); ++bi)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t p = 0; p < k; ++p) acc += A.v[size_t((bi * m + i) * k + p)] * B.v[size_t((bi * k + p) * n + j)];
        out.v[size_t((bi * m + i) * n + j)] = acc;
      }
  return out;
}

}  // namespace fast

struct Tol { double rtol, atol; };
Tol tol_of(DType dt) { return dt == DType::f64 ? Tol{1e-10, 1e-10} : Tol{1e-5, 1e-5}; }

// |got - want| <= atol + rtol * |want| everywhere (NaN never passes); shapes must match.
::testing::AssertionResult close_vals(const Dims& got_shape, const std::vector<double>& got, const Ref& want, Tol tl) {
  if (got_shape != want.shape) {
    std::ostringstream os;
    os << "shape mismatch: got [";
    for (int64_t d : got_shape) os << d << ",";
    os << "] want [";
    for (int64_t d : want.shape) os << d << ",";
    os << "]";
    return ::testing::AssertionFailure() << os.str();
  }
  if (got.size() != want.v.size()) return ::testing::AssertionFailure() << "size mismatch";
  int64_t bad = 0, first = -1;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(got[i] - want.v[i]);
    if (!(err <= tl.atol + tl.rtol * std::fabs(want.v[i]))) {
      if (bad++ == 0) first = int64_t(i);
      if (!(err <= worst)) worst = err;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  std::ostringstream os;
  os << bad << " of " << got.size() << " elements differ; first at flat index " << first << ": got "
     << got[size_t(first)] << ", want " << want.v[size_t(first)] << "; worst abs error " << worst;
  return ::testing::AssertionFailure() << os.str();
}

::testing::AssertionResult close(const Tensor& t, const Ref& want, Tol tl) {
  if (!t.defined()) return ::testing::AssertionFailure() << "tensor is undefined";
  return close_vals(t.shape().vec(), t.to_vector<double>(), want, tl);
}

// Exact equality of integer results (argmax, argsort) against a reference holding integers.
::testing::AssertionResult same_ints(const Tensor& t, const Ref& want) {
  if (t.dtype() != DType::i64) return ::testing::AssertionFailure() << "dtype is " << dtype_name(t.dtype());
  return close_vals(t.shape().vec(), t.to_vector<double>(), want, Tol{0, 0});
}

// The raw bytes of a tensor (contiguous copy).
std::vector<unsigned char> bytes_of(const Tensor& t) {
  Tensor c = t.contiguous();
  std::vector<unsigned char> b(size_t(c.numel()) * dtype_size(c.dtype()));
  std::memcpy(b.data(), c.raw_data(), b.size());
  return b;
}

::testing::AssertionResult bitwise_equal(const Tensor& a, const Tensor& b) {
  if (!(a.shape() == b.shape()) || a.dtype() != b.dtype())
    return ::testing::AssertionFailure() << a.describe() << " vs " << b.describe();
  std::vector<unsigned char> x = bytes_of(a), y = bytes_of(b);
  if (x == y) return ::testing::AssertionSuccess();
  std::vector<double> va = a.to_vector<double>(), vb = b.to_vector<double>();
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < va.size(); ++i)
    if (std::memcmp(&va[i], &vb[i], sizeof(double)) != 0 && bad++ == 0) first = int64_t(i);
  std::ostringstream os;
  os.precision(17);
  os << bad << " of " << va.size() << " elements differ bitwise";
  if (first >= 0) os << "; first at " << first << ": " << va[size_t(first)] << " vs " << vb[size_t(first)];
  return ::testing::AssertionFailure() << os.str();
}

// Runs f with n OpenMP threads, restoring the previous setting afterwards (also on exceptions).
struct ThreadScope {
  int prev;
  explicit ThreadScope(int n) : prev(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~ThreadScope() { omp_set_num_threads(prev); }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;
};
template <class F> auto with_threads(int n, F f) {
  ThreadScope scope(n);
  return f();
}
const int kThreadCounts[] = {2, 3};  // compared against a 1-thread run

// ============================================================================================
// Forward vs the reference, f32 and f64
// ============================================================================================

// The parallel paths need a team: run with at least 2 threads even where OpenMP defaults to 1.
class AtLeastTwoThreads {
 public:
  AtLeastTwoThreads() : prev_(omp_get_max_threads()) { if (prev_ < 2) omp_set_num_threads(2); }
  ~AtLeastTwoThreads() { omp_set_num_threads(prev_); }
  AtLeastTwoThreads(const AtLeastTwoThreads&) = delete;
  AtLeastTwoThreads& operator=(const AtLeastTwoThreads&) = delete;
 private:
  int prev_;
};

class LargeForward : public ::testing::TestWithParam<DType> {
 protected:
  AtLeastTwoThreads threads_;
  DType dt() const { return GetParam(); }
  Tol tol() const { return tol_of(dt()); }
  std::mt19937 rng{12345};
  // A random float input: loom tensor and the reference holding the same (rounded) values.
  std::pair<Tensor, Ref> input(const Dims& s, double lo = 0.1, double hi = 1.0) {
    std::vector<double> v = rnd(count_of(s), rng, dt(), lo, hi);
    return {mk(v, s, dt()), R(v, s)};
  }
};

TEST_P(LargeForward, BroadcastRowAndColumnVectors) {
  auto [a, ra] = input({300, 257});
  auto [row, rrow] = input({257});
  auto [col, rcol] = input({300, 1});
  EXPECT_TRUE(close(ops::add(a, row), fast::add(ra, rrow), tol())) << "a + row";
  EXPECT_TRUE(close(ops::mul(a, row), fast::mul(ra, rrow), tol())) << "a * row";
  EXPECT_TRUE(close(ops::add(a, col), fast::add(ra, rcol), tol())) << "a + col";
  EXPECT_TRUE(close(ops::mul(a, col), fast::mul(ra, rcol), tol())) << "a * col";
  // The broadcast operand on the left (stride 0 in the first input).
  EXPECT_TRUE(close(ops::sub(col, a), fast::sub(rcol, ra), tol())) << "col - a";
  EXPECT_TRUE(close(ops::div(row, a), fast::div(rrow, ra), tol())) << "row / a";
  // Column vector times row vector: an outer product made only of broadcasts.
  EXPECT_TRUE(close(ops::mul(col, row), fast::mul(rcol, rrow), tol())) << "col * row";

  // 3-D: broadcast along the middle dim and along the first dim.
  auto [x, rx] = input({64, 40, 33});
  auto [mid, rmid] = input({40, 1});
  auto [lead, rlead] = input({64, 1, 33});
  EXPECT_TRUE(close(ops::mul(x, mid), fast::mul(rx, rmid), tol())) << "x[64,40,33] * [40,1]";
  EXPECT_TRUE(close(ops::add(x, lead), fast::add(rx, rlead), tol())) << "x[64,40,33] + [64,1,33]";
}

TEST_P(LargeForward, TransposedOperand) {
  auto [base, rbase] = input({257, 300});
  auto [c, rc] = input({300, 257});
  Tensor at = base.transpose(0, 1);  // [300, 257], strides (1, 300)
  ASSERT_FALSE(at.is_contiguous());
  Ref rat = fast::transpose(rbase, 0, 1);
  EXPECT_TRUE(close(ops::add(at, c), fast::add(rat, rc), tol())) << "aᵀ + c";
  EXPECT_TRUE(close(ops::mul(c, at), fast::mul(rc, rat), tol())) << "c * aᵀ";
  EXPECT_TRUE(close(ops::exp(at), ref::map(rat, [](double v) { return std::exp(v); }), tol())) << "exp(aᵀ)";
  EXPECT_TRUE(close(at.contiguous(), rat, Tol{0, 0})) << "aᵀ.contiguous()";
  // Reductions of the non-contiguous view (general strided path).
  EXPECT_TRUE(close(ops::sum(at, {0}), fast::sum(rat, {0}), Tol{tol().rtol, 1e-9})) << "sum(aᵀ, 0)";
  EXPECT_TRUE(close(ops::sum(at, {1}), fast::sum(rat, {1}), Tol{tol().rtol, 1e-9})) << "sum(aᵀ, 1)";
  EXPECT_TRUE(close(ops::sum(at), fast::sum(rat), Tol{tol().rtol, 1e-8})) << "sum(aᵀ)";

  // A 3-D permutation feeding a broadcasting op.
  auto [p, rp] = input({33, 64, 40});
  auto [q, rq] = input({64, 40, 33});
  Tensor pv = p.permute({1, 2, 0});
  EXPECT_TRUE(close(ops::sub(pv, q), fast::sub(fast::permute(rp, {1, 2, 0}), rq), tol())) << "permuted - q";
}

TEST_P(LargeForward, Unary) {
  auto [x, rx] = input({64, 40, 33}, 0.1, 3.0);
  EXPECT_TRUE(close(ops::exp(x), ref::map(rx, [](double v) { return std::exp(v); }), tol())) << "exp";
  EXPECT_TRUE(close(ops::gelu(x), ref::map(rx, ref::gelu_erf), tol())) << "gelu erf";
  EXPECT_TRUE(close(ops::gelu(x, ops::GeluApprox::tanh), ref::map(rx, ref::gelu_tanh), tol())) << "gelu tanh";
  EXPECT_TRUE(close(ops::tanh(x), ref::map(rx, [](double v) { return std::tanh(v); }), tol())) << "tanh";
  // 1-D: one long row, split across threads; contiguous, strided with an offset, and against a
  // 0-d tensor (stride 0).
  auto [v, rv] = input({100003});
  EXPECT_TRUE(close(ops::exp(v), ref::map(rv, [](double e) { return std::exp(e); }), tol())) << "exp 1-D";
  Tensor vs = v.slice(0, 1, 100003, 2);  // 50001 elements
  Ref rvs = fast::strided(rv, {50001}, {2}, 1);
  EXPECT_TRUE(close(ops::gelu(vs), ref::map(rvs, ref::gelu_erf), tol())) << "gelu strided 1-D";
  auto [w, rw] = input({50001});
  EXPECT_TRUE(close(ops::mul(vs, w), fast::mul(rvs, rw), tol())) << "strided 1-D * contiguous 1-D";
  const double c = round_to(0.37, dt());
  EXPECT_TRUE(close(ops::add(v, Tensor::scalar(c, dt())), ref::add(rv, c), tol())) << "1-D + 0-d tensor";
  EXPECT_TRUE(close(ops::sub(Tensor::scalar(c, dt()), v), fast::sub(ref::scalar(c), rv), tol())) << "0-d tensor - 1-D";
  EXPECT_TRUE(close(ops::mul(x, 2.5), ref::mul(rx, 2.5), tol())) << "x * 2.5";
}

TEST_P(LargeForward, SumLeadingDims) {
  auto [a, ra] = input({300, 257});
  // Contiguous, reduced over leading dims only: the column-blocked path (257 = 256 + 1 columns).
  EXPECT_TRUE(close(ops::sum(a, {0}), fast::sum(ra, {0}), Tol{tol().rtol, 1e-9})) << "sum(a, 0)";
  EXPECT_TRUE(close(ops::sum(a, {0}, true), fast::sum(ra, {0}, true), Tol{tol().rtol, 1e-9})) << "sum(a, 0, keepdim)";
  EXPECT_TRUE(close(ops::mean(a, {0}), fast::mean(ra, {0}), Tol{tol().rtol, 1e-9})) << "mean(a, 0)";
  EXPECT_TRUE(close(ops::amax(a, {0}), fast::amax(ra, {0}), tol())) << "amax(a, 0)";
  auto [x, rx] = input({64, 40, 33});
  EXPECT_TRUE(close(ops::sum(x, {0, 1}), fast::sum(rx, {0, 1}), Tol{tol().rtol, 1e-9})) << "sum(x, {0,1})";
  EXPECT_TRUE(close(ops::sum(x, {0}), fast::sum(rx, {0}), Tol{tol().rtol, 1e-9})) << "sum(x, 0)";
}

TEST_P(LargeForward, SumAllChunked) {
  // 105200 elements: one long reduction in 8192-element chunks (12 full chunks and a partial one).
  auto [a, ra] = input({400, 263});
  EXPECT_TRUE(close(ops::sum(a), fast::sum(ra), Tol{tol().rtol, 1e-8})) << "sum(all)";
  EXPECT_TRUE(close(ops::mean(a), fast::mean(ra), Tol{tol().rtol, 1e-12})) << "mean(all)";
  EXPECT_TRUE(close(ops::amax(a), fast::amax(ra), tol())) << "amax(all)";
  EXPECT_TRUE(close(ops::sum(a, {0, 1}), fast::sum(ra, {0, 1}), Tol{tol().rtol, 1e-8})) << "sum(a, {0,1})";
  // A strided 1-D view with an offset: the chunked path with stride 2.
  auto [b, rb] = input({210001});
  Tensor bs = b.slice(0, 1, 210001, 2);  // 105000 elements
  Ref rbs = fast::strided(rb, {105000}, {2}, 1);
  ASSERT_EQ(bs.numel(), 105000);
  EXPECT_TRUE(close(ops::sum(bs), fast::sum(rbs), Tol{tol().rtol, 1e-8})) << "sum(strided 1-D)";
  EXPECT_TRUE(close(ops::amax(bs), fast::amax(rbs), tol())) << "amax(strided 1-D)";
  // The maximum placed in the very last element (the partial chunk).
  std::vector<double> v = rbs.v;
  v.back() = 5.0;
  EXPECT_TRUE(close(ops::amax(mk(v, {105000}, dt())), ref::scalar(5.0), tol())) << "amax with max in the tail";
}

TEST_P(LargeForward, ReduceLastAndMiddleDims) {
  auto [a, ra] = input({300, 257}, 0.1, 4.0);
  EXPECT_TRUE(close(ops::sum(a, {-1}), fast::sum(ra, {-1}), Tol{tol().rtol, 1e-9})) << "sum last";
  EXPECT_TRUE(close(ops::amax(a, {-1}), fast::amax(ra, {-1}), tol())) << "amax last";
  EXPECT_TRUE(close(ops::logsumexp(a, {-1}), fast::logsumexp(ra, {-1}), tol())) << "logsumexp last";
  EXPECT_TRUE(close(ops::logsumexp(a, {0}), fast::logsumexp(ra, {0}), tol())) << "logsumexp dim 0";
  auto [x, rx] = input({64, 40, 33}, 0.1, 4.0);
  EXPECT_TRUE(close(ops::sum(x, {1}), fast::sum(rx, {1}), Tol{tol().rtol, 1e-9})) << "sum middle";
  EXPECT_TRUE(close(ops::amax(x, {1}), fast::amax(rx, {1}), tol())) << "amax middle";
  EXPECT_TRUE(close(ops::logsumexp(x, {1}), fast::logsumexp(rx, {1}), tol())) << "logsumexp middle";
  EXPECT_TRUE(close(ops::sum(x, {1}, true), fast::sum(rx, {1}, true), Tol{tol().rtol, 1e-9})) << "sum middle keepdim";
  EXPECT_TRUE(close(ops::sum(x, {0, 2}), fast::sum(rx, {0, 2}), Tol{tol().rtol, 1e-9})) << "sum {0,2}";
  EXPECT_TRUE(close(ops::amax(x, {0, 2}), fast::amax(rx, {0, 2}), tol())) << "amax {0,2}";
}

TEST_P(LargeForward, Argmax) {
  auto [a, ra] = input({300, 257});
  EXPECT_TRUE(same_ints(ops::argmax(a, -1), ref::argmax(ra, -1))) << "argmax last";
  EXPECT_TRUE(same_ints(ops::argmax(a, 0), ref::argmax(ra, 0))) << "argmax dim 0";
  auto [x, rx] = input({64, 40, 33});
  EXPECT_TRUE(same_ints(ops::argmax(x, 1), ref::argmax(rx, 1))) << "argmax middle";
  EXPECT_TRUE(same_ints(ops::argmax(x, 1, true), ref::argmax(rx, 1, true))) << "argmax middle keepdim";
}

TEST_P(LargeForward, SoftmaxAndLogSoftmax) {
  auto [a, ra] = input({300, 257}, 0.1, 4.0);
  EXPECT_TRUE(close(ops::softmax(a, -1), ref::softmax(ra, -1), tol())) << "softmax last";
  EXPECT_TRUE(close(ops::softmax(a, 0), ref::softmax(ra, 0), tol())) << "softmax dim 0";
  EXPECT_TRUE(close(ops::log_softmax(a, -1), ref::log_softmax(ra, -1), tol())) << "log_softmax last";
  EXPECT_TRUE(close(ops::log_softmax(a, 0), ref::log_softmax(ra, 0), tol())) << "log_softmax dim 0";
  auto [x, rx] = input({64, 40, 33}, 0.1, 4.0);
  EXPECT_TRUE(close(ops::softmax(x, 1), ref::softmax(rx, 1), tol())) << "softmax middle";
  EXPECT_TRUE(close(ops::log_softmax(x, 1), ref::log_softmax(rx, 1), tol())) << "log_softmax middle";
}

TEST_P(LargeForward, LayerNorm) {
  auto [x, rx] = input({300, 257}, 0.1, 3.0);
  auto [w, rw] = input({257});
  auto [b, rb] = input({257});
  EXPECT_TRUE(close(ops::layer_norm(x, w, b), ref::layer_norm(rx, rw, rb, 1e-5), tol())) << "affine";
  auto [y, ry] = input({64, 40, 33}, 0.1, 3.0);
  EXPECT_TRUE(close(ops::layer_norm(y, Tensor(), Tensor(), 1e-3), ref::layer_norm(ry, Ref{}, Ref{}, 1e-3), tol()))
      << "no affine, 3-D";
}

TEST_P(LargeForward, CrossEntropy) {
  auto [logits, rl] = input({300, 257}, 0.1, 4.0);
  std::vector<int64_t> t = rnd_idx(300, 257, rng);
  for (size_t i = 0; i < t.size(); i += 7) t[i] = -100;  // 43 ignored rows
  t[1] = 256;
  t[2] = 0;
  Tensor tt = mk_idx(t, {300});
  Ref rt = R_idx(t, {300});
  EXPECT_TRUE(close(ops::cross_entropy(logits, tt), ref::cross_entropy(rl, rt), tol())) << "plain";
  EXPECT_TRUE(close(ops::cross_entropy(logits, tt, -100, 0.1), ref::cross_entropy(rl, rt, -100, 0.1), tol()))
      << "label smoothing 0.1";
  // [..., C] logits with a custom ignore index.
  auto [l3, rl3] = input({20, 30, 129}, 0.1, 4.0);
  std::vector<int64_t> t3 = rnd_idx(600, 129, rng);
  for (size_t i = 3; i < t3.size(); i += 5) t3[i] = 7;
  EXPECT_TRUE(close(ops::cross_entropy(l3, mk_idx(t3, {20, 30}), 7), ref::cross_entropy(rl3, R_idx(t3, {20, 30}), 7),
                    tol()))
      << "3-D logits, ignore_index 7";
}

TEST_P(LargeForward, GatherIndexSelectEmbedding) {
  auto [x, rx] = input({300, 257});
  std::vector<int64_t> i1 = rnd_idx(300 * 200, 257, rng);
  EXPECT_TRUE(close(ops::gather(x, 1, mk_idx(i1, {300, 200})), fast::gather(rx, 1, R_idx(i1, {300, 200})), Tol{0, 0}))
      << "gather dim 1";
  std::vector<int64_t> i0 = rnd_idx(400 * 257, 300, rng);
  EXPECT_TRUE(close(ops::gather(x, 0, mk_idx(i0, {400, 257})), fast::gather(rx, 0, R_idx(i0, {400, 257})), Tol{0, 0}))
      << "gather dim 0";
  auto [y, ry] = input({64, 40, 33});
  std::vector<int64_t> im = rnd_idx(64 * 50 * 33, 40, rng);
  EXPECT_TRUE(close(ops::gather(y, 1, mk_idx(im, {64, 50, 33})), fast::gather(ry, 1, R_idx(im, {64, 50, 33})), Tol{0, 0}))
      << "gather middle dim";

  std::vector<int64_t> s0 = rnd_idx(500, 300, rng), s1 = rnd_idx(180, 257, rng), s2 = rnd_idx(55, 40, rng);
  EXPECT_TRUE(close(ops::index_select(x, 0, mk_idx(s0, {500})), fast::index_select(rx, 0, R_idx(s0, {500})), Tol{0, 0}))
      << "index_select dim 0";
  EXPECT_TRUE(close(ops::index_select(x, 1, mk_idx(s1, {180})), fast::index_select(rx, 1, R_idx(s1, {180})), Tol{0, 0}))
      << "index_select dim 1";
  EXPECT_TRUE(close(ops::index_select(y, 1, mk_idx(s2, {55})), fast::index_select(ry, 1, R_idx(s2, {55})), Tol{0, 0}))
      << "index_select middle dim";

  auto [w, rw] = input({500, 96});
  std::vector<int64_t> ids = rnd_idx(40 * 30, 500, rng);
  EXPECT_TRUE(close(ops::embedding(w, mk_idx(ids, {40, 30})), ref::embedding(rw, R_idx(ids, {40, 30})), Tol{0, 0}))
      << "embedding";
}

TEST_P(LargeForward, MatmulBatched) {
  auto [a, ra] = input({8, 70, 65});
  auto [b, rb] = input({8, 65, 75});
  auto [c, rc] = input({65, 75});
  EXPECT_TRUE(close(ops::matmul(a, b), fast::matmul(ra, rb), tol())) << "[8,70,65] x [8,65,75]";
  EXPECT_TRUE(close(ops::matmul(a, c), fast::matmul(ra, rc), tol())) << "[8,70,65] x [65,75] (broadcast batch)";
  // Transposed operand: bt is [8,65,75] as a view of [8,75,65].
  auto [bb, rbb] = input({8, 75, 65});
  EXPECT_TRUE(close(ops::matmul(a, bb.transpose(-1, -2)), fast::matmul(ra, fast::transpose(rbb, -1, -2)), tol()))
      << "a x bᵀ";
  auto [d, rd] = input({4, 1, 60, 50});
  auto [e, re] = input({3, 50, 70});
  EXPECT_TRUE(close(ops::matmul(d, e), fast::matmul(rd, re), tol())) << "[4,1,60,50] x [3,50,70]";
  // linear with bias and the fused activations: [6, 90, 65] x [70, 65]ᵀ + [70]
  auto [lx, rlx] = input({6, 90, 65});
  auto [lw, rlw] = input({70, 65});
  auto [lb, rlb] = input({70});
  EXPECT_TRUE(close(ops::linear(lx, lw, lb), ref::linear(rlx, rlw, rlb), tol())) << "linear";
  EXPECT_TRUE(close(ops::linear(lx, lw, lb, ops::Activation::gelu), ref::linear(rlx, rlw, rlb, ref::Act::gelu), tol()))
      << "linear + gelu";
  EXPECT_TRUE(close(ops::linear(lx, lw, lb, ops::Activation::gelu_tanh),
                    ref::linear(rlx, rlw, rlb, ref::Act::gelu_tanh), tol()))
      << "linear + gelu_tanh";
}

TEST_P(LargeForward, ArgsortRows) {
  auto [a, ra] = input({300, 257});
  EXPECT_TRUE(same_ints(ops::argsort(a, -1), ref::argsort(ra, -1, false))) << "ascending";
  EXPECT_TRUE(same_ints(ops::argsort(a, -1, true), ref::argsort(ra, -1, true))) << "descending";
  // Many ties: stability is observable.
  std::vector<double> v(size_t(300 * 257));
  std::uniform_int_distribution<int> k(-3, 3);
  for (double& x : v) x = double(k(rng)) + 0.5;
  EXPECT_TRUE(same_ints(ops::argsort(mk(v, {300, 257}, dt()), -1), ref::argsort(R(v, {300, 257}), -1, false)))
      << "ascending with ties";
  EXPECT_TRUE(same_ints(ops::argsort(mk(v, {300, 257}, dt()), -1, true), ref::argsort(R(v, {300, 257}), -1, true)))
      << "descending with ties";
  auto [x, rx] = input({64, 40, 33});
  EXPECT_TRUE(same_ints(ops::argsort(x, 1), ref::argsort(rx, 1, false))) << "middle dim";
}

INSTANTIATE_TEST_SUITE_P(Large, LargeForward, ::testing::Values(DType::f32, DType::f64),
                         [](const ::testing::TestParamInfo<DType>& info) { return std::string(dtype_name(info.param)); });

// ============================================================================================
// Backward (f64) vs closed-form gradients
// ============================================================================================

class LargeBackward : public ::testing::Test {
 protected:
  AtLeastTwoThreads threads_;
};

constexpr DType F64 = DType::f64;
const Tol kGradTol{1e-10, 1e-10};

Tensor leaf(const std::vector<double>& v, const Dims& s) { return mk(v, s, F64).set_requires_grad(true); }

// Layer-norm gradients over the last dim with plain loops: dx, dweight, dbias.
struct LnGrads { Ref dx, dw, db; };
LnGrads layer_norm_grads(const Ref& x, const Ref& w, const Ref& dy, double eps) {
  const int64_t n = x.shape.back(), rows = x.numel() / n;
  LnGrads g{ref::zeros(x.shape), ref::zeros({n}), ref::zeros({n})};
  std::vector<double> xh(size_t(n), 0.0), gw(size_t(n), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = x.v.data() + r * n;
    const double* gr = dy.v.data() + r * n;
    double mu = 0, var = 0;
    for (int64_t j = 0; j < n; ++j) mu += xr[j];
    mu /= double(n);
    for (int64_t j = 0; j < n; ++j) var += (xr[j] - mu) * (xr[j] - mu);
    var /= double(n);
    const double rs = 1.0 / std::sqrt(var + eps);
    double mg = 0, mgx = 0;
    for (int64_t j = 0; j < n; ++j) {
      xh[size_t(j)] = (xr[j] - mu) * rs;
      gw[size_t(j)] = gr[j] * w.v[size_t(j)];
      mg += gw[size_t(j)];
      mgx += gw[size_t(j)] * xh[size_t(j)];
      g.dw.v[size_t(j)] += gr[j] * xh[size_t(j)];
      g.db.v[size_t(j)] += gr[j];
    }
    mg /= double(n);
    mgx /= double(n);
    for (int64_t j = 0; j < n; ++j)
      g.dx.v[size_t(r * n + j)] = rs * (gw[size_t(j)] - mg - xh[size_t(j)] * mgx);
  }
  return g;
}

TEST_F(LargeBackward, LayerNorm) {
  std::mt19937 rng(101);
  for (Dims s : {Dims{300, 257}, Dims{64, 40, 33}}) {
    const int64_t n = s.back();
    std::vector<double> xv = rnd(count_of(s), rng, F64, 0.1, 3.0), wv = rnd(n, rng), bv = rnd(n, rng),
                        gv = rnd(count_of(s), rng);
    Tensor x = leaf(xv, s), w = leaf(wv, {n}), b = leaf(bv, {n});
    ops::layer_norm(x, w, b).backward(mk(gv, s, F64));
    LnGrads want = layer_norm_grads(R(xv, s), R(wv, {n}), R(gv, s), 1e-5);
    EXPECT_TRUE(close(x.grad(), want.dx, kGradTol)) << "dx, x " << s.size() << "-D";
    EXPECT_TRUE(close(w.grad(), want.dw, Tol{1e-10, 1e-9})) << "dweight, x " << s.size() << "-D";
    EXPECT_TRUE(close(b.grad(), want.db, Tol{1e-10, 1e-9})) << "dbias, x " << s.size() << "-D";

    // Independent second opinion: the same op run on single rows (far below the parallel
    // threshold); dweight/dbias are those rows' gradients summed here. All rows for the 2-D shape,
    // every 37th row (dx only) for the 3-D one.
    const int64_t rows = count_of(s) / n, step = s.size() == 2 ? 1 : 37;
    const std::vector<double> big_dx = x.grad().to_vector<double>();
    std::vector<double> dw_sum(size_t(n), 0.0), db_sum(size_t(n), 0.0);
    int64_t bad_rows = 0, first_bad = -1;
    for (int64_t r = 0; r < rows; r += step) {
      std::vector<double> xr(xv.begin() + r * n, xv.begin() + (r + 1) * n), gr(gv.begin() + r * n, gv.begin() + (r + 1) * n);
      Tensor xs = leaf(xr, {1, n}), ws = leaf(wv, {n}), bs = leaf(bv, {n});
      ops::layer_norm(xs, ws, bs).backward(mk(gr, {1, n}, F64));
      std::vector<double> big_row(big_dx.begin() + r * n, big_dx.begin() + (r + 1) * n);
      if (!close(xs.grad(), R(big_row, {1, n}), kGradTol) && bad_rows++ == 0) first_bad = r;
      std::vector<double> dw = ws.grad().to_vector<double>(), db = bs.grad().to_vector<double>();
      for (int64_t j = 0; j < n; ++j) dw_sum[size_t(j)] += dw[size_t(j)], db_sum[size_t(j)] += db[size_t(j)];
    }
    EXPECT_EQ(bad_rows, 0) << "dx of the big run differs from single-row runs, first at row " << first_bad << ", x "
                           << s.size() << "-D";
    if (step == 1) {
      EXPECT_TRUE(close(w.grad(), R(dw_sum, {n}), Tol{1e-10, 1e-9})) << "dweight vs the sum of single-row runs";
      EXPECT_TRUE(close(b.grad(), R(db_sum, {n}), Tol{1e-10, 1e-9})) << "dbias vs the sum of single-row runs";
    }
  }
  // Without weight/bias: dx only.
  std::vector<double> xv = rnd(300 * 257, rng, F64, 0.1, 3.0), gv = rnd(300 * 257, rng);
  Tensor x = leaf(xv, {300, 257});
  ops::layer_norm(x, Tensor(), Tensor()).backward(mk(gv, {300, 257}, F64));
  LnGrads want = layer_norm_grads(R(xv, {300, 257}), ref::full({257}, 1.0), R(gv, {300, 257}), 1e-5);
  EXPECT_TRUE(close(x.grad(), want.dx, kGradTol)) << "dx without affine";
}

// Softmax / log_softmax gradients along `dim` with plain loops.
Ref softmax_grad(const Ref& x, const Ref& dy, int dim, bool log) {
  Ref y = log ? ref::log_softmax(x, dim) : ref::softmax(x, dim);
  ref::Axis ax = ref::axis_of(x.shape, ref::wrap(dim, x.ndim()));
  Ref dx = ref::zeros(x.shape);
  for (int64_t o = 0; o < ax.outer; ++o)
    for (int64_t i = 0; i < ax.inner; ++i) {
      double s = 0;
      for (int64_t j = 0; j < ax.n; ++j) {
        const size_t p = size_t(ax.pos(o, j, i));
        s += log ? dy.v[p] : dy.v[p] * y.v[p];
      }
      for (int64_t j = 0; j < ax.n; ++j) {
        const size_t p = size_t(ax.pos(o, j, i));
        dx.v[p] = log ? dy.v[p] - std::exp(y.v[p]) * s : y.v[p] * (dy.v[p] - s);
      }
    }
  return dx;
}

TEST_F(LargeBackward, SoftmaxAndLogSoftmax) {
  std::mt19937 rng(202);
  struct C { Dims s; int dim; };
  for (const C& c : {C{{300, 257}, -1}, C{{300, 257}, 0}, C{{64, 40, 33}, 1}}) {
    std::vector<double> xv = rnd(count_of(c.s), rng, F64, 0.1, 4.0), gv = rnd(count_of(c.s), rng);
    for (bool log : {false, true}) {
      Tensor x = leaf(xv, c.s);
      (log ? ops::log_softmax(x, c.dim) : ops::softmax(x, c.dim)).backward(mk(gv, c.s, F64));
      EXPECT_TRUE(close(x.grad(), softmax_grad(R(xv, c.s), R(gv, c.s), c.dim, log), kGradTol))
          << (log ? "log_softmax" : "softmax") << " dim " << c.dim << " of " << c.s.size() << "-D";
    }
  }
}

TEST_F(LargeBackward, CrossEntropy) {
  std::mt19937 rng(303);
  const int64_t N = 300, C = 257;
  std::vector<double> xv = rnd(N * C, rng, F64, 0.1, 4.0);
  std::vector<int64_t> t = rnd_idx(N, C, rng);
  for (size_t i = 0; i < t.size(); i += 7) t[i] = -100;
  int64_t kept = 0;
  for (int64_t v : t) kept += v != -100;
  for (double eps : {0.0, 0.1}) {
    Tensor x = leaf(xv, {N, C});
    Tensor loss = ops::cross_entropy(x, mk_idx(t, {N}), -100, eps);
    ops::mul(loss, 2.5).backward();
    Ref want = ref::zeros({N, C});
    for (int64_t r = 0; r < N; ++r) {
      if (t[size_t(r)] == -100) continue;
      const double* xr = xv.data() + r * C;
      double mx = *std::max_element(xr, xr + C), s = 0;
      for (int64_t j = 0; j < C; ++j) s += std::exp(xr[j] - mx);
      for (int64_t j = 0; j < C; ++j) {
        double p = std::exp(xr[j] - mx) / s;
        double target = eps / double(C) + (j == t[size_t(r)] ? 1.0 - eps : 0.0);
        want.v[size_t(r * C + j)] = 2.5 * (p - target) / double(kept);
      }
    }
    EXPECT_TRUE(close(x.grad(), want, Tol{1e-10, 1e-13})) << "label smoothing " << eps;
  }
}

TEST_F(LargeBackward, EmbeddingRepeatedIds) {
  std::mt19937 rng(404);
  const int64_t V = 300, D = 100;  // 100 columns: one full 64-column block and a partial one
  std::vector<double> wv = rnd(V * D, rng);
  // 2400 ids from only 50 distinct values (about 48 repeats each), plus the last row id.
  std::vector<int64_t> ids = rnd_idx(60 * 40, 50, rng);
  ids[17] = V - 1;
  std::vector<double> gv = rnd(60 * 40 * D, rng);
  Tensor w = leaf(wv, {V, D});
  ops::embedding(w, mk_idx(ids, {60, 40})).backward(mk(gv, {60, 40, D}, F64));
  Ref want = ref::zeros({V, D});
  for (size_t i = 0; i < ids.size(); ++i)
    for (int64_t c = 0; c < D; ++c) want.v[size_t(ids[i] * D + c)] += gv[i * size_t(D) + size_t(c)];
  EXPECT_TRUE(close(w.grad(), want, kGradTol)) << "embedding dweight";
}

TEST_F(LargeBackward, GatherAndScatterAdd) {
  std::mt19937 rng(505);
  // gather along dim 1 with more indices than the dim (repeats): dx is a scatter of dy.
  {
    const int64_t N = 300, C = 257, K = 400;
    std::vector<double> xv = rnd(N * C, rng), gv = rnd(N * K, rng);
    std::vector<int64_t> idx = rnd_idx(N * K, C, rng);
    Tensor x = leaf(xv, {N, C});
    ops::gather(x, 1, mk_idx(idx, {N, K})).backward(mk(gv, {N, K}, F64));
    Ref want = ref::zeros({N, C});
    for (int64_t r = 0; r < N; ++r)
      for (int64_t k = 0; k < K; ++k) want.v[size_t(r * C + idx[size_t(r * K + k)])] += gv[size_t(r * K + k)];
    EXPECT_TRUE(close(x.grad(), want, kGradTol)) << "gather dim 1";
  }
  // gather along dim 0.
  {
    const int64_t N = 300, C = 257, K = 500;
    std::vector<double> xv = rnd(N * C, rng), gv = rnd(K * C, rng);
    std::vector<int64_t> idx = rnd_idx(K * C, N, rng);
    Tensor x = leaf(xv, {N, C});
    ops::gather(x, 0, mk_idx(idx, {K, C})).backward(mk(gv, {K, C}, F64));
    Ref want = ref::zeros({N, C});
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < C; ++c) want.v[size_t(idx[size_t(k * C + c)] * C + c)] += gv[size_t(k * C + c)];
    EXPECT_TRUE(close(x.grad(), want, kGradTol)) << "gather dim 0";
  }
  // scatter_add along dim 1 and dim 0: forward vs the reference; dx = dy, dsrc = dy gathered.
  for (int dim : {1, 0}) {
    const Dims xs = dim == 1 ? Dims{300, 257} : Dims{257, 300};
    const Dims is = dim == 1 ? Dims{300, 500} : Dims{500, 300};
    const int64_t bound = 257;  // x's size along dim
    std::vector<double> xv = rnd(count_of(xs), rng), sv = rnd(count_of(is), rng), gv = rnd(count_of(xs), rng);
    std::vector<int64_t> idx = rnd_idx(count_of(is), bound, rng);
    Tensor x = leaf(xv, xs), src = leaf(sv, is);
    Tensor out = ops::scatter_add(x, dim, mk_idx(idx, is), src);
    EXPECT_TRUE(close(out, fast::scatter_add(R(xv, xs), dim, R_idx(idx, is), R(sv, is)), Tol{1e-12, 1e-12}))
        << "scatter_add forward dim " << dim;
    out.backward(mk(gv, xs, F64));
    EXPECT_TRUE(close(x.grad(), R(gv, xs), Tol{0, 0})) << "scatter_add dx dim " << dim;
    Ref want_src = ref::zeros(is);
    for (int64_t r = 0; r < is[0]; ++r)
      for (int64_t c = 0; c < is[1]; ++c) {
        const int64_t k = r * is[1] + c, j = idx[size_t(k)];
        want_src.v[size_t(k)] = dim == 1 ? gv[size_t(r * xs[1] + j)] : gv[size_t(j * xs[1] + c)];
      }
    EXPECT_TRUE(close(src.grad(), want_src, Tol{0, 0})) << "scatter_add dsrc dim " << dim;
  }
  // index_select along dim 0 with repeats.
  {
    const int64_t N = 300, C = 257, K = 450;
    std::vector<double> xv = rnd(N * C, rng), gv = rnd(K * C, rng);
    std::vector<int64_t> idx = rnd_idx(K, 120, rng);
    Tensor x = leaf(xv, {N, C});
    ops::index_select(x, 0, mk_idx(idx, {K})).backward(mk(gv, {K, C}, F64));
    Ref want = ref::zeros({N, C});
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < C; ++c) want.v[size_t(idx[size_t(k)] * C + c)] += gv[size_t(k * C + c)];
    EXPECT_TRUE(close(x.grad(), want, kGradTol)) << "index_select dim 0";
  }
}

TEST_F(LargeBackward, SumAndBroadcast) {
  std::mt19937 rng(606);
  const int64_t N = 300, C = 257;
  std::vector<double> xv = rnd(N * C, rng), gv = rnd(C, rng);
  {
    Tensor x = leaf(xv, {N, C});
    ops::sum(x, {0}).backward(mk(gv, {C}, F64));
    Ref want = fast::broadcast_to(R(gv, {C}), {N, C});
    EXPECT_TRUE(close(x.grad(), want, Tol{0, 0})) << "sum dim 0";
  }
  {
    Tensor x = leaf(xv, {N, C});
    ops::mul(ops::sum(x), 3.0).backward();
    EXPECT_TRUE(close(x.grad(), ref::full({N, C}, 3.0), Tol{0, 0})) << "sum all";
  }
  // Broadcast operands: their gradients are reductions of dy (row vector: over the leading dim,
  // column vector: over the last dim).
  std::vector<double> av = rnd(N * C, rng), rv = rnd(C, rng), cv = rnd(N, rng), dyv = rnd(N * C, rng);
  Tensor a = leaf(av, {N, C}), row = leaf(rv, {C}), col = leaf(cv, {N, 1});
  ops::mul(ops::add(a, row), col).backward(mk(dyv, {N, C}, F64));
  Ref da = ref::zeros({N, C}), drow = ref::zeros({C}), dcol = ref::zeros({N, 1});
  for (int64_t r = 0; r < N; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const size_t k = size_t(r * C + c);
      da.v[k] = dyv[k] * cv[size_t(r)];
      drow.v[size_t(c)] += dyv[k] * cv[size_t(r)];
      dcol.v[size_t(r)] += dyv[k] * (av[k] + rv[size_t(c)]);
    }
  EXPECT_TRUE(close(a.grad(), da, kGradTol)) << "(a + row) * col: da";
  EXPECT_TRUE(close(row.grad(), drow, kGradTol)) << "(a + row) * col: drow";
  EXPECT_TRUE(close(col.grad(), dcol, kGradTol)) << "(a + row) * col: dcol";
}

TEST_F(LargeBackward, Gelu) {
  std::mt19937 rng(707);
  const Dims s{64, 40, 33};
  std::vector<double> xv = rnd(count_of(s), rng, F64, 0.1, 3.0), gv = rnd(count_of(s), rng);
  Tensor x = leaf(xv, s);
  ops::gelu(x).backward(mk(gv, s, F64));
  Ref want = R(xv, s);
  for (size_t i = 0; i < xv.size(); ++i) {
    const double v = xv[i];
    const double d = 0.5 * (1.0 + std::erf(v / std::sqrt(2.0))) + v * std::exp(-0.5 * v * v) / 2.50662827463100050242;
    want.v[i] = gv[i] * d;
  }
  EXPECT_TRUE(close(x.grad(), want, kGradTol)) << "gelu erf";
}

// ============================================================================================
// Thread-count invariance: bitwise identical for 1, 2 and 3 threads
// ============================================================================================

// The fused CPU attention (blocks of 64 queries, probabilities recomputed in the backward) against
// the composed path, which keeps the probabilities (forced here by an all-zero additive bias; its
// gradients are checked against central differences in test_op_cases.cpp): outputs and the
// gradients of q, k and v, over three query blocks (the last one partial), with causal and padding
// masks, with fewer keys than queries, and through the packed q/k/v entry.
struct AttentionRun { Tensor out, dq, dk, dv; };
AttentionRun attention_run(const std::vector<double>& qv, const std::vector<double>& kv, const std::vector<double>& vv,
                           const std::vector<double>& gv, const Dims& qs, const Dims& ks, const Dims& vs,
                           ops::AttentionOptions opt, bool composed, DType dt = F64) {
  Tensor q = mk(qv, qs, dt).set_requires_grad(true), k = mk(kv, ks, dt).set_requires_grad(true),
         v = mk(vv, vs, dt).set_requires_grad(true);
  if (composed) opt.bias = Tensor::zeros({1, 1, qs[2], ks[2]}, dt);
  Tensor o = ops::scaled_dot_product_attention(q, k, v, opt);
  o.backward(mk(gv, {qs[0], qs[1], qs[2], vs[3]}, dt));
  return {o.contiguous(), q.grad(), k.grad(), v.grad()};
}

::testing::AssertionResult all_close(const Tensor& a, const Tensor& b, double tol) {
  std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  if (x.size() != y.size()) return ::testing::AssertionFailure() << "sizes differ";
  for (size_t i = 0; i < x.size(); ++i)
    if (!(std::fabs(x[i] - y[i]) <= tol * (1 + std::fabs(y[i]))))
      return ::testing::AssertionFailure() << "element " << i << ": " << x[i] << " vs " << y[i];
  return ::testing::AssertionSuccess();
}

TEST_F(LargeBackward, FusedAttentionMatchesComposed) {
  std::mt19937 rng(77);
  struct Case { Dims q, k, v; bool causal, padding; };
  for (const Case& c : {Case{{2, 3, 150, 8}, {2, 3, 150, 8}, {2, 3, 150, 5}, true, true},
                        Case{{1, 2, 130, 4}, {1, 2, 7, 4}, {1, 2, 7, 6}, false, true},
                        Case{{3, 1, 65, 16}, {3, 1, 65, 16}, {3, 1, 65, 16}, true, false},
                        // several query blocks (two of 150; three of at most 16 against 5000 keys)
                        Case{{1, 2, 300, 4}, {1, 2, 300, 4}, {1, 2, 300, 3}, true, true},
                        Case{{1, 1, 40, 4}, {1, 1, 5000, 4}, {1, 1, 5000, 2}, false, true}}) {
    auto qv = rnd(count_of(c.q), rng, F64, 0.1, 2.0), kv = rnd(count_of(c.k), rng, F64, 0.1, 2.0),
         vv = rnd(count_of(c.v), rng), gv = rnd(c.q[0] * c.q[1] * c.q[2] * c.v[3], rng);
    ops::AttentionOptions opt;
    opt.causal = c.causal;
    if (c.padding) {
      std::vector<bool> pad(size_t(c.k[0] * c.k[2]), false);
      for (size_t j = 2; j < pad.size(); j += 5) pad[j] = true;
      opt.key_padding_mask = Tensor::from(pad, {c.k[0], c.k[2]}, DType::boolean);
    }
    AttentionRun fused = attention_run(qv, kv, vv, gv, c.q, c.k, c.v, opt, false);
    AttentionRun composed = attention_run(qv, kv, vv, gv, c.q, c.k, c.v, opt, true);
    const std::string tag = ::testing::PrintToString(c.q) + " x " + ::testing::PrintToString(c.k);
    EXPECT_TRUE(all_close(fused.out, composed.out, 1e-12)) << "out " << tag;
    EXPECT_TRUE(all_close(fused.dq, composed.dq, 1e-11)) << "dq " << tag;
    EXPECT_TRUE(all_close(fused.dk, composed.dk, 1e-11)) << "dk " << tag;
    EXPECT_TRUE(all_close(fused.dv, composed.dv, 1e-11)) << "dv " << tag;
  }
  // The packed entry gives the same output and gradients as the three slices.
  const Dims s{2, 70, 3, 4, 8};
  auto xv = rnd(count_of(s), rng, F64, 0.1, 2.0), gv = rnd(2 * 70 * 4 * 8, rng);
  ops::AttentionOptions opt;
  opt.causal = true;
  Tensor a = mk(xv, s, F64).set_requires_grad(true), b = mk(xv, s, F64).set_requires_grad(true);
  Tensor packed = ops::self_attention_packed(a, opt);
  packed.backward(mk(gv, {2, 70, 4, 8}, F64));
  Tensor t = b.permute({2, 0, 3, 1, 4});
  Tensor sliced = ops::scaled_dot_product_attention(t.select(0, 0), t.select(0, 1), t.select(0, 2), opt);
  sliced.permute({0, 2, 1, 3}).backward(mk(gv, {2, 70, 4, 8}, F64));
  EXPECT_TRUE(all_close(packed, sliced.permute({0, 2, 1, 3}).contiguous(), 1e-13));
  EXPECT_TRUE(all_close(a.grad(), b.grad(), 1e-13));
}

TEST(LargeThreads, FusedAttention) {
  std::mt19937 rng(78);
  const Dims s{2, 3, 300, 16};  // two query blocks per (batch, head)
  auto qv = rnd(count_of(s), rng, DType::f32), kv = rnd(count_of(s), rng, DType::f32),
       vv = rnd(count_of(s), rng, DType::f32), gv = rnd(count_of(s), rng, DType::f32);
  ops::AttentionOptions opt;
  opt.causal = true;
  auto run = [&](int threads) {
    return with_threads(threads, [&] { return attention_run(qv, kv, vv, gv, s, s, s, opt, false, DType::f32); });
  };
  AttentionRun r1 = run(1);
  for (int t : kThreadCounts) {
    AttentionRun o = run(t);
    EXPECT_TRUE(bitwise_equal(o.out, r1.out)) << t << " threads";
    EXPECT_TRUE(bitwise_equal(o.dq, r1.dq)) << t << " threads";
    EXPECT_TRUE(bitwise_equal(o.dk, r1.dk)) << t << " threads";
    EXPECT_TRUE(bitwise_equal(o.dv, r1.dv)) << t << " threads";
  }
}

// linear forward and backward at a transformer's shapes: the weight gradient is a GEMM with a
// long inner dimension (2050 rows of tokens), which a GEMM library may split over threads. oneDNN's
// sgemm does not (bitwise the same for any thread count); OpenBLAS 0.3.21 does (about two thirds of the
// weight gradient's elements differ in the last bit between 1 and 2 threads), and on some CPUs (seen
// on an AMD EPYC here, 2026-12-06) its partition of y and dx too, so with LOOM_CPU_GEMM=openblas the
// GEMM outputs (and the bias gradient behind GELU) are only required to be close.
TEST(LargeThreads, LinearForwardAndBackward) {
  const bool split_k = std::string(kernels::cpu::sgemm_library()) == "openblas";
  std::mt19937 rng(4242);
  const Dims xs{2050, 96}, ws{160, 96};
  auto xv = rnd(count_of(xs), rng, DType::f32, -1.0, 1.0), wv = rnd(count_of(ws), rng, DType::f32, -1.0, 1.0),
       bv = rnd(160, rng, DType::f32), gv = rnd(2050 * 160, rng, DType::f32, -1.0, 1.0);
  struct Out { Tensor y, dx, dw, db; };
  auto run = [&](int threads) {
    return with_threads(threads, [&] {
      Tensor x = mk(xv, xs, DType::f32).set_requires_grad(true), w = mk(wv, ws, DType::f32).set_requires_grad(true),
             b = mk(bv, {160}, DType::f32).set_requires_grad(true);
      Tensor y = ops::linear(x, w, b, ops::Activation::gelu);
      y.backward(mk(gv, {2050, 160}, DType::f32));
      return Out{y.detach(), x.grad(), w.grad(), b.grad()};
    });
  };
  Out r1 = run(1);
  for (int t : kThreadCounts) {
    Out o = run(t);
    if (split_k) {
      EXPECT_TRUE(all_close(o.y, r1.y, 1e-5)) << "y, " << t << " threads";
      EXPECT_TRUE(all_close(o.dx, r1.dx, 1e-5)) << "dx, " << t << " threads";
      EXPECT_TRUE(all_close(o.dw, r1.dw, 1e-5)) << "dweight, " << t << " threads";
      // the bias gradient passes through GELU' of the GEMM's pre-activation
      EXPECT_TRUE(all_close(o.db, r1.db, 1e-5)) << "dbias, " << t << " threads";
    } else {
      EXPECT_TRUE(bitwise_equal(o.y, r1.y)) << "y, " << t << " threads";
      EXPECT_TRUE(bitwise_equal(o.dx, r1.dx)) << "dx, " << t << " threads";
      EXPECT_TRUE(bitwise_equal(o.dw, r1.dw)) << "dweight, " << t << " threads";
      EXPECT_TRUE(bitwise_equal(o.db, r1.db)) << "dbias, " << t << " threads";
    }
  }
  // And right, not merely reproducible.
  EXPECT_TRUE(close(r1.y, ref::linear(R(xv, xs), R(wv, ws), R(bv, {160}), ref::Act::gelu), tol_of(DType::f32)));
}

TEST(LargeThreads, RandAndRandn) {
  for (DType dt : {DType::f32, DType::f64}) {
    for (bool normal : {false, true}) {
      const char* what = normal ? "randn" : "rand";
      auto draw = [&](int threads) {
        return with_threads(threads, [&] {
          Generator g(987654321);
          (void)ops::rand({5}, g, dt);  // move the offset off zero
          Tensor a = normal ? ops::randn({100003}, g, dt) : ops::rand({100003}, g, dt);
          Tensor b = normal ? ops::randn({317, 331}, g, dt) : ops::rand({317, 331}, g, dt);
          EXPECT_EQ(g.offset(), 8u + 100004u + 104928u);
          return std::make_pair(a, b);
        });
      };
      auto ref1 = draw(1);
      for (int t : kThreadCounts) {
        auto got = draw(t);
        EXPECT_TRUE(bitwise_equal(got.first, ref1.first)) << what << " " << dtype_name(dt) << " [100003], " << t << " threads";
        EXPECT_TRUE(bitwise_equal(got.second, ref1.second)) << what << " " << dtype_name(dt) << " [317,331], " << t << " threads";
      }
      // Element i uses counter offset + i: windows drawn alone (serially) match the big parallel draw.
      Tensor full = with_threads(2, [&] {
        Generator g(55);
        return normal ? ops::randn({100003}, g, dt) : ops::rand({100003}, g, dt);
      });
      for (int64_t k : {int64_t(0), int64_t(8190), int64_t(50001), int64_t(50002), int64_t(99000)}) {
        Generator g(55);
        g.set_state(55, uint64_t(k));
        Tensor win = normal ? ops::randn({1000}, g, dt) : ops::rand({1000}, g, dt);
        EXPECT_TRUE(bitwise_equal(win, full.narrow(0, k, 1000))) << what << " " << dtype_name(dt) << " window at " << k;
      }
      // Sanity of the values themselves.
      std::vector<double> v = full.to_vector<double>();
      double mean = 0, sq = 0;
      for (double x : v) mean += x, sq += x * x;
      mean /= double(v.size());
      sq /= double(v.size());
      if (normal) {
        EXPECT_NEAR(mean, 0.0, 0.02) << what;
        EXPECT_NEAR(sq, 1.0, 0.03) << what;
      } else {
        EXPECT_NEAR(mean, 0.5, 0.01) << what;
        EXPECT_GE(*std::min_element(v.begin(), v.end()), 0.0);
        EXPECT_LT(*std::max_element(v.begin(), v.end()), 1.0);
      }
    }
  }
}

TEST(LargeThreads, Dropout) {
  std::mt19937 rng(808);
  for (DType dt : {DType::f32, DType::f64}) {
    std::vector<double> xv = rnd(400 * 263, rng, dt);
    Tensor x = mk(xv, {400, 263}, dt);
    auto run = [&](int threads) {
      return with_threads(threads, [&] {
        Generator g(2024);
        g.set_state(2024, 12);
        Tensor xl = x.detach().set_requires_grad(true);
        Tensor y = ops::dropout(xl, 0.3, true, g);
        y.backward(Tensor::ones({400, 263}, dt));
        return std::make_pair(y.detach(), xl.grad());
      });
    };
    auto r1 = run(1);
    for (int t : kThreadCounts) {
      auto got = run(t);
      EXPECT_TRUE(bitwise_equal(got.first, r1.first)) << "dropout y " << dtype_name(dt) << ", " << t << " threads";
      EXPECT_TRUE(bitwise_equal(got.second, r1.second)) << "dropout dx " << dtype_name(dt) << ", " << t << " threads";
    }
    // Kept elements are x / 0.7, the rest zero, about 30% dropped; the gradient matches the mask.
    std::vector<double> y = r1.first.to_vector<double>(), dx = r1.second.to_vector<double>();
    int64_t dropped = 0, bad = 0;
    const double scale = round_to(1.0 / 0.7, dt);
    for (size_t i = 0; i < y.size(); ++i) {
      if (y[i] == 0.0) {
        ++dropped;
        bad += dx[i] != 0.0;
      } else {
        bad += std::fabs(y[i] - xv[i] / 0.7) > 1e-6 * std::fabs(xv[i]) + 1e-12;
        bad += std::fabs(dx[i] - scale) > 1e-6;
      }
    }
    EXPECT_EQ(bad, 0) << dtype_name(dt);
    EXPECT_NEAR(double(dropped) / double(y.size()), 0.3, 0.01) << dtype_name(dt);
  }
}

TEST(LargeThreads, LayerNormBackwardAndSums) {
  std::mt19937 rng(909);
  for (DType dt : {DType::f32, DType::f64}) {
    const Dims s{700, 151};  // 105700 elements, 22 row blocks (the last one partial)
    std::vector<double> xv = rnd(count_of(s), rng, dt, 0.1, 3.0), wv = rnd(151, rng, dt), bv = rnd(151, rng, dt),
                        gv = rnd(count_of(s), rng, dt);
    struct Out { Tensor dx, dw, db, sum_all, sum0, amax_all, emb; };
    std::vector<int64_t> ids = rnd_idx(1200, 40, rng);
    std::vector<double> eg = rnd(1200 * 100, rng, dt);
    auto run = [&](int threads) {
      return with_threads(threads, [&] {
        Out o;
        Tensor x = mk(xv, s, dt).set_requires_grad(true), w = mk(wv, {151}, dt).set_requires_grad(true),
               b = mk(bv, {151}, dt).set_requires_grad(true);
        ops::layer_norm(x, w, b).backward(mk(gv, s, dt));
        o.dx = x.grad();
        o.dw = w.grad();
        o.db = b.grad();
        Tensor g = mk(gv, s, dt);
        o.sum_all = ops::sum(g);
        o.sum0 = ops::sum(g, {0});
        o.amax_all = ops::amax(g);
        Tensor ew = Tensor::zeros({40, 100}, dt).set_requires_grad(true);
        ops::embedding(ew, mk_idx(ids, {1200})).backward(mk(eg, {1200, 100}, dt));
        o.emb = ew.grad();
        return o;
      });
    };
    Out r1 = run(1);
    for (int t : kThreadCounts) {
      Out o = run(t);
      const std::string tag = std::string(dtype_name(dt)) + ", " + std::to_string(t) + " threads";
      EXPECT_TRUE(bitwise_equal(o.dw, r1.dw)) << "layer_norm dweight " << tag;
      EXPECT_TRUE(bitwise_equal(o.db, r1.db)) << "layer_norm dbias " << tag;
      EXPECT_TRUE(bitwise_equal(o.dx, r1.dx)) << "layer_norm dx " << tag;
      EXPECT_TRUE(bitwise_equal(o.sum_all, r1.sum_all)) << "sum(all) " << tag;
      EXPECT_TRUE(bitwise_equal(o.sum0, r1.sum0)) << "sum(dim 0) " << tag;
      EXPECT_TRUE(bitwise_equal(o.amax_all, r1.amax_all)) << "amax(all) " << tag;
      EXPECT_TRUE(bitwise_equal(o.emb, r1.emb)) << "embedding dweight " << tag;
    }
    // And the single-thread results are right (not merely reproducible).
    LnGrads want = layer_norm_grads(R(xv, s), R(wv, {151}), R(gv, s), 1e-5);
    const Tol tl = dt == DType::f64 ? Tol{1e-10, 1e-9} : Tol{1e-4, 1e-4};
    EXPECT_TRUE(close(r1.dw, want.dw, tl)) << dtype_name(dt);
    EXPECT_TRUE(close(r1.db, want.db, tl)) << dtype_name(dt);
    EXPECT_TRUE(close(r1.sum_all, fast::sum(R(gv, s)), Tol{tol_of(dt).rtol, 1e-8})) << dtype_name(dt);
  }
}

}  // namespace
