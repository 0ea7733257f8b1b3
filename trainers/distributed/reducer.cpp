#include "trainers/distributed/reducer.h"
#include <cstring>
#include "core/error.h"

namespace loom::distributed {

GradReducer::GradReducer(std::shared_ptr<Communicator> comm, std::vector<std::pair<std::string, Tensor>> params,
                         int64_t bucket_bytes, bool overlap)
    : comm_(std::move(comm)), params_(std::move(params)), bucket_bytes_(bucket_bytes), overlap_(overlap),
      self_(std::make_shared<GradReducer*>(this)) {
  LOOM_CHECK(bucket_bytes_ > 0, "GradReducer: bucket size must be > 0 bytes, got ", bucket_bytes_);
  bucket_of_.assign(params_.size(), -1);
  seen_.assign(params_.size(), false);
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i].second;
    LOOM_CHECK(p.device().is_cpu(), "GradReducer: parameter ", params_[i].first, " is ", p.describe(),
               "; buckets are packed on the host (CUDA buckets arrive with the CUDA trainer)");
    // The hooks outlive this reducer if the model does; they reach it through self_, cleared on destruction.
    p.register_grad_hook([self = self_, i](const Tensor&) {
      if (*self && (*self)->armed_) (*self)->on_gradient(i);
    });
  }
}

GradReducer::~GradReducer() { *self_ = nullptr; }

void GradReducer::plan() {
  std::vector<bool> trains(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) trains[i] = params_[i].second.requires_grad();
  if (trains == trains_ && !buckets_.empty()) return;
  trains_ = trains;
  buckets_.clear();
  bucket_of_.assign(params_.size(), -1);
  int64_t bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    if (!trains[k]) continue;
    const Tensor& p = params_[k].second;
    const bool fresh = buckets_.empty() || bytes >= bucket_bytes_ ||
                       buckets_.back().flat.dtype() != p.dtype();
    if (fresh) {
      buckets_.emplace_back();
      buckets_.back().flat = Tensor::empty({0}, p.dtype());  // sized below
      bytes = 0;
    }
    Bucket& b = buckets_.back();
    b.offsets.push_back(b.members.empty() ? 0 : b.offsets.back() + params_[b.members.back()].second.numel());
    b.members.push_back(k);
    bucket_of_[k] = int(buckets_.size() - 1);
    bytes += p.numel() * int64_t(dtype_size(p.dtype()));
  }
  // After the gradients, one flag per member: 1 where this rank has a gradient for it. Summed with
  // them, it says whether any rank had one (graphs may differ per rank: other tasks, sources, pairs).
  for (Bucket& b : buckets_) {
    b.grads = b.offsets.back() + params_[b.members.back()].second.numel();
    b.flat = Tensor::empty({b.grads + int64_t(b.members.size())}, b.flat.dtype());
  }
}

void GradReducer::arm() {
  plan();
  for (Bucket& b : buckets_) {
    b.ready = 0;
    b.pending.reset();
    b.done = false;
  }
  seen_.assign(params_.size(), false);
  next_ = 0;
  armed_ = true;
}

void GradReducer::on_gradient(size_t i) {
  const int k = bucket_of_[i];
  if (k < 0 || seen_[i]) return;  // frozen now, or a second call in one backward (not expected)
  seen_[i] = true;
  ++buckets_[size_t(k)].ready;
  while (overlap_ && next_ < buckets_.size() && buckets_[next_].ready == buckets_[next_].members.size()) launch(buckets_[next_++]);
  // Every gradient that arrives moves the started all-reduces along (MPI progresses only in its calls).
  for (size_t b = 0; b < next_; ++b)
    if (buckets_[b].pending && !buckets_[b].done) buckets_[b].done = buckets_[b].pending->test();
}

