#include "trainers/optim.h"
#include <cmath>
#include "core/autograd.h"
#include "core/ops.h"

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

// One fused update (ops::adamw_step: one kernel call per dtype, a few launches on the GPU) over every
// parameter with a gradient, each with its own bias corrections from its own step count.
void AdamW::step(double lr) {
  NoGradGuard ng;
  ++step_;
  std::vector<ops::AdamWParam> update;
  update.reserve(slots_.size());
  for (Slot& s : slots_) {
    Tensor g = s.param.grad();
    if (!g.defined() || !s.param.requires_grad()) continue;
    ++s.steps;
    // A gradient converted to the parameter's dtype lives in `update` until the kernels have run.
    update.push_back({s.param, g.to(s.param.dtype()).contiguous(), s.m, s.v, s.steps, s.decay ? c_.weight_decay : 0.0});
  }
  ops::adamw_step(update, lr, c_.beta1, c_.beta2, c_.eps);
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
  const double norm = grad_norm(params);
  scale_grads_to(params, norm, max_norm);
  return norm;
}

double grad_norm(const std::vector<Tensor>& params) {
  Tensor total = grad_norm_squared(params);
  return total.defined() ? std::sqrt(total.item<double>()) : 0.0;
}

Tensor grad_norm_squared(const std::vector<Tensor>& params) {
  NoGradGuard ng;
  // Squares summed in f64 on the gradients' device; nothing read back.
  Tensor total;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    Tensor gd = g.to(DType::f64);
    Tensor sq = ops::sum(ops::mul(gd, gd));
    total = total.defined() ? ops::add(total, sq) : sq;
  }
  return total;
}

void scale_grads_to(const std::vector<Tensor>& params, double norm, double max_norm) {
  NoGradGuard ng;
  if (max_norm > 0 && norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (const Tensor& p : params) {
      Tensor g = p.grad();
      if (g.defined()) g.mul_(scale);
    }
  }
}

}  // namespace loom
