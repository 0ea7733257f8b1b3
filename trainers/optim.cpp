#include "trainers/optim.h"
#include <cmath>
#include "core/autograd.h"
#include "core/ops.h"
#include "kernels/cpu/cpu.h"
#ifdef LOOM_WITH_CUDA
#include "kernels/cuda/cuda.h"
#endif

namespace loom {

bool exclude_from_weight_decay(const std::string& name, const Tensor& p) {
  if (p.dim() <= 1) return true;
  for (const char* k : {"embedding", "pos_embed", "cls_token"})
    if (name.find(k) != std::string::npos) return true;
  return false;
}

AdamW::AdamW(std::vector<std::pair<std::string, Tensor>> named, AdamWConfig c) : c_(c) {
  for (auto& [name, p] : named) {
    LOOM_CHECK(p.dtype() == DType::f32 || p.dtype() == DType::f64, "AdamW: parameter ", name, " is ", p.describe(),
               "; master weights must be f32 or f64");
    LOOM_CHECK(p.is_contiguous(), "AdamW: parameter ", name, " is not contiguous");
    LOOM_CHECK(named.empty() || p.device() == named.front().second.device(), "AdamW: parameter ", name, " is on ",
               p.device().str(), ", the first parameter on ", named.front().second.device().str());
    slots_.push_back({name, p, Tensor::zeros(p.shape(), p.dtype(), p.device()), Tensor::zeros(p.shape(), p.dtype(), p.device()),
                      !exclude_from_weight_decay(name, p)});
  }
}

// One fused update per dtype group: every parameter with a gradient, in a single kernel call
// (a few launches on the GPU), with its own bias corrections from its own step count.
void AdamW::step(double lr) {
  NoGradGuard ng;
  ++step_;
  std::vector<Tensor> keep_alive;  // gradients converted to the parameter dtype live until the kernel has run
  std::vector<kernels::AdamWTensor> groups[2];  // f32, f64
  for (Slot& s : slots_) {
    Tensor g = s.param.grad();
    if (!g.defined() || !s.param.requires_grad()) continue;
    ++s.steps;
    const double bc1 = 1.0 - std::pow(c_.beta1, double(s.steps)), bc2 = 1.0 - std::pow(c_.beta2, double(s.steps));
    g = g.to(s.param.dtype()).contiguous();
    keep_alive.push_back(g);
    const double wd = s.decay ? c_.weight_decay : 0.0;
    groups[s.param.dtype() == DType::f64].push_back(
        {s.param.raw_data(), g.raw_data(), s.m.raw_data(), s.v.raw_data(), s.param.numel(), 1.0 - lr * wd, lr / bc1,
         1.0 / std::sqrt(bc2)});
  }
  if (slots_.empty()) return;
  [[maybe_unused]] const Device device = slots_.front().param.device();
  for (int k = 0; k < 2; ++k) {
    if (groups[k].empty()) continue;
    const DType dtype = k ? DType::f64 : DType::f32;
#ifdef LOOM_WITH_CUDA
    if (device.is_cuda()) {
      kernels::cuda::adamw(dtype, groups[k].data(), int64_t(groups[k].size()), c_.beta1, c_.beta2, c_.eps);
      continue;
    }
#endif
    kernels::cpu::adamw(dtype, groups[k].data(), int64_t(groups[k].size()), c_.beta1, c_.beta2, c_.eps);
  }
}

void AdamW::zero_grad() {
  for (Slot& s : slots_) s.param.zero_grad();
}

TensorMap AdamW::state_dict() const {
  TensorMap m;
  for (const Slot& s : slots_) {
    m[s.name + ".exp_avg"] = s.m;
    m[s.name + ".exp_avg_sq"] = s.v;
    m[s.name + ".step"] = Tensor::scalar(double(s.steps), DType::i64);
  }
  return m;
}

void AdamW::load_state_dict(const TensorMap& state, int64_t steps, const std::string& source) {
  NoGradGuard ng;
  for (Slot& s : slots_) {
    for (auto [suffix, dst] : {std::pair<const char*, Tensor*>{".exp_avg", &s.m}, {".exp_avg_sq", &s.v}}) {
      auto it = state.find(s.name + suffix);
      LOOM_CHECK(it != state.end(), source, ": optimizer state lacks '", s.name, suffix, "'");
      LOOM_CHECK(it->second.shape() == dst->shape(), source, ": '", s.name, suffix, "' is ", it->second.describe(),
                 " but the parameter is ", s.param.describe());
      dst->copy_(it->second);
    }
    auto st = state.find(s.name + ".step");
    LOOM_CHECK(st != state.end() && st->second.numel() == 1, source, ": optimizer state lacks '", s.name, ".step'");
    s.steps = st->second.item<int64_t>();
  }
  step_ = steps;
}

double scheduled_lr(const ScheduleConfig& s, double peak, int64_t step, int64_t total) {
  if (step < s.warmup_steps) return peak * double(step + 1) / double(s.warmup_steps);
  if (s.type == "constant") return peak;
  const double span = double(std::max<int64_t>(1, total - s.warmup_steps));
  const double t = std::min(1.0, double(step - s.warmup_steps) / span);
  const double floor = peak * s.min_lr_ratio;
  if (s.type == "linear") return floor + (peak - floor) * (1.0 - t);
  return floor + (peak - floor) * 0.5 * (1.0 + std::cos(M_PI * t));  // cosine
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard ng;
  // Squares summed on the gradients' device, one value read back (one synchronisation on a GPU).
  Tensor total;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    Tensor gd = g.to(DType::f64);
    Tensor sq = ops::sum(ops::mul(gd, gd));
    total = total.defined() ? ops::add(total, sq) : sq;
  }
  const double norm = total.defined() ? std::sqrt(total.item<double>()) : 0.0;
  if (max_norm > 0 && norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (const Tensor& p : params) {
      Tensor g = p.grad();
      if (g.defined()) g.mul_(scale);
    }
  }
  return norm;
}

}  // namespace loom
