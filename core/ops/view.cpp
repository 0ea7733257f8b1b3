// View ops: new geometry over the same storage, each with its gradient rule.
#include <numeric>
#include "core/ops/common.h"

namespace loom {
using ops::detail::fail;

namespace {

// Resolves one -1 and checks the element count.
Shape infer_shape(const char* op, const Tensor& t, const Shape& shape) {
  Shape out = shape;
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      if (infer >= 0) fail(op, "only one dim may be -1", {{"x", t}});
      infer = i;
    } else if (out[i] < 0) {
      fail(op, str_cat("negative size in shape ", shape), {{"x", t}});
    } else {
      known *= out[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || t.numel() % known != 0) fail(op, str_cat("cannot infer -1 in shape ", shape), {{"x", t}});
    out[infer] = t.numel() / known;
  }
  if (out.numel() != t.numel()) fail(op, str_cat("shape ", shape, " does not hold ", t.numel(), " elements"), {{"x", t}});
  return out;
}

// Strides for viewing (shape, strides) as `target` without copying, if possible (false otherwise).
bool view_strides(const Shape& shape, const Shape& strides, const Shape& target, Shape& out) {
  out = target;
  if (target.numel() == 0 || shape.size() == 0) { out = contiguous_strides(target); return true; }
  int vd = target.size() - 1;
  int64_t chunk_stride = strides.back(), tensor_numel = 1, view_numel = 1;
  for (int td = shape.size() - 1; td >= 0; --td) {
    tensor_numel *= shape[td];
    // End of a chunk of dims that are contiguous among themselves.
    if (td == 0 || (shape[td - 1] != 1 && strides[td - 1] != tensor_numel * chunk_stride)) {
      while (vd >= 0 && (view_numel < tensor_numel || target[vd] == 1)) {
        out[vd] = view_numel * chunk_stride;
        view_numel *= target[vd];
        --vd;
      }
      if (view_numel != tensor_numel) return false;
      if (td > 0) { chunk_stride = strides[td - 1]; tensor_numel = 1; view_numel = 1; }
    }
  }
  return vd == -1;
}

Tensor record_reshape(const char* name, const Tensor& x, Tensor out) {
  const Shape xs = x.shape();
  return autograd::record(name, {x}, out, [xs](const Tensor& g) { return std::vector<Tensor>{g.reshape(xs)}; });
}

}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  Shape target = infer_shape("view", *this, shape), st;
  if (!view_strides(this->shape(), strides(), target, st))
    fail("view", str_cat("shape ", shape, " is not a view of this layout; use reshape (which copies)"), {{"x", *this}});
  return record_reshape("view", *this, make_view(*this, target, st, offset()));
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape target = infer_shape("reshape", *this, shape), st;
  if (view_strides(this->shape(), strides(), target, st))
    return record_reshape("reshape", *this, make_view(*this, target, st, offset()));
  return contiguous().view(target);
}

Tensor Tensor::flatten(int start, int end) const {
  if (dim() == 0) return reshape({1});
  const int s = ops::detail::wrap_dim("flatten", start, dim()), e = ops::detail::wrap_dim("flatten", end, dim());
  if (s > e) fail("flatten", str_cat("start dim ", start, " is after end dim ", end), {{"x", *this}});
  Shape target;
  for (int d = 0; d < s; ++d) target.push_back(shape()[d]);
  int64_t p = 1;
  for (int d = s; d <= e; ++d) p *= shape()[d];
  target.push_back(p);
  for (int d = e + 1; d < dim(); ++d) target.push_back(shape()[d]);
  return reshape(target);
}

Tensor Tensor::permute(const std::vector<int>& dims) const {
  if (int(dims.size()) != dim()) fail("permute", str_cat("got ", dims.size(), " dims for a ", dim(), "-d tensor"), {{"x", *this}});
  Shape sh, st;
  std::vector<int> inverse(dims.size(), -1);
  for (size_t i = 0; i < dims.size(); ++i) {
    const int d = ops::detail::wrap_dim("permute", dims[i], dim());
    if (inverse[d] != -1) fail("permute", str_cat("dim ", dims[i], " repeats"), {{"x", *this}});
    inverse[d] = int(i);
    sh.push_back(shape()[d]);
    st.push_back(strides()[d]);
  }
  return autograd::record("permute", {*this}, make_view(*this, sh, st, offset()),
                          [inverse](const Tensor& g) { return std::vector<Tensor>{g.permute(inverse)}; });
}

