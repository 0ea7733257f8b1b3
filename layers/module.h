// Module: a tree of named parameters, buffers and children, in the style of libtorch's Module.
// Registration gives dotted names ("visual.blocks.3.attn.qkv.weight"); those names are checkpoint
// keys and freeze patterns. Members hold Tensor handles that share their impl with the registry, so
// loading a state dict (an in-place copy) updates the members too.
#pragma once
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>
#include "core/ops.h"

namespace loom {

// Shell-style glob: '*' matches any run of characters (dots included), '?' one character.
bool glob_match(std::string_view pattern, std::string_view name);

struct LoadReport {
  std::vector<std::string> missing;     // in the module, not in the state dict
  std::vector<std::string> unexpected;  // in the state dict, not in the module
};

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Registers a parameter (made a leaf that requires grad) and returns a handle to it. A module says
  // here which of its parameters take weight decay: its weights do; norm gains, biases, tokens,
  // embeddings and temperatures it registers with NoDecay do not (the recipe may override it, optim.groups).
  enum Decay : bool { NoDecay = false, Decays = true };
  Tensor register_parameter(const std::string& name, Tensor value, Decay decay = Decays);
  // Registers a non-trainable tensor that is saved in checkpoints (e.g. fixed position embeddings).
  Tensor register_buffer(const std::string& name, Tensor value);
  template <class M> M& register_module(const std::string& name, std::shared_ptr<M> child) {
    check_name(name);
    children_.emplace_back(name, child);
    return *child;
  }

  // The direct child registered as `name`, or null.
  std::shared_ptr<Module> child(const std::string& name) const;
  bool has_child(const std::string& name) const { return child(name) != nullptr; }

  std::vector<std::pair<std::string, Tensor>> named_parameters() const;  // dotted; own first, then children (as PyTorch)
  // The dotted names of the parameters registered with NoDecay.
  std::set<std::string> no_decay_parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  std::vector<Tensor> parameters() const;
  int64_t parameter_count() const;

  // Parameters and buffers by dotted name.
  std::map<std::string, Tensor> state_dict() const;
  // Copies matching tensors in place. Shape mismatches always throw (naming the key and shapes);
  // with strict, missing or unexpected keys throw too.
  LoadReport load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);

  // Converts every parameter and buffer to `dtype` in place (the handles held by members follow);
  // gradients are dropped. Used for f64 gradient checks.
  void to(DType dtype);
  // Moves every parameter and buffer to `device` in place (the handles held by members follow);
  // gradients are dropped. Build the optimizer after this, so its state lives beside the weights.
  void to(Device device);
  // Where the first parameter (or buffer) lives; the CPU for a module that holds none.
  Device device() const;
  // Drops the accumulated gradient of every parameter.
  void zero_grad();

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // requires_grad = false for parameters whose dotted name matches any pattern; returns how many.
  int freeze(const std::vector<std::string>& patterns);
  // requires_grad = true only for parameters matching a pattern; all others frozen.
  int train_only(const std::vector<std::string>& patterns);

 private:
  void check_name(const std::string& name) const;
  template <class F> void visit(const std::string& prefix, F&& f) const;
  std::vector<std::pair<std::string, Tensor>> params_, buffers_;
  std::set<std::string> no_decay_;  // of params_
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace loom
