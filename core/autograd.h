// Define-by-run autograd. Each differentiable op records one Node whose gradient rule is a lambda
// that captures only what it needs; backward() walks the graph in reverse topological order.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>
#include "core/rng.h"
#include "core/tensor.h"

namespace loom::autograd {

// Returns one gradient per input (an undefined Tensor where an input gets none).
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

struct Node {
  std::string name;
  std::vector<std::shared_ptr<Node>> next;  // one per input; null where the input needs no gradient
  std::vector<Shape> input_shapes;          // to check what each rule returns
  std::vector<DType> input_dtypes;
  virtual ~Node();  // iterative, so very deep graphs do not overflow the stack
  virtual std::vector<Tensor> apply(const Tensor& grad_output) = 0;
  virtual void release() {}  // drop saved tensors after backward
};

// Records `fn` as the gradient rule producing `output` from `inputs`, when grad mode is on and an
// input requires grad. Returns `output` (now carrying its grad_fn).
Tensor record(const char* name, const std::vector<Tensor>& inputs, Tensor output, BackwardFn fn);

bool grad_enabled();

// Disables recording for its scope (evaluation, optimizer steps, gradient rules themselves).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;
 private:
  bool prev_;
};

// Backpropagates `grad` from `root` into the .grad of every leaf it depends on.
void backward(const Tensor& root, const Tensor& grad, bool retain_graph);

// Activation checkpointing (PyTorch's torch.utils.checkpoint, reentrant form): fn(x) is computed
// without recording, and one node "checkpoint" is recorded whose backward re-runs fn on x with
// recording on, under the forward's autocast dtype and with `gen` (the generator fn draws dropout or
// drop-path from; may be null) rewound to where the forward found it, backpropagates the incoming
// gradient through that graph (so `params`, the leaves fn reads, accumulate their .grad as in a plain
// pass) and returns x's gradient. The same gradients, bitwise; the activations inside fn are not
// kept between forward and backward. fn must not keep what it captures by reference past the step.
Tensor checkpoint(const std::function<Tensor(const Tensor&)>& fn, const Tensor& x, const std::vector<Tensor>& params,
                  Generator* gen = nullptr);

// Anomaly mode (PyTorch's detect_anomaly): every recorded op's output and every gradient a rule
// returns is checked for NaN and infinity, and the first one found is a loom::Error naming the op,
// forward or backward, and the shapes. Slow (each tensor is read back): for finding where a run
// diverges. For the calling thread; off by default.
void set_detect_anomaly(bool on);
bool detect_anomaly();
// True when every element of a floating-point tensor is finite (any device; integer tensors: true).
bool all_finite(const Tensor& t);

}  // namespace loom::autograd

namespace loom { using autograd::NoGradGuard; }
