// AdamW with decoupled weight decay (Loshchilov & Hutter), warmup + cosine/linear/constant
// schedules, and global-norm gradient clipping. State is fp32 (f64 for f64 parameters).
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>
#include "core/safetensors.h"
#include "core/tensor.h"
#include "layers/module.h"

namespace loom {

// optim.groups[i]: the parameters whose names match one of `params` (globs; the first group that
// matches a parameter is its group) train with lr × lr_scale and, where they decay, weight_decay.
struct ParamGroup {
  std::vector<std::string> params;
  double lr_scale = 1.0;
  std::optional<double> weight_decay;  // for those that decay; unset: the optimizer's
  std::optional<bool> decay;           // set: overrides what the modules said (Module::NoDecay)
  std::string key;                     // "optim.groups.0", for errors
};

struct AdamWConfig {
  double lr = 1e-3, weight_decay = 0.05, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  std::vector<ParamGroup> groups;
  // BEiT's and MAE fine-tuning's layer-wise lr decay over each tower's L blocks (1: off): block i
  // trains with lr × layer_decay^(L - i), what comes before the blocks (patch and token embeddings,
  // class token, positions) with layer_decay^(L + 1), the rest (final norms, heads, temperatures) with lr.
  double layer_decay = 1.0;
};

// What one parameter trains with.
struct ParamSetting {
  double lr_scale = 1.0, weight_decay = 0.0;
};
// The setting of every parameter of `model` (in named_parameters order): weight decay where the
// module registered it to decay, the groups' overrides, layer decay over the blocks of each child
// named in `towers` ("<tower>.blocks.<i>." or "<tower>.layers.<i>.").
std::vector<ParamSetting> parameter_settings(const Module& model, const std::vector<std::string>& towers, const AdamWConfig& c);

class AdamW {
 public:
  // Without settings (tensors no module registered), the weight decay goes to tensors of 2 or more
  // dimensions (weights), not to biases or gains.
  AdamW(std::vector<std::pair<std::string, Tensor>> named_params, AdamWConfig config,
        std::vector<ParamSetting> settings = {});
  // The settings each parameter trains with, by name.
  std::vector<std::pair<std::string, ParamSetting>> settings() const;
  // Params without a gradient (frozen, unused) are skipped; each parameter counts its own steps for
  // the bias correction, as PyTorch does, so one unfrozen mid-run starts its correction afresh.
  void step(double lr);
  void zero_grad();
  int64_t steps() const { return step_; }  // calls of step()
  // "<name>.exp_avg", "<name>.exp_avg_sq" and "<name>.step" (i64 scalar) for every parameter.
  TensorMap state_dict() const;
  void load_state_dict(const TensorMap& state, int64_t steps, const std::string& source);

 private:
  struct Slot { std::string name; Tensor param, m, v; ParamSetting setting; int64_t steps = 0; };
  std::vector<Slot> slots_;
  AdamWConfig c_;
  int64_t step_ = 0;
};

struct ScheduleConfig {
  std::string type = "cosine";  // cosine | linear | constant
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;    // floor of the decay, as a fraction of the peak
};
// Learning rate for `step` (0-based) of `total`: linear warmup from 0, then the decay.
double scheduled_lr(const ScheduleConfig& s, double peak, int64_t step, int64_t total);

// Scales all gradients so their global L2 norm is at most max_norm; returns the norm before.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
// The global L2 norm of the gradients (f64 sums; params without a gradient skipped).
double grad_norm(const std::vector<Tensor>& params);
// The squared norm as an f64 scalar tensor on the gradients' device (no read-back), or an undefined
// tensor when no parameter has a gradient.
Tensor grad_norm_squared(const std::vector<Tensor>& params);
// clip_grad_norm's scaling, given the norm: gradients times max_norm / (norm + 1e-6) when norm > max_norm.
void scale_grads_to(const std::vector<Tensor>& params, double norm, double max_norm);

}  // namespace loom
