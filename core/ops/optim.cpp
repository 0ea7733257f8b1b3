// Fused AdamW update over many parameters: operand checks, the per-tensor bias-correction terms
// (computed on the host in double), then one kernel call per dtype on the parameters' device.
#include <cmath>
#include "core/ops/common.h"

namespace loom::ops {
using namespace detail;

namespace {

constexpr const char* kOp = "adamw_step";

void check_entry(const AdamWParam& e, size_t k, Device device) {
  const std::initializer_list<Named> all = {
      {"param", e.param}, {"grad", e.grad}, {"exp_avg", e.exp_avg}, {"exp_avg_sq", e.exp_avg_sq}};
  const std::string at = str_cat("params[", k, "].");
  for (const Named& n : all)
    if (!n.t.defined()) fail(kOp, str_cat(at, n.name, " is undefined"), all);
  if (e.param.dtype() != DType::f32 && e.param.dtype() != DType::f64)
    fail(kOp, str_cat(at, "param must be f32 or f64 (master weights)"), all);
  if (e.step < 1) fail(kOp, str_cat(at, "step must be >= 1, got ", e.step), all);
  if (e.param.requires_grad() && autograd::grad_enabled())
    fail(kOp, str_cat(at, "param requires grad; update it under NoGradGuard (as optimizers do)"), all);
  for (const Named& n : all) {
    if (n.t.dtype() != e.param.dtype())
      fail(kOp, str_cat(at, n.name, " is ", dtype_name(n.t.dtype()), ", not the parameter's ", dtype_name(e.param.dtype())), all);
    if (!(n.t.shape() == e.param.shape()))
      fail(kOp, str_cat(at, n.name, " has shape ", n.t.shape(), ", not the parameter's ", e.param.shape()), all);
    if (!(n.t.device() == device))
      fail(kOp, str_cat(at, n.name, " is on ", n.t.device().str(), ", params[0].param on ", device.str()), all);
    if (!n.t.is_contiguous()) fail(kOp, str_cat(at, n.name, " is not contiguous"), all);
  }
  // The kernel reads the gradient while it writes the other three: no two may share memory.
  const Named* parts = all.begin();
  for (size_t a = 0; a < all.size(); ++a)
    for (size_t b = 0; b < a; ++b)
      if (parts[a].t.numel() && parts[a].t.same_storage(parts[b].t))
        fail(kOp, str_cat(at, parts[a].name, " shares storage with ", at, parts[b].name), all);
}

}  // namespace

void adamw_step(const std::vector<AdamWParam>& params, double lr, double beta1, double beta2, double eps) {
  LOOM_OP_SCOPE("adamw_step");
  if (!(beta1 >= 0.0 && beta1 < 1.0)) throw OpError(str_cat(kOp, ": beta1 must be in [0, 1), got ", beta1));
  if (!(beta2 >= 0.0 && beta2 < 1.0)) throw OpError(str_cat(kOp, ": beta2 must be in [0, 1), got ", beta2));
  if (!(eps >= 0.0)) throw OpError(str_cat(kOp, ": eps must be >= 0, got ", eps));
  if (params.empty()) return;
  if (!params.front().param.defined()) fail(kOp, "params[0].param is undefined", {});
  const Device device = params.front().param.device();
  std::vector<kernels::AdamWTensor> groups[2];  // f32, f64
  for (size_t k = 0; k < params.size(); ++k) {
    const AdamWParam& e = params[k];
    check_entry(e, k, device);
    const double bc1 = 1.0 - std::pow(beta1, double(e.step)), bc2 = 1.0 - std::pow(beta2, double(e.step));
    groups[e.param.dtype() == DType::f64].push_back({e.param.raw_data(), e.grad.raw_data(), e.exp_avg.raw_data(),
                                                     e.exp_avg_sq.raw_data(), e.param.numel(), 1.0 - lr * e.weight_decay,
                                                     lr / bc1, 1.0 / std::sqrt(bc2)});
  }
  for (int k = 0; k < 2; ++k) {
    if (groups[k].empty()) continue;
    LOOM_KERNEL(device, adamw, k ? DType::f64 : DType::f32, groups[k].data(), int64_t(groups[k].size()), beta1, beta2, eps);
  }
}

}  // namespace loom::ops