void GradReducer::launch(Bucket& b) {
  const size_t esize = dtype_size(b.flat.dtype());
  char* flat = static_cast<char*>(b.flat.raw_data());
  for (size_t m = 0; m < b.members.size(); ++m) {
    const Tensor& p = params_[b.members[m]].second;
    char* dst = flat + size_t(b.offsets[m]) * esize;
    const size_t nbytes = size_t(p.numel()) * esize;
    Tensor g = p.grad();
    set_flag(b, m, g.defined());
    if (!g.defined()) {
      std::memset(dst, 0, nbytes);
      continue;
    }
    LOOM_CHECK(g.dtype() == p.dtype() && g.numel() == p.numel(), "GradReducer: the gradient of ", params_[b.members[m]].first,
               " is ", g.describe(), ", the parameter ", p.describe());
    Tensor gc = g.contiguous();
    std::memcpy(dst, gc.raw_data(), nbytes);
  }
  b.pending = comm_->all_reduce_sum_async(b.flat);
}

void GradReducer::finish() {
  LOOM_CHECK(armed_, "GradReducer::finish without arm()");
  armed_ = false;
  while (next_ < buckets_.size()) launch(buckets_[next_++]);
  const auto t0 = std::chrono::steady_clock::now();
  for (Bucket& b : buckets_) b.pending->wait();
  wait_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (Bucket& b : buckets_) {
    const size_t esize = dtype_size(b.flat.dtype());
    const char* flat = static_cast<const char*>(b.flat.raw_data());
    for (size_t m = 0; m < b.members.size(); ++m) {
      Tensor& p = params_[b.members[m]].second;
      Tensor g = p.grad();
      // No rank's graph reached it: it stays without a gradient, as in one process (the optimizer skips it).
      if (!any_flag(b, m)) continue;
      if (!g.defined() || !g.is_contiguous() || g.offset() != 0) {
        // No gradient on this rank (zeros were sent) while another rank has one, or one that is a
        // view: the sum becomes a fresh gradient, so every replica takes the same step.
        Tensor fresh = Tensor::empty(p.shape(), p.dtype());
        std::memcpy(fresh.raw_data(), flat + size_t(b.offsets[m]) * esize, size_t(p.numel()) * esize);
        p.set_grad(fresh);
        continue;
      }
      std::memcpy(g.raw_data(), flat + size_t(b.offsets[m]) * esize, size_t(p.numel()) * esize);
    }
  }
}

void GradReducer::set_flag(Bucket& b, size_t m, bool on) {
  const int64_t at = b.grads + int64_t(m);
  switch (b.flat.dtype()) {
    case DType::f32: static_cast<float*>(b.flat.raw_data())[at] = on ? 1.0f : 0.0f; break;
    case DType::f64: static_cast<double*>(b.flat.raw_data())[at] = on ? 1.0 : 0.0; break;
    default: LOOM_CHECK(false, "GradReducer: parameters of dtype ", dtype_name(b.flat.dtype()), " are not reduced yet");
  }
}

bool GradReducer::any_flag(const Bucket& b, size_t m) const {
  const int64_t at = b.grads + int64_t(m);
  if (b.flat.dtype() == DType::f32) return static_cast<const float*>(b.flat.raw_data())[at] > 0.5f;
  return static_cast<const double*>(b.flat.raw_data())[at] > 0.5;
}

int64_t GradReducer::bytes_per_step() const {
  int64_t n = 0;
  for (const Bucket& b : buckets_) n += b.flat.numel() * int64_t(dtype_size(b.flat.dtype()));
  return n;
}

void broadcast_tensors(Communicator& comm, const std::vector<Tensor>& tensors, int root) {
  if (comm.world() == 1) return;
  for (const Tensor& t : tensors) {
    LOOM_CHECK(t.is_contiguous(), "broadcast_tensors: ", t.describe(), " is not contiguous");
    Tensor h = t;  // a handle onto the same storage
    comm.broadcast(h, root);
  }
}

}  // namespace loom::distributed
