#include "core/tensor.h"
#include <algorithm>
#include <iomanip>
#include <ostream>
#include <sstream>
#include "core/autograd.h"
#include "core/ops.h"
#include "core/ops/common.h"
#include "core/profiler.h"
#include "kernels/cpu/cpu.h"

namespace loom {

// ---- creation ----
Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) LOOM_CHECK(d >= 0, "Tensor::empty: negative dimension in shape ", shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(size_t(shape.numel()) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  LOOM_OP_SCOPE("full");
  Tensor t = empty(shape, dtype, device);
  NoGradGuard g;
  t.fill_(value);
  return t;
}
Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor Tensor::scalar(double value, DType dtype, Device device) { return full(Shape{}, value, dtype, device); }

Tensor Tensor::arange(int64_t n, DType dtype, Device device) {
  Tensor t = empty(Shape{n}, DType::i64);
  int64_t* p = t.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  if (dtype != DType::i64) t = t.to(dtype);
  return t.to(device);
}

// ---- metadata ----
bool Tensor::is_contiguous() const { return view_desc().contiguous(); }

int64_t Tensor::size(int d) const {
  if (dim() == 0) throw OpError(str_cat("size(", d, "): tensor ", describe(), " has no dims"));
  return impl().shape[wrap_dim(d)];
}

int Tensor::wrap_dim(int d) const {
  const int n = dim() == 0 ? 1 : dim();
  if (d < -n || d >= n) throw OpError(str_cat("dim ", d, " is out of range for tensor ", describe()));
  return d < 0 ? d + n : d;
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined";
  std::ostringstream os;
  os << dtype_name(dtype()) << shape();
  if (!device().is_cpu()) os << ' ' << device().str();
  return os.str();
}

kernels::View Tensor::view_desc() const {
  const TensorImpl& t = impl();
  kernels::View v;
  v.data = raw_data();
  v.dtype = t.dtype;
  v.ndim = t.shape.size();
  for (int i = 0; i < v.ndim; ++i) { v.shape[i] = t.shape[i]; v.strides[i] = t.strides[i]; }
  return v;
}

Tensor make_view(const Tensor& base, const Shape& shape, const Shape& strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.impl().storage;
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

void convert_copy(const kernels::View& src, const kernels::View& dst) { kernels::cpu::copy(src, dst); }

// ---- copies ----
Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::clone() const {
  LOOM_OP_SCOPE("clone");
  Tensor out = empty(shape(), dtype(), device());
  {
    NoGradGuard g;
    out.copy_(*this);
  }
  return autograd::record("clone", {*this}, out, [](const Tensor& g) { return std::vector<Tensor>{g}; });
}

Tensor Tensor::to(DType target) const {
  LOOM_OP_SCOPE("to_dtype");
  if (target == dtype()) return *this;
  Tensor out = empty(shape(), target, device());
  {
    NoGradGuard g;
    out.copy_(*this);
  }
  if (!is_floating(target) || !is_floating(dtype())) return out;  // integer results carry no gradient
  const DType src = dtype();
  return autograd::record("to_dtype", {*this}, out, [src](const Tensor& g) { return std::vector<Tensor>{g.to(src)}; });
}

Tensor Tensor::to(Device target) const {
  LOOM_OP_SCOPE("to_device");
  if (target == device()) return *this;
  Tensor out = empty(shape(), dtype(), target);
  {
    NoGradGuard g;
    out.copy_(contiguous());
  }
  const Device from = device();
  return autograd::record("to_device", {*this}, out, [from](const Tensor& g) { return std::vector<Tensor>{g.to(from)}; });
}

// ---- in place ----
namespace {
void check_inplace(const Tensor& t, const char* op) {
  if (t.requires_grad() && autograd::grad_enabled())
    throw OpError(str_cat(op, ": in-place change of ", t.describe(),
                          " which requires grad; do it under NoGradGuard (as optimizers do)"));
}
// An in-place destination must not hold one element at several positions (an expanded view):
// the result would depend on which write lands last.
void check_no_aliasing_dims(const Tensor& t, const char* op) {
  for (int d = 0; d < t.dim(); ++d)
    if (t.strides()[d] == 0 && t.shape()[d] > 1)
      throw OpError(str_cat(op, ": destination ", t.describe(), " is an expanded view (dim ", d, " has stride 0)"));
}
// A source sharing storage with the destination is read from a copy, so overlapping views stay correct.
Tensor unaliased(const Tensor& src, const Tensor& dst) { return src.same_storage(dst) ? src.detach().clone() : src; }
}  // namespace

#ifdef LOOM_WITH_CUDA
namespace {
void raise_index_fault() {
  try {
    kernels::cuda::raise_deferred_index_fault();
  } catch (const std::out_of_range& e) {
    throw OpError(e.what());
  }
}
}  // namespace
#endif

Tensor& Tensor::copy_(const Tensor& src) {
  LOOM_OP_SCOPE("copy_");
  check_inplace(*this, "copy_");
  if (!(ops::broadcast_shapes("copy_", *this, src) == shape()))
    throw OpError(str_cat("copy_: cannot copy ", src.describe(), " into ", describe()));
  check_no_aliasing_dims(*this, "copy_");
  if (src.device() == device()) {  // on one device: strides, broadcasting and dtype conversion in the kernel
    Tensor s = unaliased(src, *this);
    LOOM_KERNEL(device(), copy, ops::detail::broadcast_view(s, shape()), view_desc());
    return *this;
  }
#ifdef LOOM_WITH_CUDA
  // Across devices: a byte copy of a contiguous source of the same dtype and shape, straight into a
  // contiguous destination; anything else is staged on the destination device and converted there.
  using kernels::cuda::CopyKind;
  const CopyKind kind = src.device().is_cpu() ? CopyKind::host_to_device
                        : device().is_cpu()   ? CopyKind::device_to_host : CopyKind::device_to_device;
  Tensor s = src.contiguous();
  const size_t n = size_t(s.numel()) * dtype_size(s.dtype());
  // Host to device on the current stream without waiting for it: from pageable memory the call
  // returns once CUDA has staged the bytes, so the source may go at once (small tensors made on
  // the host in a step, e.g. the causal mask or the loss targets, cost no synchronisation).
  auto copy_bytes = [&](void* dst, const void* from) {
    if (kind == CopyKind::host_to_device) kernels::cuda::memcpy_async(dst, from, n, kind);
    else kernels::cuda::memcpy(dst, from, n, kind);
  };
  if (is_contiguous() && s.dtype() == dtype() && s.shape() == shape()) {
    if (n) copy_bytes(raw_data(), s.raw_data());
    // A read back to the host has waited for the device: an index check that did not wait
    // (check_index_range) reports here what it found, before the host uses any result.
    if (kind == CopyKind::device_to_host) raise_index_fault();
    return *this;
  }
  Tensor staged = empty(s.shape(), s.dtype(), device());
  if (n) copy_bytes(staged.raw_data(), s.raw_data());
  if (kind == CopyKind::device_to_host) raise_index_fault();
  return copy_(staged);
#else
  throw OpError(str_cat("copy_: ", src.describe(), " -> ", describe(), ": this loom was built without CUDA"));
#endif
}

Tensor& Tensor::fill_(double value) {
  LOOM_OP_SCOPE("fill_");
  check_inplace(*this, "fill_");
  LOOM_KERNEL(device(), fill, view_desc(), value);
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  LOOM_OP_SCOPE("add_");
  check_inplace(*this, "add_");
  check_no_aliasing_dims(*this, "add_");
  NoGradGuard g;
  if (!(other.device() == device()))
    throw OpError(str_cat("add_: ", other.describe(), " is not on the device of ", describe()));
  Tensor o = unaliased(alpha == 1.0 ? other : ops::mul(other, alpha), *this);
  if (o.dtype() != dtype()) o = o.to(dtype());
  Shape b = ops::broadcast_shapes("add_", *this, o);
  if (!(b == shape())) throw OpError(str_cat("add_: cannot add ", o.describe(), " into ", describe()));
  LOOM_KERNEL(device(), binary, kernels::Binary::add, view_desc(), ops::detail::broadcast_view(o, shape()), view_desc());
  return *this;
}

Tensor& Tensor::mul_(double value) {
  LOOM_OP_SCOPE("mul_");
  check_inplace(*this, "mul_");
  LOOM_KERNEL(device(), unary, kernels::Unary::mul_scalar, view_desc(), view_desc(), value, 0.0);
  return *this;
}

// ---- autograd ----
Tensor& Tensor::set_requires_grad(bool on) {
  if (on && !is_floating(dtype()))
    throw OpError(str_cat("set_requires_grad: only floating tensors can require grad, got ", describe()));
  if (!is_leaf()) throw OpError("set_requires_grad: only leaves can be marked; use detach() first");
  impl().requires_grad = on;
  return *this;
}

Tensor Tensor::detach() const {
  return make_view(*this, shape(), strides(), offset());
}

void Tensor::backward(const Tensor& grad, bool retain_graph) const { autograd::backward(*this, grad, retain_graph); }

void Tensor::register_grad_hook(GradHook fn) {
  if (!is_leaf() || !requires_grad())
    throw OpError(str_cat("register_grad_hook: ", describe(), " is not a leaf that requires grad"));
  impl().grad_hooks.push_back(std::move(fn));
}

// ---- printing ----
std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "Tensor(undefined)";
  os << "Tensor(" << t.describe();
  if (t.device().is_cpu() && t.numel() <= 64) {
    auto v = t.to_vector<double>();
    os << ", [";
    for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << std::setprecision(6) << v[i];
    os << "]";
  }
  return os << ")";
}

}  // namespace loom
