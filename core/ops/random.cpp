// Random tensors and dropout from the Philox stream of a Generator.
#include "core/ops/common.h"

namespace loom::ops {
using namespace detail;

namespace {
void check_float_dtype(const char* op, DType t) {
  if (!is_floating(t)) throw OpError(str_cat(op, ": dtype must be floating, got ", dtype_name(t)));
}
}  // namespace

Tensor rand(const Shape& shape, Generator& gen, DType dtype, Device device) {
  LOOM_OP_SCOPE("rand");
  check_float_dtype("rand", dtype);
  Tensor out = Tensor::empty(shape, dtype, device);
  LOOM_KERNEL(out.device(), uniform, out.view_desc(), gen.seed(), gen.reserve(uint64_t(out.numel())));
  return out;
}

Tensor randn(const Shape& shape, Generator& gen, DType dtype, Device device) {
  LOOM_OP_SCOPE("randn");
  check_float_dtype("randn", dtype);
  Tensor out = Tensor::empty(shape, dtype, device);
  LOOM_KERNEL(out.device(), normal, out.view_desc(), gen.seed(), gen.reserve(uint64_t(out.numel())));
  return out;
}

Tensor randperm(int64_t n, Generator& gen) {
  if (n < 0) throw OpError(str_cat("randperm: n must be >= 0, got ", n));
  // Ranks of uniform noise: a uniform permutation, reproducible from (seed, offset).
  return argsort(rand({n}, gen, DType::f64));
}

Tensor dropout(const Tensor& x, double p, bool train, Generator& gen) {
  LOOM_OP_SCOPE("dropout");
  check_float_operands("dropout", {{"x", x}});
  if (!(p >= 0.0 && p <= 1.0)) fail("dropout", str_cat("p must be in [0, 1], got ", p), {{"x", x}});
  if (!train || p == 0.0) return x;
  if (p == 1.0) return mul(x, 0.0);
  Tensor xc = x.detach().contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor keep = Tensor::empty(x.shape(), DType::u8, x.device());
  LOOM_KERNEL(y.device(), dropout, xc.view_desc(), p, gen.seed(), gen.reserve(uint64_t(x.numel())), y.view_desc(), keep.view_desc());
  const double scale = 1.0 / (1.0 - p);
  return autograd::record("dropout", {x}, y, [keep, scale](const Tensor& g) {
    return std::vector<Tensor>{mul(mul(g, keep.to(g.dtype())), scale)};
  });
}

}  // namespace loom::ops
