// Tensor: a shared handle to (storage, offset, shape, strides, dtype) plus autograd state.
// Views share storage; ops that record a gradient rule live in core/ops/ and are declared in core/ops.h.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>
#include "core/device.h"
#include "core/error.h"
#include "core/shape.h"
#include "kernels/common/dtype.h"
#include "kernels/common/view.h"

namespace loom {

using kernels::bf16;
using kernels::DType;
using kernels::dtype_name;
using kernels::dtype_size;
using kernels::f16;
using kernels::is_floating;

namespace autograd { struct Node; }

class Tensor;
using GradHook = std::function<void(const Tensor&)>;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape, strides;
  DType dtype = DType::f32;
  // autograd
  bool requires_grad = false;
  std::shared_ptr<autograd::Node> grad_fn;              // null for leaves
  std::shared_ptr<TensorImpl> grad;                     // accumulated gradient of a leaf
  std::weak_ptr<autograd::Node> grad_accumulator;       // the leaf's sink node, shared by all graphs
  std::vector<GradHook> grad_hooks;                     // fire when the leaf's gradient is final
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- creation ----
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor scalar(double value, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor arange(int64_t n, DType dtype = DType::i64, Device device = Device::cpu());
  // Copies `values` (converted to `dtype`) into a new CPU tensor of `shape`.
  template <class T>
  static Tensor from(const std::vector<T>& values, const Shape& shape, DType dtype = kernels::dtype_of<T>::value);

  // ---- metadata ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int dim() const { return impl().shape.size(); }
  int64_t size(int d) const;  // negative d counts from the end; a 0-d tensor has no sizes
  int64_t numel() const { return impl().shape.numel(); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device; }
  int64_t offset() const { return impl().offset; }
  bool is_contiguous() const;
  bool same_storage(const Tensor& o) const { return impl().storage == o.impl().storage; }
  int wrap_dim(int d) const;  // negative dims count from the end; throws for out of range
  std::string describe() const;  // "f32[2,3]" (plus " cuda:0" off the CPU)
  kernels::View view_desc() const;

  template <class T> T* data_ptr() const {
    check_dtype_for<T>();
    return static_cast<T*>(impl().storage->data) + impl().offset;
  }
  void* raw_data() const { return static_cast<char*>(impl().storage->data) + impl().offset * dtype_size(dtype()); }

  // Values converted to T (any dtype, any layout; copies CPU tensors only).
  template <class T> std::vector<T> to_vector() const;
  template <class T> T item() const;

  // ---- views (share storage; differentiable) ----
  Tensor view(const Shape& shape) const;      // alias of reshape that requires a viewable layout
  Tensor reshape(const Shape& shape) const;   // one dim may be -1; copies only when it must
  Tensor permute(const std::vector<int>& dims) const;
  Tensor transpose(int a, int b) const;
  Tensor narrow(int dim, int64_t start, int64_t length) const;
  Tensor slice(int dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int dim, int64_t index) const;  // narrow + squeeze
  Tensor expand(const Shape& shape) const;    // size-1 dims broadcast with stride 0; -1 keeps a dim
  Tensor squeeze(int dim) const;
  Tensor unsqueeze(int dim) const;
  Tensor flatten(int start = 0, int end = -1) const;

  // ---- copies (differentiable) ----
  Tensor contiguous() const;  // this tensor itself if already contiguous
  Tensor clone() const;
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;

  // ---- in place (only where no gradient is recorded: optimizers, initialisers) ----
  Tensor& copy_(const Tensor& src);   // broadcasts src to this tensor's shape, converts dtype
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  Tensor& add_(const Tensor& other, double alpha = 1.0);
  Tensor& mul_(double value);

  // ---- autograd ----
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& set_requires_grad(bool on = true);
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  const std::shared_ptr<autograd::Node>& grad_fn() const { return impl().grad_fn; }
  Tensor grad() const { return Tensor(impl().grad); }
  void set_grad(const Tensor& g) { impl().grad = g.impl_; }
  void zero_grad() { impl().grad.reset(); }
  Tensor detach() const;  // shares storage, no gradient
  // Computes gradients of this tensor with respect to every leaf that requires grad.
  // A non-scalar tensor needs an explicit output gradient.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;
  // Runs fn(grad) once this leaf's gradient for the current backward is complete.
  void register_grad_hook(GradHook fn);

  TensorImpl& impl() const {
    if (!impl_) throw Error("use of an undefined (empty) Tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  template <class T> void check_dtype_for() const;
  std::shared_ptr<TensorImpl> impl_;
};

// A new tensor over `storage` with the given geometry (no autograd state).
Tensor make_view(const Tensor& base, const Shape& shape, const Shape& strides, int64_t offset);

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- templates ----
template <class T> void Tensor::check_dtype_for() const {
  if constexpr (!std::is_void_v<T>) {
    if (kernels::dtype_of<std::remove_const_t<T>>::value != dtype())
      throw OpError(str_cat("data_ptr: tensor is ", describe(), ", asked for ",
                            dtype_name(kernels::dtype_of<std::remove_const_t<T>>::value)));
  }
}

void convert_copy(const kernels::View& src, const kernels::View& dst);  // strided copy with dtype conversion

template <class T>
Tensor Tensor::from(const std::vector<T>& values, const Shape& shape, DType dtype) {
  LOOM_CHECK(int64_t(values.size()) == shape.numel(), "Tensor::from: ", values.size(),
             " values do not fill shape ", shape);
  Tensor src = empty(shape, kernels::dtype_of<T>::value);
  std::copy(values.begin(), values.end(), src.data_ptr<T>());
  return dtype == src.dtype() ? src : src.to(dtype);
}

template <class T> std::vector<T> Tensor::to_vector() const {
  if (!device().is_cpu()) return detach().to(Device::cpu()).to_vector<T>();  // one copy back (a synchronisation)
  Tensor dst = empty(shape(), kernels::dtype_of<T>::value);
  convert_copy(view_desc(), dst.view_desc());
  const T* p = dst.data_ptr<T>();
  return std::vector<T>(p, p + numel());
}

template <class T> T Tensor::item() const {
  LOOM_CHECK(numel() == 1, "item: tensor ", describe(), " has ", numel(), " elements, not 1");
  return to_vector<T>()[0];
}

}  // namespace loom
