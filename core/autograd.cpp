#include "core/autograd.h"
#include "core/autocast.h"
#include <cmath>
#include <unordered_map>
#include <unordered_set>
#include "core/ops.h"
#include "core/profiler.h"

namespace loom::autograd {
namespace {

thread_local bool g_grad_enabled = true;
thread_local bool g_detect_anomaly = false;

// "nan" or "inf": what the first non-finite element of `t` is (t holds one).
const char* nonfinite_kind(const Tensor& t) {
  for (double v : t.to(Device::cpu()).to(DType::f64).contiguous().to_vector<double>())
    if (!std::isfinite(v)) return std::isnan(v) ? "nan" : "inf";
  return "none";
}

struct FunctionNode final : Node {
  BackwardFn fn;
  std::vector<Tensor> apply(const Tensor& g) override {
    if (!fn)
      throw Error(str_cat("backward through '", name, "' a second time: its saved tensors were freed; "
                          "pass retain_graph=true to the first backward"));
    return fn(g);
  }
  void release() override { fn = nullptr; }
};

// The sink of a leaf: accumulates into .grad and fires the leaf's hooks once its gradient is final.
struct AccumulateGrad final : Node {
  std::shared_ptr<TensorImpl> leaf;
  std::vector<Tensor> apply(const Tensor& g) override {
    if (!leaf->grad) {
      // Own the buffer: g may be shared with another leaf's gradient or a saved tensor. A fresh
      // contiguous gradient that nothing else holds is taken as it is (most of them).
      if (g.impl_ptr().use_count() == 1 && g.impl().storage.use_count() == 1 && g.is_contiguous() &&
          g.impl().offset == 0 && !g.requires_grad() && size_t(g.numel()) * dtype_size(g.dtype()) == g.impl().storage->nbytes)
        leaf->grad = g.impl_ptr();
      else
        leaf->grad = g.clone().impl_ptr();
    } else {
      Tensor acc(leaf->grad);
      acc.add_(g);
    }
    Tensor final_grad(leaf->grad);
    for (auto& hook : leaf->grad_hooks) hook(final_grad);
    return {};
  }
};

std::shared_ptr<Node> accumulator_of(const Tensor& leaf) {
  TensorImpl& impl = leaf.impl();
  if (auto existing = impl.grad_accumulator.lock()) return existing;
  auto acc = std::make_shared<AccumulateGrad>();
  acc->name = "accumulate_grad";
  acc->leaf = leaf.impl_ptr();
  acc->input_shapes = {leaf.shape()};
  acc->input_dtypes = {leaf.dtype()};
  impl.grad_accumulator = acc;
  return acc;
}

std::shared_ptr<Node> edge_to(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return nullptr;
  return t.is_leaf() ? accumulator_of(t) : t.grad_fn();
}

}  // namespace

Node::~Node() {
  // Children whose last owner is this node are queued and released by the outermost destructor in
  // a loop, instead of recursing once per node of a long chain.
  thread_local std::vector<std::shared_ptr<Node>> pending;
  thread_local bool draining = false;
  for (auto& n : next)
    if (n && n.use_count() == 1) pending.push_back(std::move(n));
  if (draining) return;
  draining = true;
  while (!pending.empty()) {
    std::shared_ptr<Node> n = std::move(pending.back());
    pending.pop_back();
    n.reset();
  }
  draining = false;
}

bool grad_enabled() { return g_grad_enabled; }
void set_detect_anomaly(bool on) { g_detect_anomaly = on; }
bool detect_anomaly() { return g_detect_anomaly; }

bool all_finite(const Tensor& t) {
  if (!t.defined() || !is_floating(t.dtype())) return true;
  for (double v : t.to(Device::cpu()).to(DType::f64).contiguous().to_vector<double>())
    if (!std::isfinite(v)) return false;
  return true;
}
NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }

Tensor record(const char* name, const std::vector<Tensor>& inputs, Tensor output, BackwardFn fn) {
  if (!g_grad_enabled) return output;
  bool any = false;
  for (const Tensor& t : inputs) any = any || (t.defined() && t.requires_grad());
  if (!any) return output;
  if (g_detect_anomaly && !all_finite(output)) {
    std::string ins;
    for (const Tensor& t : inputs) ins += (ins.empty() ? "" : ", ") + (t.defined() ? t.describe() : std::string("-"));
    throw Error(str_cat("detect_anomaly: the forward of '", name, "' produced ", nonfinite_kind(output), " in its output ",
                        output.describe(), " (inputs ", ins, ")"));
  }
  auto node = std::make_shared<FunctionNode>();
  node->name = name;
  node->fn = std::move(fn);
  node->next.reserve(inputs.size());
  for (const Tensor& t : inputs) {
    node->next.push_back(edge_to(t));
    node->input_shapes.push_back(t.defined() ? t.shape() : Shape{});
    node->input_dtypes.push_back(t.defined() ? t.dtype() : DType::f32);
  }
  TensorImpl& out = output.impl();
  out.grad_fn = std::move(node);
  out.requires_grad = true;
  return output;
}