Tensor Tensor::transpose(int a, int b) const {
  std::vector<int> p(dim());
  std::iota(p.begin(), p.end(), 0);
  if (dim() == 0) return *this;
  std::swap(p[ops::detail::wrap_dim("transpose", a, dim())], p[ops::detail::wrap_dim("transpose", b, dim())]);
  return permute(p);
}

Tensor Tensor::slice(int dim_, int64_t start, int64_t end, int64_t step) const {
  const int d = ops::detail::wrap_dim("slice", dim_, dim());
  if (dim() == 0) fail("slice", "cannot slice a 0-d tensor", {{"x", *this}});
  if (step <= 0) fail("slice", str_cat("step must be positive, got ", step), {{"x", *this}});
  const int64_t n = shape()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape sh = shape(), st = strides();
  sh[d] = (end - start + step - 1) / step;
  st[d] = strides()[d] * step;
  const Shape xs = shape();
  return autograd::record("slice", {*this}, make_view(*this, sh, st, offset() + start * strides()[d]),
                          [xs, d, start, end, step](const Tensor& g) {
                            Tensor full = Tensor::zeros(xs, g.dtype(), g.device());
                            full.slice(d, start, end, step).copy_(g);
                            return std::vector<Tensor>{full};
                          });
}

Tensor Tensor::narrow(int dim_, int64_t start, int64_t length) const {
  const int d = ops::detail::wrap_dim("narrow", dim_, dim());
  if (dim() == 0 || start < 0 || length < 0 || start + length > shape()[d])
    fail("narrow", str_cat("range [", start, ", ", start + length, ") is outside dim ", dim_), {{"x", *this}});
  return slice(d, start, start + length);
}

Tensor Tensor::select(int dim_, int64_t index) const {
  const int d = ops::detail::wrap_dim("select", dim_, dim());
  const int64_t n = dim() ? shape()[d] : 0;
  if (index < -n || index >= n) fail("select", str_cat("index ", index, " is out of range for dim ", dim_), {{"x", *this}});
  return narrow(d, index < 0 ? index + n : index, 1).squeeze(d);
}

Tensor Tensor::expand(const Shape& target) const {
  if (target.size() < dim()) fail("expand", str_cat("target ", target, " has fewer dims than the tensor"), {{"x", *this}});
  const int lead = target.size() - dim();
  Shape sh = target, st = target;
  for (int d = 0; d < target.size(); ++d) {
    const int sd = d - lead;
    if (sd < 0) {
      if (target[d] < 0) fail("expand", str_cat("-1 is not allowed for new leading dims in ", target), {{"x", *this}});
      st[d] = 0;
      continue;
    }
    const int64_t have = shape()[sd];
    if (target[d] < -1) fail("expand", str_cat("negative size ", target[d], " in ", target), {{"x", *this}});
    if (target[d] == -1 || target[d] == have) { sh[d] = have; st[d] = strides()[sd]; }
    else if (have == 1) st[d] = 0;
    else fail("expand", str_cat("cannot expand dim ", sd, " of size ", have, " to ", target[d]), {{"x", *this}});
  }
  const Shape xs = shape();
  return autograd::record("expand", {*this}, make_view(*this, sh, st, offset()),
                          [xs](const Tensor& g) { return std::vector<Tensor>{ops::sum_to(g, xs)}; });
}

Tensor Tensor::squeeze(int dim_) const {
  if (dim() == 0) return *this;
  const int d = ops::detail::wrap_dim("squeeze", dim_, dim());
  if (shape()[d] != 1) return *this;  // as PyTorch: squeezing a non-1 dim is a no-op
  Shape sh = shape(), st = strides();
  sh.erase(d);
  st.erase(d);
  return record_reshape("squeeze", *this, make_view(*this, sh, st, offset()));
}

Tensor Tensor::unsqueeze(int dim_) const {
  const int d = ops::detail::wrap_dim("unsqueeze", dim_, dim() + 1);
  Shape sh = shape(), st = strides();
  const int64_t s = d < dim() ? strides()[d] * shape()[d] : 1;
  sh.insert(d, 1);
  st.insert(d, s);
  return record_reshape("unsqueeze", *this, make_view(*this, sh, st, offset()));
}

}  // namespace loom
