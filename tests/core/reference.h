// An independent reference library for the op-case tests: plain loops in double over row-major
// data. Nothing here calls loom; the tests move data in and out with Tensor::to_vector / Tensor::from.
// Every function takes and returns a Ref (shape + row-major values); negative dims count from the end.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace ref {

using Dims = std::vector<int64_t>;

inline int64_t numel(const Dims& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

struct Ref {
  std::vector<int64_t> shape;
  std::vector<double> v;
  int ndim() const { return int(shape.size()); }
  int64_t numel() const { return ref::numel(shape); }
  // An undefined Ref (no shape, no values) stands for an undefined optional operand.
  bool defined() const { return !(shape.empty() && v.empty()); }
};

inline void check(bool cond, const std::string& what) {
  if (!cond) throw std::logic_error("reference: " + what);
}

inline int wrap(int d, int n) {
  if (d < 0) d += n;
  check(d >= 0 && d < n, "dim out of range");
  return d;
}

inline Ref zeros(const Dims& s) { return Ref{s, std::vector<double>(size_t(numel(s)), 0.0)}; }
inline Ref full(const Dims& s, double x) { return Ref{s, std::vector<double>(size_t(numel(s)), x)}; }
inline Ref scalar(double x) { return Ref{{}, {x}}; }

// ---- indexing helpers ----
inline Dims unravel(int64_t flat, const Dims& s) {
  Dims idx(s.size(), 0);
  for (int i = int(s.size()) - 1; i >= 0; --i) {
    if (s[i] == 0) return idx;
    idx[i] = flat % s[i];
    flat /= s[i];
  }
  return idx;
}
inline int64_t ravel(const Dims& idx, const Dims& s) {
  int64_t f = 0;
  for (size_t i = 0; i < s.size(); ++i) f = f * s[i] + idx[i];
  return f;
}
inline double at(const Ref& r, const Dims& idx) { return r.v[size_t(ravel(idx, r.shape))]; }
inline double& at(Ref& r, const Dims& idx) { return r.v[size_t(ravel(idx, r.shape))]; }

// A dim split as [outer, n, inner]: element j of line (o, i) lives at (o * n + j) * inner + i.
struct Axis {
  int64_t outer = 1, n = 1, inner = 1;
  int64_t pos(int64_t o, int64_t j, int64_t i) const { return (o * n + j) * inner + i; }
};
inline Axis axis_of(const Dims& s, int d) {
  Axis a;
  for (int i = 0; i < d; ++i) a.outer *= s[i];
  a.n = s[d];
  for (size_t i = size_t(d) + 1; i < s.size(); ++i) a.inner *= s[i];
  return a;
}

// ---- broadcasting elementwise ----
inline Dims broadcast_shape(const Dims& a, const Dims& b) {
  size_t n = std::max(a.size(), b.size());
  Dims out(n, 1);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    check(da == db || da == 1 || db == 1, "shapes do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Numpy broadcasting of `a` to `s` (align right; size-1 dims repeat; new leading dims repeat).
inline Ref broadcast_to(const Ref& a, const Dims& s) {
  check(a.shape.size() <= s.size(), "broadcast_to: too many dims");
  size_t lead = s.size() - a.shape.size();
  Ref out = zeros(s);
  Dims src(a.shape.size());
  for (int64_t f = 0; f < out.numel(); ++f) {
    Dims idx = unravel(f, s);
    for (size_t i = 0; i < a.shape.size(); ++i) {
      check(a.shape[i] == 1 || a.shape[i] == s[lead + i], "broadcast_to: bad shape");
      src[i] = a.shape[i] == 1 ? 0 : idx[lead + i];
    }
    out.v[size_t(f)] = at(a, src);
  }
  return out;
}

template <class F> Ref map(const Ref& a, F f) {
  Ref out = a;
  for (double& x : out.v) x = f(x);
  return out;
}
template <class F> Ref zip(const Ref& a, const Ref& b, F f) {
  Dims s = broadcast_shape(a.shape, b.shape);
  Ref A = broadcast_to(a, s), B = broadcast_to(b, s), out = zeros(s);
  for (size_t i = 0; i < out.v.size(); ++i) out.v[i] = f(A.v[i], B.v[i]);
  return out;
}
template <class F> Ref zip3(const Ref& a, const Ref& b, const Ref& c, F f) {
  Dims s = broadcast_shape(broadcast_shape(a.shape, b.shape), c.shape);
  Ref A = broadcast_to(a, s), B = broadcast_to(b, s), C = broadcast_to(c, s), out = zeros(s);
  for (size_t i = 0; i < out.v.size(); ++i) out.v[i] = f(A.v[i], B.v[i], C.v[i]);
  return out;
}

inline Ref add(const Ref& a, const Ref& b) { return zip(a, b, [](double x, double y) { return x + y; }); }
inline Ref sub(const Ref& a, const Ref& b) { return zip(a, b, [](double x, double y) { return x - y; }); }
inline Ref mul(const Ref& a, const Ref& b) { return zip(a, b, [](double x, double y) { return x * y; }); }
inline Ref div(const Ref& a, const Ref& b) { return zip(a, b, [](double x, double y) { return x / y; }); }
inline Ref add(const Ref& a, double s) { return map(a, [s](double x) { return x + s; }); }
inline Ref mul(const Ref& a, double s) { return map(a, [s](double x) { return x * s; }); }

inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
inline double gelu_erf(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
inline double gelu_tanh(double x) {
  const double k = std::sqrt(2.0 / 3.14159265358979323846);
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

// ---- views (as copies) ----
inline Ref permute(const Ref& a, const std::vector<int>& perm) {
  int n = a.ndim();
  check(int(perm.size()) == n, "permute: wrong number of dims");
  Dims s(size_t(n), 0);
  for (int i = 0; i < n; ++i) s[size_t(i)] = a.shape[size_t(wrap(perm[size_t(i)], n))];
  Ref out = zeros(s);
  Dims src(size_t(n), 0);
  for (int64_t f = 0; f < out.numel(); ++f) {
    Dims idx = unravel(f, s);
    for (int i = 0; i < n; ++i) src[size_t(wrap(perm[size_t(i)], n))] = idx[size_t(i)];
    out.v[size_t(f)] = at(a, src);
  }
  return out;
}
inline Ref transpose(const Ref& a, int d0, int d1) {
  int n = a.ndim();
  std::vector<int> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  std::swap(perm[size_t(wrap(d0, n))], perm[size_t(wrap(d1, n))]);
  return permute(a, perm);
}
inline Ref slice(const Ref& a, int d, int64_t start, int64_t end, int64_t step = 1) {
  d = wrap(d, a.ndim());
  Dims s = a.shape;
  s[size_t(d)] = (end - start + step - 1) / step;
  Ref out = zeros(s);
  for (int64_t f = 0; f < out.numel(); ++f) {
    Dims idx = unravel(f, s);
    idx[size_t(d)] = start + idx[size_t(d)] * step;
    out.v[size_t(f)] = at(a, idx);
  }
  return out;
}
inline Ref narrow(const Ref& a, int d, int64_t start, int64_t len) { return slice(a, d, start, start + len, 1); }
inline Ref reshape(const Ref& a, Dims s) {
  int64_t known = 1;
  int neg = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) neg = int(i);
    else known *= s[i];
  }
  if (neg >= 0) s[size_t(neg)] = a.numel() / known;
  check(numel(s) == a.numel(), "reshape: wrong numel");
  return Ref{s, a.v};
}
inline Ref unsqueeze(const Ref& a, int d) {
  if (d < 0) d += a.ndim() + 1;
  Dims s = a.shape;
  s.insert(s.begin() + d, 1);
  return Ref{s, a.v};
}
inline Ref squeeze(const Ref& a, int d) {
  d = wrap(d, a.ndim());
  Dims s = a.shape;
  if (s[size_t(d)] == 1) s.erase(s.begin() + d);
  return Ref{s, a.v};
}
inline Ref select(const Ref& a, int d, int64_t i) {
  d = wrap(d, a.ndim());
  return squeeze(narrow(a, d, i, 1), d);
}
inline Ref flatten(const Ref& a, int start = 0, int end = -1) {
  if (a.ndim() == 0) return Ref{{1}, a.v};
  start = wrap(start, a.ndim());
  end = wrap(end, a.ndim());
  Dims s;
  for (int i = 0; i < start; ++i) s.push_back(a.shape[size_t(i)]);
  int64_t m = 1;
  for (int i = start; i <= end; ++i) m *= a.shape[size_t(i)];
  s.push_back(m);
  for (int i = end + 1; i < a.ndim(); ++i) s.push_back(a.shape[size_t(i)]);
  return Ref{s, a.v};
}
// expand with PyTorch's -1 = keep this dim.
inline Ref expand(const Ref& a, Dims s) {
  size_t lead = s.size() - a.shape.size();
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] == -1) s[i] = a.shape[i - lead];
  return broadcast_to(a, s);
}

// ---- reductions ----
inline std::vector<bool> reduced_mask(int n, const std::vector<int>& dims) {
  std::vector<bool> red(size_t(n), dims.empty());
  for (int d : dims) red[size_t(wrap(d, n))] = true;
  return red;
}
inline Dims reduced_shape(const Dims& s, const std::vector<bool>& red, bool keepdim) {
  Dims out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (!red[i]) out.push_back(s[i]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}
// Folds every element into its output slot: acc = f(acc, x).
template <class F>
Ref reduce(const Ref& a, const std::vector<int>& dims, bool keepdim, double init, F f) {
  std::vector<bool> red = reduced_mask(a.ndim(), dims);
  Dims ks = reduced_shape(a.shape, red, true);
  Ref out = full(ks, init);
  for (int64_t i = 0; i < a.numel(); ++i) {
    Dims idx = unravel(i, a.shape);
    for (size_t d = 0; d < idx.size(); ++d)
      if (red[d]) idx[d] = 0;
    double& acc = at(out, idx);
    acc = f(acc, a.v[size_t(i)]);
  }
  out.shape = reduced_shape(a.shape, red, keepdim);
  return out;
}
inline Ref sum(const Ref& a, const std::vector<int>& dims = {}, bool keepdim = false) {
  return reduce(a, dims, keepdim, 0.0, [](double acc, double x) { return acc + x; });
}
inline Ref mean(const Ref& a, const std::vector<int>& dims = {}, bool keepdim = false) {
  Ref s = sum(a, dims, keepdim);
  double count = double(a.numel()) / double(s.numel());
  return mul(s, 1.0 / count);
}
inline Ref amax(const Ref& a, const std::vector<int>& dims = {}, bool keepdim = false) {
  return reduce(a, dims, keepdim, -std::numeric_limits<double>::infinity(),
                [](double acc, double x) { return std::max(acc, x); });
}
inline Ref logsumexp(const Ref& a, const std::vector<int>& dims, bool keepdim = false) {
  Ref m = amax(a, dims, true);
  Ref e = zip(a, m, [](double x, double mx) { return std::exp(x - mx); });
  Ref s = sum(e, dims, true);
  Ref out = zip(m, s, [](double mx, double sx) { return mx + std::log(sx); });
  out.shape = reduced_shape(a.shape, reduced_mask(a.ndim(), dims), keepdim);
  return out;
}
inline Ref argmax(const Ref& a, int dim, bool keepdim = false) {
  dim = wrap(dim, a.ndim());
  Axis ax = axis_of(a.shape, dim);
  Dims s = a.shape;
  s[size_t(dim)] = 1;
  Ref out = zeros(s);
  for (int64_t o = 0; o < ax.outer; ++o)
    for (int64_t i = 0; i < ax.inner; ++i) {
      int64_t best = 0;
      for (int64_t j = 1; j < ax.n; ++j)
        if (a.v[size_t(ax.pos(o, j, i))] > a.v[size_t(ax.pos(o, best, i))]) best = j;
      out.v[size_t(o * ax.inner + i)] = double(best);
    }
  if (!keepdim) s.erase(s.begin() + dim);
  out.shape = s;
  return out;
}

// ---- matrix products ----
// numpy matmul: 1-D operands get a dim prepended (a) / appended (b) that is removed afterwards.
inline Ref matmul(const Ref& a, const Ref& b) {
  bool a1 = a.ndim() == 1, b1 = b.ndim() == 1;
  check(a.ndim() >= 1 && b.ndim() >= 1, "matmul: 0-d operand");
  Ref A = a1 ? Ref{{1, a.shape[0]}, a.v} : a;
  Ref B = b1 ? Ref{{b.shape[0], 1}, b.v} : b;
  int64_t m = A.shape[A.shape.size() - 2], k = A.shape.back();
  int64_t k2 = B.shape[B.shape.size() - 2], n = B.shape.back();
  check(k == k2, "matmul: inner dims differ");
  Dims ba(A.shape.begin(), A.shape.end() - 2), bb(B.shape.begin(), B.shape.end() - 2);
  Dims batch = broadcast_shape(ba, bb);
  Dims sa = batch, sb = batch, so = batch;
  sa.insert(sa.end(), {m, k});
  sb.insert(sb.end(), {k, n});
  so.insert(so.end(), {m, n});
  Ref AA = broadcast_to(A, sa), BB = broadcast_to(B, sb), out = zeros(so);
  int64_t nb = numel(batch);
  for (int64_t bi = 0; bi < nb; ++bi)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t p = 0; p < k; ++p)
          acc += AA.v[size_t((bi * m + i) * k + p)] * BB.v[size_t((bi * k + p) * n + j)];
        out.v[size_t((bi * m + i) * n + j)] = acc;
      }
  Dims s = batch;
  if (!a1) s.push_back(m);
  if (!b1) s.push_back(n);
  out.shape = s;
  return out;
}

