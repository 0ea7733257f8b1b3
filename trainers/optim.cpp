#include "trainers/optim.h"
#include <cmath>
#include "core/autograd.h"

namespace loom {

bool exclude_from_weight_decay(const std::string& name, const Tensor& p) {
  if (p.dim() <= 1) return true;
  for (const char* k : {"embedding", "pos_embed", "cls_token"})
    if (name.find(k) != std::string::npos) return true;
  return false;
}

AdamW::AdamW(std::vector<std::pair<std::string, Tensor>> named, AdamWConfig c) : c_(c) {
  for (auto& [name, p] : named) {
    LOOM_CHECK(p.device().is_cpu(), "AdamW: parameter ", name, " is on ", p.device().str(), "; the CPU optimizer needs CPU tensors");
    LOOM_CHECK(p.dtype() == DType::f32 || p.dtype() == DType::f64, "AdamW: parameter ", name, " is ", p.describe(),
               "; master weights must be f32 or f64");
    slots_.push_back({name, p, Tensor::zeros(p.shape(), p.dtype()), Tensor::zeros(p.shape(), p.dtype()),
                      !exclude_from_weight_decay(name, p)});
  }
}

namespace {
template <class T>
void adamw_update(T* p, const T* g, T* m, T* v, int64_t n, double lr, double wd, double b1, double b2, double eps,
                  double bc1, double bc2) {
  const T decay = T(1.0 - lr * wd), tb1 = T(b1), tb2 = T(b2), step = T(lr / bc1), te = T(eps), rbc2 = T(1.0 / std::sqrt(bc2));
#pragma omp parallel for schedule(static) if (n >= 32768)
  for (int64_t i = 0; i < n; ++i) {
    const T gi = g[i];
    m[i] = tb1 * m[i] + (T(1) - tb1) * gi;
    v[i] = tb2 * v[i] + (T(1) - tb2) * gi * gi;
    p[i] = p[i] * decay - step * m[i] / (std::sqrt(v[i]) * rbc2 + te);
  }
}
}  // namespace

void AdamW::step(double lr) {
  NoGradGuard ng;
  ++step_;
  for (Slot& s : slots_) {
    Tensor g = s.param.grad();
    if (!g.defined() || !s.param.requires_grad()) continue;
    ++s.steps;
    const double bc1 = 1.0 - std::pow(c_.beta1, double(s.steps)), bc2 = 1.0 - std::pow(c_.beta2, double(s.steps));
    LOOM_CHECK(s.param.is_contiguous(), "AdamW: parameter ", s.name, " is not contiguous");
    g = g.to(s.param.dtype()).contiguous();
    const double wd = s.decay ? c_.weight_decay : 0.0;
    if (s.param.dtype() == DType::f32)
      adamw_update(s.param.data_ptr<float>(), g.data_ptr<float>(), s.m.data_ptr<float>(), s.v.data_ptr<float>(),
                   s.param.numel(), lr, wd, c_.beta1, c_.beta2, c_.eps, bc1, bc2);
    else
      adamw_update(s.param.data_ptr<double>(), g.data_ptr<double>(), s.m.data_ptr<double>(), s.v.data_ptr<double>(),
                   s.param.numel(), lr, wd, c_.beta1, c_.beta2, c_.eps, bc1, bc2);
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
  double sq = 0;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    for (double v : g.to_vector<double>()) sq += v * v;
  }
  const double norm = std::sqrt(sq);
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
