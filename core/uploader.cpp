#include "core/uploader.h"
#include <cstring>
#include <vector>
#ifdef LOOM_WITH_CUDA
#include "kernels/cuda/cuda.h"
#endif

namespace loom {

#ifdef LOOM_WITH_CUDA
namespace cu = kernels::cuda;

struct Uploader::Slots {
  struct Buffer {
    Tensor device;       // owned while the slot lives: its block is never reused by the allocator meanwhile
    void* host = nullptr;  // pinned staging
    size_t host_bytes = 0;
  };
  struct Slot {
    std::map<std::string, Buffer> buffers;
    cu::EventHandle copied = nullptr;    // side stream: this slot's copies are done
    cu::EventHandle released = nullptr;  // compute stream: the work on this slot's batch has run
    bool release_pending = false;        // `released` recorded and not yet waited on
    bool fresh_blocks = false;           // new device blocks: wait for the compute stream before writing
  };
  int device = 0;
  cu::StreamHandle side = nullptr;
  cu::EventHandle compute_point = nullptr;
  Slot slot[2];
  int next = 0;               // the slot the next upload fills
  int last_uploaded = -1, last_taken = -1;

  ~Slots() {
    // Destructors must not throw: a failure here (a lost device) leaves the memory to the driver.
    try {
      if (side) cu::stream_synchronize(side);
      for (Slot& s : slot) {
        for (auto& [_, b] : s.buffers)
          if (b.host) cu::host_free_pinned(b.host);
        if (s.copied) cu::event_destroy(s.copied);
        if (s.released) cu::event_destroy(s.released);
      }
      if (compute_point) cu::event_destroy(compute_point);
      if (side) cu::stream_destroy(side);
    } catch (...) {
    }
  }
};
#else
struct Uploader::Slots {};
#endif

Uploader::Uploader(Device device) : device_(device) {
#ifdef LOOM_WITH_CUDA
  if (device.is_cuda()) {
    slots_ = std::make_unique<Slots>();
    slots_->device = device.index;
    const int previous = cu::current_device();
    cu::set_device(device.index);
    slots_->side = cu::stream_create();
    slots_->compute_point = cu::event_create(false);
    for (auto& s : slots_->slot) {
      s.copied = cu::event_create(false);
      s.released = cu::event_create(false);
    }
    cu::set_device(previous);
  }
#else
  LOOM_CHECK(device.is_cpu(), "Uploader: ", device.str(), " needs a loom built with CUDA");
#endif
}

Uploader::~Uploader() = default;

Uploader::Tensors Uploader::upload(const Tensors& host) {
  for (const auto& [key, t] : host)
    LOOM_CHECK(t.device().is_cpu(), "Uploader::upload: '", key, "' is ", t.describe(), ", not on the CPU");
  Tensors out;
  if (device_.is_cpu()) {
    for (const auto& [key, t] : host) out[key] = t.detach();
    return out;
  }
#ifdef LOOM_WITH_CUDA
  Slots& S = *slots_;
  Slots::Slot& slot = S.slot[S.next];
  const cu::StreamHandle compute = cu::current_stream();
  // The host may refill this slot's pinned buffers once its previous copies are done, and the side
  // stream may overwrite its device buffers once the compute stream has run the work on them.
  cu::event_synchronize(slot.copied);
  if (slot.release_pending) {
    cu::stream_wait_event(S.side, slot.released);
    slot.release_pending = false;
  }
  for (const auto& [key, t] : host) {
    Slots::Buffer& b = slot.buffers[key];
    if (!b.device.defined() || !(b.device.shape() == t.shape()) || b.device.dtype() != t.dtype()) {
      b.device = Tensor::empty(t.shape(), t.dtype(), device_);  // a block the compute stream may still be using
      slot.fresh_blocks = true;  // kept until the wait is queued, even if this call throws before it
    }
    const size_t n = size_t(t.numel()) * dtype_size(t.dtype());
    if (b.host_bytes < n) {
      if (b.host) cu::host_free_pinned(b.host);
      b.host = nullptr;  // not dangling if the allocation below throws
      b.host_bytes = 0;
      b.host = cu::host_malloc_pinned(n);
      b.host_bytes = n;
    }
  }
  for (auto it = slot.buffers.begin(); it != slot.buffers.end();) {  // keys this batch does not have
    if (host.count(it->first)) {
      ++it;
      continue;
    }
    if (it->second.host) cu::host_free_pinned(it->second.host);
    it = slot.buffers.erase(it);
  }
  if (slot.fresh_blocks) {  // a new block was freed by compute-stream work that may still be queued
    cu::event_record(S.compute_point, compute);
    cu::stream_wait_event(S.side, S.compute_point);
    slot.fresh_blocks = false;
  }
  cu::set_current_stream(S.side);
  try {
    for (const auto& [key, t] : host) {
      Slots::Buffer& b = slot.buffers[key];
      const Tensor src = t.detach().contiguous();
      const size_t n = size_t(src.numel()) * dtype_size(src.dtype());
      if (n) {
        std::memcpy(b.host, src.raw_data(), n);
        cu::memcpy_async(b.device.raw_data(), b.host, n, cu::CopyKind::host_to_device);
      }
      out[key] = b.device.detach();  // a new handle: nothing a consumer sets on it reaches the slot
    }
    cu::event_record(slot.copied, S.side);
  } catch (...) {
    cu::set_current_stream(compute);
    throw;
  }
  cu::set_current_stream(compute);
  S.last_uploaded = S.next;
  S.next ^= 1;
#endif
  return out;
}

void Uploader::taken() {
#ifdef LOOM_WITH_CUDA
  if (!slots_) return;
  Slots& S = *slots_;
  if (S.last_taken >= 0 && S.last_taken != S.last_uploaded) {
    Slots::Slot& done = S.slot[S.last_taken];
    cu::event_record(done.released, cu::current_stream());
    done.release_pending = true;
  }
  if (S.last_uploaded >= 0) cu::stream_wait_event(cu::current_stream(), S.slot[S.last_uploaded].copied);  // sees the whole batch
  S.last_taken = S.last_uploaded;
#endif
}

}  // namespace loom