enum class Act { none, gelu, gelu_tanh };
inline double activate(double x, Act act) {
  switch (act) {
    case Act::none: return x;
    case Act::gelu: return gelu_erf(x);
    case Act::gelu_tanh: return gelu_tanh(x);
  }
  return x;
}
// act(x Wᵀ + b); x [..., in], W [out, in], b [out] or undefined.
inline Ref linear(const Ref& x, const Ref& w, const Ref& b, Act act = Act::none) {
  int64_t in = x.shape.back(), outf = w.shape[0];
  check(w.ndim() == 2 && w.shape[1] == in, "linear: in features differ");
  check(!b.defined() || b.shape == Dims{outf}, "linear: bias size");
  int64_t rows = x.numel() / in;
  Dims s = x.shape;
  s.back() = outf;
  Ref out = zeros(s);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < outf; ++o) {
      double acc = b.defined() ? b.v[size_t(o)] : 0.0;
      for (int64_t i = 0; i < in; ++i) acc += x.v[size_t(r * in + i)] * w.v[size_t(o * in + i)];
      out.v[size_t(r * outf + o)] = activate(acc, act);
    }
  return out;
}

// ---- softmax and normalisation ----
inline Ref softmax_impl(const Ref& a, int dim, bool log) {
  dim = wrap(dim, a.ndim());
  Axis ax = axis_of(a.shape, dim);
  Ref out = a;
  for (int64_t o = 0; o < ax.outer; ++o)
    for (int64_t i = 0; i < ax.inner; ++i) {
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < ax.n; ++j) mx = std::max(mx, a.v[size_t(ax.pos(o, j, i))]);
      double s = 0;
      for (int64_t j = 0; j < ax.n; ++j) s += std::exp(a.v[size_t(ax.pos(o, j, i))] - mx);
      for (int64_t j = 0; j < ax.n; ++j) {
        double x = a.v[size_t(ax.pos(o, j, i))];
        out.v[size_t(ax.pos(o, j, i))] = log ? x - mx - std::log(s) : std::exp(x - mx) / s;
      }
    }
  return out;
}
inline Ref softmax(const Ref& a, int dim) { return softmax_impl(a, dim, false); }
inline Ref log_softmax(const Ref& a, int dim) { return softmax_impl(a, dim, true); }

