// Module: registration, dotted names, state dicts, train/eval and freezing.
#include "layers/module.h"

#include <set>
#include <sstream>

namespace loom {

bool glob_match(std::string_view pattern, std::string_view name) {
  // Iterative wildcard matching with backtracking to the last '*'.
  size_t p = 0, n = 0, star = std::string_view::npos, mark = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

void Module::check_name(const std::string& name) const {
  if (name.empty()) throw Error("Module: empty name");
  if (name.find('.') != std::string::npos)
    throw Error(str_cat("Module: name '", name, "' contains '.' (dots separate levels of the tree)"));
  auto taken = [&](const auto& list) {
    for (const auto& [n, _] : list)
      if (n == name) return true;
    return false;
  };
  if (taken(params_) || taken(buffers_) || taken(children_))
    throw Error(str_cat("Module: name '", name, "' is already registered"));
}

Tensor Module::register_parameter(const std::string& name, Tensor value, Decay decay) {
  check_name(name);
  if (!value.defined()) throw Error(str_cat("Module: parameter '", name, "' is undefined"));
  if (!is_floating(value.dtype()))
    throw Error(str_cat("Module: parameter '", name, "' must be floating, got ", value.describe()));
  // A fresh contiguous leaf that owns its storage (never a view into someone else's tensor).
  Tensor p = value.detach().clone();
  p.set_requires_grad(true);
  params_.emplace_back(name, p);
  if (decay == NoDecay) no_decay_.insert(name);
  return p;
}

Tensor Module::register_buffer(const std::string& name, Tensor value) {
  check_name(name);
  if (!value.defined()) throw Error(str_cat("Module: buffer '", name, "' is undefined"));
  Tensor b = value.detach().clone();
  buffers_.emplace_back(name, b);
  return b;
}

template <class F> void Module::visit(const std::string& prefix, F&& f) const {
  f(prefix, *this);
  for (const auto& [n, child] : children_) child->visit(prefix + n + ".", f);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  visit("", [&](const std::string& prefix, const Module& m) {
    for (const auto& [n, t] : m.params_) out.emplace_back(prefix + n, t);
  });
  return out;
}

std::set<std::string> Module::no_decay_parameters() const {
  std::set<std::string> out;
  visit("", [&](const std::string& prefix, const Module& m) {
    for (const std::string& n : m.no_decay_) out.insert(prefix + n);
  });
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  visit("", [&](const std::string& prefix, const Module& m) {
    for (const auto& [n, t] : m.buffers_) out.emplace_back(prefix + n, t);
  });
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [_, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (const Tensor& t : parameters()) n += t.numel();
  return n;
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> out;
  for (auto& [n, t] : named_parameters()) out.emplace(n, t);
  for (auto& [n, t] : named_buffers()) out.emplace(n, t);
  return out;
}

namespace {
std::string join(const std::vector<std::string>& xs) {
  std::string s;
  for (const auto& x : xs) s += (s.empty() ? "" : ", ") + x;
  return s;
}
}  // namespace

LoadReport Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  const std::map<std::string, Tensor> own = state_dict();
  LoadReport report;
  // Check everything first, so a failed load leaves the module untouched.
  for (const auto& [name, dst] : own) {
    auto it = state.find(name);
    if (it == state.end()) {
      report.missing.push_back(name);
      continue;
    }
    if (!it->second.defined()) throw Error(str_cat("load_state_dict: '", name, "' is an undefined tensor"));
    if (!(it->second.shape() == dst.shape()))
      throw Error(str_cat("load_state_dict: shape mismatch for '", name, "': checkpoint has ",
                          it->second.describe(), ", module has ", dst.describe()));
  }
  for (const auto& [name, _] : state)
    if (!own.count(name)) report.unexpected.push_back(name);
  if (strict && (!report.missing.empty() || !report.unexpected.empty())) {
    std::string msg = "load_state_dict (strict):";
    if (!report.missing.empty()) msg += " missing keys [" + join(report.missing) + "]";
    if (!report.unexpected.empty()) msg += " unexpected keys [" + join(report.unexpected) + "]";
    throw Error(msg);
  }
  NoGradGuard ng;
  for (const auto& [name, dst] : own) {
    auto it = state.find(name);
    if (it != state.end()) const_cast<Tensor&>(dst).copy_(it->second);
  }
  return report;
}

namespace {
// Replaces t's storage and geometry with converted's, in place, so every handle to t follows.
void adopt(Tensor& t, const Tensor& converted) {
  TensorImpl& dst = t.impl();
  const TensorImpl& src = converted.impl();
  dst.storage = src.storage;
  dst.offset = src.offset;
  dst.shape = src.shape;
  dst.strides = src.strides;
  dst.dtype = src.dtype;
  dst.grad.reset();
}
}  // namespace

void Module::to(DType dtype) {
  auto convert = [dtype](Tensor& t) {
    if (t.dtype() == dtype) return;
    NoGradGuard ng;
    adopt(t, t.detach().to(dtype).contiguous());
  };
  for (auto& [_, t] : params_) convert(t);
  for (auto& [_, t] : buffers_) convert(t);
  for (auto& [_, child] : children_) child->to(dtype);
}

void Module::to(Device device) {
  auto move = [device](Tensor& t) {
    if (t.device() == device) return;
    NoGradGuard ng;
    adopt(t, t.detach().contiguous().to(device));
  };
  for (auto& [_, t] : params_) move(t);
  for (auto& [_, t] : buffers_) move(t);
  for (auto& [_, child] : children_) child->to(device);
}

Device Module::device() const {
  for (const auto& [_, t] : params_) return t.device();
  for (const auto& [_, t] : buffers_) return t.device();
  for (const auto& [_, child] : children_)
    if (!child->named_parameters().empty() || !child->named_buffers().empty()) return child->device();
  return Device::cpu();
}

std::shared_ptr<Module> Module::child(const std::string& name) const {
  for (const auto& [n, c] : children_)
    if (n == name) return c;
  return nullptr;
}

void Module::zero_grad() {
  for (Tensor& t : parameters()) t.zero_grad();
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [_, child] : children_) child->train(on);
}

int Module::freeze(const std::vector<std::string>& patterns) {
  int n = 0;
  for (auto& [name, t] : named_parameters()) {
    for (const auto& p : patterns) {
      if (glob_match(p, name)) {
        t.set_requires_grad(false);
        ++n;
        break;
      }
    }
  }
  return n;
}

int Module::train_only(const std::vector<std::string>& patterns) {
  int n = 0;
  for (auto& [name, t] : named_parameters()) {
    bool hit = false;
    for (const auto& p : patterns) hit = hit || glob_match(p, name);
    t.set_requires_grad(hit);
    n += hit;
  }
  return n;
}

}  // namespace loom
