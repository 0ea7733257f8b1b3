// Data-parallel gradient reduction (what PyTorch's DDP reducer does): the parameters that train are
// grouped into buckets of about `bucket_bytes`, in reverse order of registration (backward finishes
// the last layers first); a bucket's all-reduce starts as soon as backward has finished every
// gradient in it (per-leaf hooks), overlapping the rest of backward. Buckets start strictly in
// order, so every rank issues the same collectives in the same sequence and a run is reproducible
// for a given world size. The reduction is a sum: each rank scales its loss by its share of the
// global batch before backward, so the sum is the one-process gradient.
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>
#include "trainers/distributed/communicator.h"

namespace loom::distributed {

class GradReducer {
 public:
  // overlap false: every bucket waits for finish() (to measure what overlapping buys).
  GradReducer(std::shared_ptr<Communicator> comm, std::vector<std::pair<std::string, Tensor>> params,
              int64_t bucket_bytes = 25 << 20, bool overlap = true);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // Before the backward whose gradients are to be reduced (the last micro-step of an accumulation):
  // plans buckets over the parameters that require grad now (freezing may change between stages)
  // and arms the hooks. Backwards run while disarmed only accumulate.
  void arm();
  // After that backward: starts the buckets backward did not complete (parameters it gave no
  // gradient count as zeros), waits for all, and writes the sums into .grad of every parameter some
  // rank has a gradient for (also where this rank has none); one no rank reached keeps none.
  void finish();

  size_t buckets() const { return buckets_.size(); }
  int64_t bytes_per_step() const;          // gradient bytes each rank sends into the all-reduce per step
  double wait_seconds() const { return wait_s_; }  // time finish() waited for communication, in total

 private:
  struct Bucket {
    std::vector<size_t> members;  // parameter indices
    std::vector<int64_t> offsets; // element offset of each member in `flat`
    Tensor flat;        // the members' gradients, then one presence flag per member
    int64_t grads = 0;  // elements of gradients in `flat` (the flags follow)
    size_t ready = 0;
    std::unique_ptr<Pending> pending;
    bool done = false;  // pending has completed (test() said so)
  };
  void on_gradient(size_t index);
  void set_flag(Bucket& b, size_t member, bool has_gradient);
  bool any_flag(const Bucket& b, size_t member) const;  // after the sum: some rank had a gradient
  void launch(Bucket& b);
  void plan();

  std::shared_ptr<Communicator> comm_;
  std::vector<std::pair<std::string, Tensor>> params_;
  int64_t bucket_bytes_;
  bool overlap_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_;      // per parameter: its bucket, -1 while it does not train
  std::vector<bool> trains_;        // the requires_grad pattern buckets_ was planned for
  std::vector<bool> seen_;          // per parameter: its gradient arrived in this backward
  size_t next_ = 0;                 // the next bucket to start
  bool armed_ = false;
  double wait_s_ = 0;
  std::shared_ptr<GradReducer*> self_;
};

// Every rank's parameters (and any other tensors, e.g. buffers) become rank `root`'s.
void broadcast_tensors(Communicator& comm, const std::vector<Tensor>& tensors, int root = 0);

}  // namespace loom::distributed