// Over the last dim, biased variance; w and b may be undefined.
inline Ref layer_norm(const Ref& x, const Ref& w, const Ref& b, double eps) {
  int64_t c = x.shape.back(), rows = x.numel() / c;
  check(!w.defined() || w.shape == Dims{c}, "layer_norm: weight size");
  check(!b.defined() || b.shape == Dims{c}, "layer_norm: bias size");
  Ref out = x;
  for (int64_t r = 0; r < rows; ++r) {
    double mu = 0, var = 0;
    for (int64_t j = 0; j < c; ++j) mu += x.v[size_t(r * c + j)];
    mu /= double(c);
    for (int64_t j = 0; j < c; ++j) var += (x.v[size_t(r * c + j)] - mu) * (x.v[size_t(r * c + j)] - mu);
    var /= double(c);
    double inv = 1.0 / std::sqrt(var + eps);
    for (int64_t j = 0; j < c; ++j) {
      double y = (x.v[size_t(r * c + j)] - mu) * inv;
      if (w.defined()) y *= w.v[size_t(j)];
      if (b.defined()) y += b.v[size_t(j)];
      out.v[size_t(r * c + j)] = y;
    }
  }
  return out;
}

// x / max(||x||_2, eps) along dim.
inline Ref l2_normalize(const Ref& x, int dim, double eps) {
  dim = wrap(dim, x.ndim());
  Axis ax = axis_of(x.shape, dim);
  Ref out = x;
  for (int64_t o = 0; o < ax.outer; ++o)
    for (int64_t i = 0; i < ax.inner; ++i) {
      double s = 0;
      for (int64_t j = 0; j < ax.n; ++j) s += x.v[size_t(ax.pos(o, j, i))] * x.v[size_t(ax.pos(o, j, i))];
      double nrm = std::max(std::sqrt(s), eps);
      for (int64_t j = 0; j < ax.n; ++j) out.v[size_t(ax.pos(o, j, i))] = x.v[size_t(ax.pos(o, j, i))] / nrm;
    }
  return out;
}

