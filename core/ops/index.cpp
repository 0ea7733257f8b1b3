// Indexing ops: embedding, cat, stack, gather, index_select, scatter_add.
#include "core/ops/common.h"

namespace loom::ops {
using namespace detail;

namespace {

// The index check of an indexing op (on CUDA deferred: see check_index_range).
void check_range(const char* op, const Tensor& index, int64_t bound, std::initializer_list<Named> operands) {
  check_index_range(op, op, index, bound, operands);
}

// index must have x's shape except along dim.
void check_index_shape(const char* op, const Tensor& x, int dim, const Tensor& index, const char* what) {
  bool ok = index.dim() == x.dim();
  for (int d = 0; ok && d < x.dim(); ++d) ok = d == dim || index.shape()[d] == x.shape()[d];
  if (!ok) fail(op, str_cat(what, " must have x's shape except along dim ", dim), {{"x", x}, {"index", index}});
}

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  LOOM_OP_SCOPE("embedding");
  check_float_operands("embedding", {{"weight", weight}});
  check_defined("embedding", {{"ids", ids}});
  check_device("embedding", {{"weight", weight}, {"ids", ids}});
  check_index_dtype("embedding", {"ids", ids});
  if (weight.dim() != 2) fail("embedding", "weight must be [vocab, dim]", {{"weight", weight}, {"ids", ids}});
  Tensor idc = ids.contiguous();
  check_range("embedding", idc, weight.shape()[0], {{"weight", weight}, {"ids", ids}});
  Tensor w = weight.detach().contiguous();
  Shape os = ids.shape();
  os.push_back(weight.shape()[1]);
  Tensor out = Tensor::empty({idc.numel(), weight.shape()[1]}, weight.dtype(), weight.device());
  LOOM_KERNEL(out.device(), index_select, w.view_desc(), 0, idc.view_desc(), out.view_desc());
  const Shape ws = weight.shape();
  out = autograd::record("embedding", {weight}, out, [idc, ws](const Tensor& g) {
    Tensor dw = Tensor::zeros(ws, g.dtype(), g.device());
    Tensor gc = g.contiguous();
    LOOM_KERNEL(dw.device(), embedding_backward, gc.view_desc(), idc.view_desc(), dw.view_desc());
    return std::vector<Tensor>{dw};
  });
  return out.reshape(os);
}

Tensor cat(const std::vector<Tensor>& xs_in, int dim) {
  LOOM_OP_SCOPE("cat");
  std::vector<Tensor> xs = xs_in;
  autocast_promote(xs);
  if (xs.empty()) throw OpError("cat: needs at least one tensor");
  const Tensor& first = xs[0];
  for (const Tensor& x : xs) {  // any dtype; gradients flow for floating ones
    check_defined("cat", {{"first", first}, {"x", x}});
    check_device("cat", {{"first", first}, {"x", x}});
    check_same_dtype("cat", {{"first", first}, {"x", x}});
  }
  const int d = wrap_dim("cat", dim, first.dim());
  if (first.dim() == 0) throw OpError("cat: zero-dimensional tensors cannot be concatenated");
  Shape os = first.shape();
  os[d] = 0;
  for (const Tensor& x : xs) {
    bool ok = x.dim() == first.dim();
    for (int i = 0; ok && i < x.dim(); ++i) ok = i == d || x.shape()[i] == first.shape()[i];
    if (!ok) fail("cat", str_cat("shapes must match except along dim ", dim), {{"first", first}, {"x", x}});
    os[d] += x.shape()[d];
  }
  Tensor out = Tensor::empty(os, first.dtype(), first.device());
  std::vector<int64_t> sizes;
  int64_t at = 0;
  for (const Tensor& x : xs) {
    LOOM_KERNEL(out.device(), copy, x.view_desc(), out.detach().narrow(d, at, x.shape()[d]).view_desc());
    sizes.push_back(x.shape()[d]);
    at += x.shape()[d];
  }
  return autograd::record("cat", xs, out, [d, sizes](const Tensor& g) {
    std::vector<Tensor> grads;
    int64_t start = 0;
    for (int64_t s : sizes) { grads.push_back(g.narrow(d, start, s)); start += s; }
    return grads;
  });
}

Tensor stack(const std::vector<Tensor>& xs, int dim) {
  LOOM_OP_SCOPE("stack");
  if (xs.empty()) throw OpError("stack: needs at least one tensor");
  const int d = wrap_dim("stack", dim, xs[0].dim() + 1);
  for (const Tensor& x : xs)
    if (!(x.shape() == xs[0].shape())) fail("stack", "all tensors must have the same shape", {{"first", xs[0]}, {"x", x}});
  std::vector<Tensor> parts;
  for (const Tensor& x : xs) parts.push_back(x.unsqueeze(d));
  return cat(parts, d);
}

Tensor gather(const Tensor& x, int dim, const Tensor& index) {
  LOOM_OP_SCOPE("gather");
  check_defined("gather", {{"x", x}, {"index", index}});
  check_device("gather", {{"x", x}, {"index", index}});
  check_index_dtype("gather", {"index", index});
  const int d = wrap_dim("gather", dim, x.dim());
  check_index_shape("gather", x, d, index, "index");
  Tensor xc = x.detach().contiguous(), ic = index.contiguous();
  check_range("gather", ic, x.dim() ? x.shape()[d] : 1, {{"x", x}, {"index", index}});
  Tensor out = Tensor::empty(index.shape(), x.dtype(), x.device());
  LOOM_KERNEL(out.device(), gather, xc.view_desc(), d, ic.view_desc(), out.view_desc());
  if (!is_floating(x.dtype())) return out;
  const Shape xs = x.shape();
  return autograd::record("gather", {x}, out, [xs, d, ic](const Tensor& g) {
    Tensor dx = Tensor::zeros(xs, g.dtype(), g.device());
    Tensor gc = g.contiguous();
    LOOM_KERNEL(dx.device(), scatter_add, dx.view_desc(), d, ic.view_desc(), gc.view_desc());
    return std::vector<Tensor>{dx};
  });
}

Tensor index_select(const Tensor& x, int dim, const Tensor& index) {
  LOOM_OP_SCOPE("index_select");
  check_defined("index_select", {{"x", x}, {"index", index}});
  check_device("index_select", {{"x", x}, {"index", index}});
  check_index_dtype("index_select", {"index", index});
  if (index.dim() != 1) fail("index_select", "index must be 1-D", {{"x", x}, {"index", index}});
  if (x.dim() == 0) fail("index_select", "x must have at least 1 dim", {{"x", x}, {"index", index}});
  const int d = wrap_dim("index_select", dim, x.dim());
  Tensor xc = x.detach().contiguous(), ic = index.contiguous();
  check_range("index_select", ic, x.shape()[d], {{"x", x}, {"index", index}});
  Shape os = x.shape();
  os[d] = index.numel();
  Tensor out = Tensor::empty(os, x.dtype(), x.device());
  LOOM_KERNEL(out.device(), index_select, xc.view_desc(), d, ic.view_desc(), out.view_desc());
  if (!is_floating(x.dtype())) return out;
  const Shape xs = x.shape();
  return autograd::record("index_select", {x}, out, [xs, d, ic, os](const Tensor& g) {
    // scatter_add with the 1-D index broadcast along dim's neighbours
    Shape view_shape;
    for (int i = 0; i < os.size(); ++i) view_shape.push_back(i == d ? os[i] : 1);
    Tensor full_index = ic.reshape(view_shape).expand(os).contiguous();
    Tensor dx = Tensor::zeros(xs, g.dtype(), g.device());
    Tensor gc = g.contiguous();
    LOOM_KERNEL(dx.device(), scatter_add, dx.view_desc(), d, full_index.view_desc(), gc.view_desc());
    return std::vector<Tensor>{dx};
  });
}

Tensor scatter_add(const Tensor& x, int dim, const Tensor& index, const Tensor& src) {
  LOOM_OP_SCOPE("scatter_add");
  check_float_operands("scatter_add", {{"x", x}, {"src", src}});
  check_defined("scatter_add", {{"index", index}});
  check_device("scatter_add", {{"x", x}, {"index", index}});
  check_index_dtype("scatter_add", {"index", index});
  const int d = wrap_dim("scatter_add", dim, x.dim());
  if (!(index.shape() == src.shape())) fail("scatter_add", "index and src must have the same shape", {{"index", index}, {"src", src}});
  check_index_shape("scatter_add", x, d, index, "index");
  Tensor ic = index.contiguous();
  check_range("scatter_add", ic, x.dim() ? x.shape()[d] : 1, {{"x", x}, {"index", index}});
  Tensor out = x.detach().clone();
  Tensor sc = src.detach().contiguous();
  LOOM_KERNEL(out.device(), scatter_add, out.view_desc(), d, ic.view_desc(), sc.view_desc());
  return autograd::record("scatter_add", {x, src}, out, [d, ic](const Tensor& g) {
    return std::vector<Tensor>{g, gather(g, d, ic)};
  });
}

}  // namespace loom::ops