void backward(const Tensor& root, const Tensor& grad_in, bool retain_graph) {
  AutocastGuard no_autocast(std::nullopt);  // backward ops run in the dtypes their forward chose
  if (!root.requires_grad())
    throw Error(str_cat("backward: ", root.describe(), " does not require grad (no input of it requires grad)"));
  Tensor grad = grad_in;
  if (!grad.defined()) {
    if (root.numel() != 1)
      throw Error(str_cat("backward: ", root.describe(), " is not a scalar; pass its gradient explicitly"));
    grad = Tensor::ones(root.shape(), root.dtype(), root.device());
  } else if (!(grad.shape() == root.shape()) || grad.dtype() != root.dtype() || !(grad.device() == root.device())) {
    // Gradient rules hand both to kernels that read them as one element type.
    throw Error(str_cat("backward: gradient ", grad.describe(), " does not match output ", root.describe(),
                        " (shape, dtype and device must agree)"));
  }
  NoGradGuard no_grad;
  std::shared_ptr<Node> start = root.is_leaf() ? accumulator_of(root) : root.grad_fn();

  // Reverse topological order: iterative DFS post-order, then reversed.
  std::vector<Node*> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<Node*, size_t>> stack{{start.get(), 0}};
  seen.insert(start.get());
  while (!stack.empty()) {
    auto& [node, i] = stack.back();
    if (i < node->next.size()) {
      Node* child = node->next[i++].get();
      if (child && seen.insert(child).second) stack.push_back({child, 0});
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }

  std::unordered_map<Node*, Tensor> grads;
  grads[start.get()] = grad;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = *it;
    auto found = grads.find(node);
    if (found == grads.end()) continue;  // reachable only through inputs that got no gradient
    Tensor g = std::move(found->second);
    grads.erase(found);
    std::vector<Tensor> input_grads;
    {
      profiler::OpScope scope(node->name.c_str(), true);
      input_grads = node->apply(g);
      g = Tensor();
    }
    if (g_detect_anomaly)
      for (size_t k = 0; k < input_grads.size(); ++k)
        if (input_grads[k].defined() && !all_finite(input_grads[k]))
          throw Error(str_cat("detect_anomaly: the backward of '", node->name, "' produced ", nonfinite_kind(input_grads[k]),
                              " in the gradient of its input ", k, " (", input_grads[k].describe(), ")"));
    if (!retain_graph) node->release();
    for (size_t k = 0; k < node->next.size() && k < input_grads.size(); ++k) {
      Node* child = node->next[k].get();
      Tensor& ig = input_grads[k];
      if (!child || !ig.defined()) continue;
      if (!(ig.shape() == node->input_shapes[k]))
        throw Error(str_cat("backward of '", node->name, "': gradient for input ", k, " is ", ig.describe(),
                            " but the input's shape is ", node->input_shapes[k]));
      if (ig.dtype() != node->input_dtypes[k]) ig = ig.to(node->input_dtypes[k]);
      auto slot = grads.find(child);
      if (slot == grads.end()) grads.emplace(child, std::move(ig));
      else slot->second = ops::add(slot->second, ig);
    }
  }
}

Tensor checkpoint(const std::function<Tensor(const Tensor&)>& fn, const Tensor& x, const std::vector<Tensor>& params,
                  Generator* gen) {
  bool any = x.requires_grad();
  for (const Tensor& p : params) any = any || p.requires_grad();
  if (!g_grad_enabled || !any) return fn(x);
  const uint64_t seed = gen ? gen->seed() : 0, offset = gen ? gen->offset() : 0;
  const std::optional<DType> autocast = autocast_dtype();
  Tensor out;
  {
    NoGradGuard ng;
    out = fn(x);
  }
  std::vector<Tensor> inputs{x};
  inputs.insert(inputs.end(), params.begin(), params.end());
  const Tensor saved = x.detach();
  const bool x_grad = x.requires_grad();
  return record("checkpoint", inputs, out, [fn, saved, x_grad, gen, seed, offset, autocast, n = inputs.size()](const Tensor& g) {
    Tensor in = saved.detach();
    in.set_requires_grad(x_grad);
    Tensor y;
    {
      const bool was = g_grad_enabled;
      g_grad_enabled = true;
      AutocastGuard cast(autocast);
      const uint64_t now_seed = gen ? gen->seed() : 0, now_offset = gen ? gen->offset() : 0;
      if (gen) gen->set_state(seed, offset);
      try {
        y = fn(in);
      } catch (...) {
        g_grad_enabled = was;
        if (gen) gen->set_state(now_seed, now_offset);
        throw;
      }
      g_grad_enabled = was;
      if (gen) gen->set_state(now_seed, now_offset);
    }
    std::vector<Tensor> grads(n);
    if (y.requires_grad()) backward(y, g, false);
    if (x_grad) grads[0] = in.grad();
    return grads;
  });
}

}  // namespace loom::autograd