// ---- losses ----
// logits [..., C], targets [...]; mean over rows whose target != ignore of
// (1-ε)(lse - x_t) + ε(lse - mean_j x_j).
inline Ref cross_entropy(const Ref& logits, const Ref& targets, int64_t ignore = -100, double ls = 0.0) {
  int64_t c = logits.shape.back(), rows = logits.numel() / c;
  check(targets.numel() == rows, "cross_entropy: targets do not match rows");
  double total = 0;
  int64_t count = 0;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t t = int64_t(targets.v[size_t(r)]);
    if (t == ignore) continue;
    check(t >= 0 && t < c, "cross_entropy: target out of range");
    const double* x = logits.v.data() + r * c;
    double mx = *std::max_element(x, x + c), s = 0, mean = 0;
    for (int64_t j = 0; j < c; ++j) s += std::exp(x[j] - mx), mean += x[j];
    mean /= double(c);
    double lse = mx + std::log(s);
    total += (1.0 - ls) * (lse - x[t]) + ls * (lse - mean);
    ++count;
  }
  return scalar(total / double(count));
}
inline Ref mse_loss(const Ref& a, const Ref& b) {
  return mean(zip(a, b, [](double x, double y) { return (x - y) * (x - y); }));
}

// ---- attention ----
// q [B,H,Sq,D], k [B,H,Sk,D], v [B,H,Sk,Dv]; mask bool [B,Sk] (1 = ignored key) or undefined;
// bias broadcastable to [B,H,Sq,Sk] or undefined. Rows with no visible key give zeros.
inline Ref sdpa(const Ref& q, const Ref& k, const Ref& v, bool causal, const Ref& mask, const Ref& bias,
                std::optional<double> scale = std::nullopt) {
  int64_t B = q.shape[0], H = q.shape[1], Sq = q.shape[2], D = q.shape[3];
  int64_t Sk = k.shape[2], Dv = v.shape[3];
  check(q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4, "sdpa: rank");
  check(k.shape[0] == B && k.shape[1] == H && k.shape[3] == D, "sdpa: k shape");
  check(v.shape[0] == B && v.shape[1] == H && v.shape[2] == Sk, "sdpa: v shape");
  check(!mask.defined() || mask.shape == Dims{B, Sk}, "sdpa: mask shape");
  double sc = scale ? *scale : 1.0 / std::sqrt(double(D));
  Ref bb = bias.defined() ? broadcast_to(bias, {B, H, Sq, Sk}) : zeros({B, H, Sq, Sk});
  Ref out = zeros({B, H, Sq, Dv});
  std::vector<double> s(static_cast<size_t>(Sk));
  std::vector<bool> vis(static_cast<size_t>(Sk));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Sq; ++i) {
        double mx = -std::numeric_limits<double>::infinity();
        bool any = false;
        for (int64_t j = 0; j < Sk; ++j) {
          vis[size_t(j)] = !(causal && j > i) && !(mask.defined() && mask.v[size_t(b * Sk + j)] != 0.0);
          double acc = 0;
          for (int64_t d = 0; d < D; ++d) acc += at(q, {b, h, i, d}) * at(k, {b, h, j, d});
          s[size_t(j)] = acc * sc + at(bb, {b, h, i, j});
          if (vis[size_t(j)]) mx = std::max(mx, s[size_t(j)]), any = true;
        }
        if (!any) continue;
        double z = 0;
        for (int64_t j = 0; j < Sk; ++j) {
          s[size_t(j)] = vis[size_t(j)] ? std::exp(s[size_t(j)] - mx) : 0.0;
          z += s[size_t(j)];
        }
        for (int64_t e = 0; e < Dv; ++e) {
          double acc = 0;
          for (int64_t j = 0; j < Sk; ++j) acc += s[size_t(j)] / z * at(v, {b, h, j, e});
          at(out, {b, h, i, e}) = acc;
        }
      }
  return out;
}

