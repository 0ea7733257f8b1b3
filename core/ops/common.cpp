#include "core/ops/common.h"
#include <algorithm>
#include <cstdlib>

namespace loom::ops::detail {

std::string describe_operands(std::initializer_list<Named> operands) {
  std::string s;
  for (const Named& n : operands) {
    if (!s.empty()) s += ", ";
    s += n.name;
    s += ": ";
    s += n.t.defined() ? n.t.describe() : "undefined";
  }
  return s;
}

#ifdef LOOM_WITH_CUDA
bool cuda_sync_each_kernel() {
  static const bool on = [] {
    const char* v = std::getenv("LOOM_CUDA_SYNC");
    return v != nullptr && std::string(v) != "0";
  }();
  return on;
}

void cuda_sync_after(const char* kernel) {
  try {
    kernels::cuda::device_synchronize();
  } catch (const std::exception& e) {
    cuda_kernel_failed(kernel, e);
  }
}

void cuda_kernel_failed(const char* kernel, const std::exception& e) {
  const char* op = profiler::detail::t_current_op;
  throw Error(str_cat(op ? op : "(no op)", ": CUDA kernel ", kernel, " failed: ", e.what(),
                      cuda_sync_each_kernel() ? "" : " (LOOM_CUDA_SYNC=1 synchronises after every kernel to find the op that faulted)"));
}
#endif

void fail(const char* op, const std::string& what, std::initializer_list<Named> operands) {
  std::string msg = std::string(op) + ": " + what;
  if (operands.size()) msg += " (" + describe_operands(operands) + ")";
  throw OpError(msg);
}

void check_defined(const char* op, std::initializer_list<Named> operands) {
  for (const Named& n : operands)
    if (!n.t.defined()) fail(op, std::string("operand '") + n.name + "' is an undefined tensor", operands);
}

void check_floating(const char* op, std::initializer_list<Named> operands) {
  for (const Named& n : operands)
    if (!is_floating(n.t.dtype()))
      fail(op, std::string("operand '") + n.name + "' must be a floating dtype (f32, f64, bf16, f16)", operands);
}

void check_same_dtype(const char* op, std::initializer_list<Named> operands) {
  const Tensor* first = nullptr;
  for (const Named& n : operands) {
    if (!first) first = &n.t;
    else if (n.t.dtype() != first->dtype()) fail(op, "operands must have the same dtype", operands);
  }
}

void check_device(const char* op, std::initializer_list<Named> operands) {
  const Tensor* first = nullptr;
  for (const Named& n : operands) {
    if (!first) first = &n.t;
    else if (!(n.t.device() == first->device())) fail(op, "operands must be on the same device", operands);
  }
}

void check_index_dtype(const char* op, Named index) {
  if (index.t.dtype() != DType::i64 && index.t.dtype() != DType::i32)
    fail(op, std::string("'") + index.name + "' must be i64 or i32", {index});
}

void check_float_operands(const char* op, std::initializer_list<Named> operands) {
  check_defined(op, operands);
  check_device(op, operands);
  check_floating(op, operands);
  check_same_dtype(op, operands);
}

void check_index_range(const char* op, const char* what, const Tensor& index, int64_t bound,
                       std::initializer_list<Named> operands, int64_t allowed) {
  try {
#ifdef LOOM_WITH_CUDA
    if (index.device().is_cuda() && !cuda_sync_each_kernel()) {
      (profiler::KernelScope("check_indices_deferred"),
       cuda_kernel("check_indices_deferred",
                   [&] { kernels::cuda::check_indices_deferred(index.view_desc(), bound, what, allowed); }));
      return;
    }
#endif
    LOOM_KERNEL(index.device(), check_indices, index.view_desc(), bound, what, allowed);
  } catch (const std::out_of_range& e) {
    fail(op, e.what(), operands);
  }
}

bool broadcast_shape(const Shape& a, const Shape& b, Shape& out) {
  const int n = std::max(a.size(), b.size());
  out = Shape();
  for (int i = 0; i < n; ++i) {
    const int ia = i - (n - a.size()), ib = i - (n - b.size());
    const int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
    if (da != db && da != 1 && db != 1) return false;
    out.push_back(da == 1 ? db : da);
  }
  return true;
}

int wrap_dim(const char* op, int dim, int ndim) {
  const int n = ndim == 0 ? 1 : ndim;
  if (dim < -n || dim >= n)
    throw OpError(str_cat(op, ": dim ", dim, " is out of range for a tensor with ", ndim, " dims"));
  return dim < 0 ? dim + n : dim;
}

uint32_t dims_mask(const char* op, const std::vector<int>& dims, int ndim) {
  if (dims.empty()) return ndim == 0 ? 0u : (1u << ndim) - 1u;
  uint32_t m = 0;
  for (int d : dims) {
    int w = wrap_dim(op, d, ndim);
    if (ndim == 0) continue;
    if (m >> w & 1u) throw OpError(str_cat(op, ": dim ", d, " appears twice"));
    m |= 1u << w;
  }
  return m;
}

Shape reduced_shape(const Shape& s, uint32_t mask, bool keepdim) {
  Shape out;
  for (int d = 0; d < s.size(); ++d) {
    if (mask >> d & 1u) { if (keepdim) out.push_back(1); }
    else out.push_back(s[d]);
  }
  return out;
}

kernels::View broadcast_view(const Tensor& t, const Shape& shape) {
  kernels::View v = t.view_desc();
  const int lead = shape.size() - t.dim();
  v.ndim = shape.size();
  for (int d = shape.size() - 1; d >= 0; --d) {
    const int sd = d - lead;
    v.shape[d] = shape[d];
    v.strides[d] = (sd >= 0 && t.shape()[sd] == shape[d]) ? t.strides()[sd] : 0;
  }
  return v;
}

}  // namespace loom::ops::detail
