#include "trainers/optimizer.h"
#include <cmath>
#include <map>
#include <set>
#include "core/autograd.h"
#include "core/ops.h"

namespace loom {

std::vector<ParamSetting> parameter_settings(const Module& model, const std::vector<std::string>& towers, const AdamWConfig& c) {
  const auto named = model.named_parameters();
  const std::set<std::string> no_decay = model.no_decay_parameters();
  std::vector<ParamSetting> out(named.size());
  for (size_t i = 0; i < named.size(); ++i) {
    const std::string& name = named[i].first;
    const ParamGroup* g = nullptr;
    for (const ParamGroup& group : c.groups) {
      for (const std::string& p : group.params) g = g ? g : (glob_match(p, name) ? &group : nullptr);
      if (g) break;
    }
    const bool decays = g && g->decay ? *g->decay : !no_decay.count(name);
    out[i].weight_decay = decays ? (g && g->weight_decay ? *g->weight_decay : c.weight_decay) : 0.0;
    out[i].lr_scale = g ? g->lr_scale : 1.0;
  }
  if (c.layer_decay == 1.0) return out;
  for (const std::string& tower : towers) {
    // The block each parameter of the tower sits in (-1: none), and the tower's depth.
    std::vector<int64_t> block(named.size(), -2);  // -2: not this tower's
    int64_t depth = 0;
    const std::string prefix = tower + ".";
    for (size_t i = 0; i < named.size(); ++i) {
      const std::string& n = named[i].first;
      if (n.rfind(prefix, 0) != 0) continue;
      block[i] = -1;
      for (const char* list : {"blocks.", "layers."}) {
        const std::string at = prefix + list;
        if (n.rfind(at, 0) != 0) continue;
        const size_t dot = n.find('.', at.size());
        const std::string idx = n.substr(at.size(), dot == std::string::npos ? std::string::npos : dot - at.size());
        if (!idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos) block[i] = std::stoll(idx);
      }
      depth = std::max(depth, block[i] + 1);
    }
    if (depth == 0) continue;  // no blocks: nothing to decay over
    bool after_blocks = false;
    for (size_t i = 0; i < named.size(); ++i) {
      if (block[i] == -2) continue;
      after_blocks = after_blocks || block[i] >= 0;
      // layer id: 0 before the blocks, i + 1 for block i, depth + 1 after them (scale 1)
      const int64_t id = block[i] >= 0 ? block[i] + 1 : (after_blocks ? depth + 1 : 0);
      out[i].lr_scale *= std::pow(c.layer_decay, double(depth + 1 - id));
    }
  }
  return out;
}

AdamW::AdamW(std::vector<std::pair<std::string, Tensor>> named, AdamWConfig c, std::vector<ParamSetting> settings) : c_(c) {
  LOOM_CHECK(settings.empty() || settings.size() == named.size(), "AdamW: ", settings.size(), " settings for ", named.size(),
             " parameters");
  for (size_t i = 0; i < named.size(); ++i) {
    auto& [name, p] = named[i];
    LOOM_CHECK(p.dtype() == DType::f32 || p.dtype() == DType::f64, "AdamW: parameter ", name, " is ", p.describe(),
               "; master weights must be f32 or f64");
    LOOM_CHECK(p.is_contiguous(), "AdamW: parameter ", name, " is not contiguous");
    LOOM_CHECK(named.empty() || p.device() == named.front().second.device(), "AdamW: parameter ", name, " is on ",
               p.device().str(), ", the first parameter on ", named.front().second.device().str());
    const ParamSetting setting = settings.empty() ? ParamSetting{1.0, p.dim() >= 2 ? c.weight_decay : 0.0} : settings[i];
    slots_.push_back({name, p, Tensor::zeros(p.shape(), p.dtype(), p.device()), Tensor::zeros(p.shape(), p.dtype(), p.device()),
                      setting});
  }
}

std::vector<std::pair<std::string, ParamSetting>> AdamW::settings() const {
  std::vector<std::pair<std::string, ParamSetting>> out;
  for (const Slot& s : slots_) out.emplace_back(s.name, s.setting);
  return out;
}

// One fused update (ops::adamw_step: one kernel call per dtype, a few launches on the GPU) per
// learning-rate scale over every parameter with a gradient, each with its own bias corrections
// from its own step count.
void AdamW::step(double lr) {
  NoGradGuard ng;
  ++step_;
  std::map<double, std::vector<ops::AdamWParam>> update;  // by lr scale (one entry without groups)
  for (Slot& s : slots_) {
    Tensor g = s.param.grad();
    if (!g.defined() || !s.param.requires_grad()) continue;
    ++s.steps;
    // A gradient converted to the parameter's dtype lives in `update` until the kernels have run.
    update[s.setting.lr_scale].push_back({s.param, g.to(s.param.dtype()).contiguous(), s.m, s.v, s.steps, s.setting.weight_decay});
  }
  for (auto& [scale, params] : update) ops::adamw_step(params, lr * scale, c_.beta1, c_.beta2, c_.eps);
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