// ---- indexing ----
inline Ref embedding(const Ref& w, const Ref& ids) {
  int64_t d = w.shape[1];
  Dims s = ids.shape;
  s.push_back(d);
  Ref out = zeros(s);
  for (double id : ids.v) check(id >= 0 && id < double(w.shape[0]), "embedding: id out of range");
  for (int64_t i = 0; i < ids.numel(); ++i)
    for (int64_t j = 0; j < d; ++j) out.v[size_t(i * d + j)] = w.v[size_t(int64_t(ids.v[size_t(i)]) * d + j)];
  return out;
}
inline Ref cat(const std::vector<Ref>& xs, int dim) {
  dim = wrap(dim, xs[0].ndim());
  Dims s = xs[0].shape;
  s[size_t(dim)] = 0;
  for (const Ref& x : xs) {
    check(x.ndim() == int(s.size()), "cat: rank");
    for (size_t i = 0; i < s.size(); ++i) check(int(i) == dim || x.shape[i] == s[i], "cat: shapes");
    s[size_t(dim)] += x.shape[size_t(dim)];
  }
  Ref out = zeros(s);
  int64_t base = 0;
  for (const Ref& x : xs) {
    for (int64_t f = 0; f < x.numel(); ++f) {
      Dims idx = unravel(f, x.shape);
      idx[size_t(dim)] += base;
      at(out, idx) = x.v[size_t(f)];
    }
    base += x.shape[size_t(dim)];
  }
  return out;
}
inline Ref stack(const std::vector<Ref>& xs, int dim) {
  if (dim < 0) dim += xs[0].ndim() + 1;
  std::vector<Ref> u;
  for (const Ref& x : xs) check(x.shape == xs[0].shape, "stack: shapes");
  for (const Ref& x : xs) u.push_back(unsqueeze(x, dim));
  return cat(u, dim);
}
inline Ref gather(const Ref& x, int dim, const Ref& index) {
  dim = wrap(dim, x.ndim());
  check(index.ndim() == x.ndim(), "gather: rank");
  for (int i = 0; i < x.ndim(); ++i) check(i == dim || index.shape[size_t(i)] == x.shape[size_t(i)], "gather: shape");
  Ref out = zeros(index.shape);
  for (int64_t f = 0; f < index.numel(); ++f) {
    Dims idx = unravel(f, index.shape);
    idx[size_t(dim)] = int64_t(index.v[size_t(f)]);
    check(idx[size_t(dim)] >= 0 && idx[size_t(dim)] < x.shape[size_t(dim)], "gather: index out of range");
    out.v[size_t(f)] = at(x, idx);
  }
  return out;
}
inline Ref index_select(const Ref& x, int dim, const Ref& index) {
  dim = wrap(dim, x.ndim());
  Dims s = x.shape;
  s[size_t(dim)] = index.numel();
  Ref out = zeros(s);
  for (int64_t f = 0; f < out.numel(); ++f) {
    Dims idx = unravel(f, s);
    idx[size_t(dim)] = int64_t(index.v[size_t(idx[size_t(dim)])]);
    check(idx[size_t(dim)] >= 0 && idx[size_t(dim)] < x.shape[size_t(dim)], "index_select: index out of range");
    out.v[size_t(f)] = at(x, idx);
  }
  return out;
}
inline Ref scatter_add(const Ref& x, int dim, const Ref& index, const Ref& src) {
  dim = wrap(dim, x.ndim());
  check(index.shape == src.shape && index.ndim() == x.ndim(), "scatter_add: shapes");
  for (int i = 0; i < x.ndim(); ++i) check(i == dim || index.shape[size_t(i)] == x.shape[size_t(i)], "scatter_add: shape");
  Ref out = x;
  for (int64_t f = 0; f < index.numel(); ++f) {
    Dims idx = unravel(f, index.shape);
    double val = at(src, idx);
    idx[size_t(dim)] = int64_t(index.v[size_t(f)]);
    check(idx[size_t(dim)] >= 0 && idx[size_t(dim)] < x.shape[size_t(dim)], "scatter_add: index out of range");
    at(out, idx) += val;
  }
  return out;
}

// ---- images (MAE order) ----
// out[n, hh * w + ww, (pi * p + pj) * C + c] = x[n, c, hh * p + pi, ww * p + pj]
inline Ref patchify(const Ref& x, int64_t p) {
  check(x.ndim() == 4 && x.shape[2] % p == 0 && x.shape[3] % p == 0, "patchify: shape");
  int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], h = H / p, w = W / p;
  Ref out = zeros({N, h * w, p * p * C});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t xx = 0; xx < W; ++xx)
          at(out, {n, (y / p) * w + xx / p, ((y % p) * p + xx % p) * C + c}) = at(x, {n, c, y, xx});
  return out;
}
inline Ref unpatchify(const Ref& t, int64_t p, int64_t C, int64_t H, int64_t W) {
  check(t.ndim() == 3 && t.shape[1] == (H / p) * (W / p) && t.shape[2] == p * p * C, "unpatchify: shape");
  int64_t N = t.shape[0], w = W / p;
  Ref out = zeros({N, C, H, W});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t xx = 0; xx < W; ++xx)
          at(out, {n, c, y, xx}) = at(t, {n, (y / p) * w + xx / p, ((y % p) * p + xx % p) * C + c});
  return out;
}

// out[n, i * gw + j, (pi * p + pj) * C + c] = x[n, c, i * s + pi, j * s + pj], gh = (H - p) / s + 1
inline Ref extract_patches(const Ref& x, int64_t p, int64_t s) {
  check(x.ndim() == 4 && x.shape[2] >= p && x.shape[3] >= p, "extract_patches: shape");
  int64_t N = x.shape[0], C = x.shape[1], gh = (x.shape[2] - p) / s + 1, gw = (x.shape[3] - p) / s + 1;
  Ref out = zeros({N, gh * gw, p * p * C});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < gh; ++i)
      for (int64_t j = 0; j < gw; ++j)
        for (int64_t pi = 0; pi < p; ++pi)
          for (int64_t pj = 0; pj < p; ++pj)
            for (int64_t c = 0; c < C; ++c)
              at(out, {n, i * gw + j, (pi * p + pj) * C + c}) = at(x, {n, c, i * s + pi, j * s + pj});
  return out;
}

// ---- sorting ----
inline Ref argsort(const Ref& a, int dim, bool descending) {
  dim = wrap(dim, a.ndim());
  Axis ax = axis_of(a.shape, dim);
  Ref out = zeros(a.shape);
  std::vector<int64_t> order(static_cast<size_t>(ax.n));
  for (int64_t o = 0; o < ax.outer; ++o)
    for (int64_t i = 0; i < ax.inner; ++i) {
      std::iota(order.begin(), order.end(), 0);
      auto val = [&](int64_t j) { return a.v[size_t(ax.pos(o, j, i))]; };
      if (descending)
        std::stable_sort(order.begin(), order.end(), [&](int64_t l, int64_t r) { return val(l) > val(r); });
      else
        std::stable_sort(order.begin(), order.end(), [&](int64_t l, int64_t r) { return val(l) < val(r); });
      for (int64_t j = 0; j < ax.n; ++j) out.v[size_t(ax.pos(o, j, i))] = double(order[size_t(j)]);
    }
  return out;
}
// Sorted top-k (largest first when `largest`, else smallest first): {values, indices}.
inline std::pair<Ref, Ref> topk(const Ref& a, int64_t k, int dim, bool largest) {
  dim = wrap(dim, a.ndim());
  Ref order = argsort(a, dim, largest);
  Ref idx = narrow(order, dim, 0, k);
  return {gather(a, dim, idx), idx};
}

}  // namespace ref
