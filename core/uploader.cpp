#include "core/uploader.h"
#include <cstring>
#include <vector>
#ifdef LOOM_WITH_CUDA
#include "kernels/cuda/cuda.h"
#endif

namespace loom {

#ifdef LOOM_WITH_CUDA
namespace cu = kernels::cuda;

struct Uploader::Staging {
  struct Buffer {
    void* host = nullptr;
    size_t bytes = 0;
    cu::EventHandle done = nullptr;  // recorded on the side stream after this buffer's last copy
    bool used = false;
  };
  int device = 0;
  cu::StreamHandle side = nullptr;
  cu::EventHandle compute_point = nullptr;  // where the compute stream was when dst was allocated
  std::vector<Buffer> buffers;

  // A pinned buffer of at least `bytes` whose previous copy has finished.
  Buffer& take(size_t bytes) {
    for (Buffer& b : buffers)
      if (b.bytes >= bytes && (!b.used || cu::event_query(b.done))) return b;
    // Pool limit: a few batches' worth of tensors in flight; past it, wait for the oldest copy.
    constexpr size_t kMaxBuffers = 16;
    if (buffers.size() >= kMaxBuffers) {
      Buffer& b = buffers.front();
      cu::event_synchronize(b.done);
      if (b.bytes < bytes) {
        cu::host_free_pinned(b.host);
        b.host = nullptr;  // not dangling if the allocation below throws
        b.bytes = 0;
        b.host = cu::host_malloc_pinned(bytes);
        b.bytes = bytes;
      }
      return b;
    }
    Buffer b;
    b.host = cu::host_malloc_pinned(bytes);
    b.bytes = bytes;
    b.done = cu::event_create(false);
    buffers.push_back(b);
    return buffers.back();
  }

  ~Staging() {
    // Destructors must not throw: a failure here (a lost device) leaves the memory to the driver.
    try {
      if (side) cu::stream_synchronize(side);
      for (Buffer& b : buffers) {
        if (b.host) cu::host_free_pinned(b.host);
        cu::event_destroy(b.done);
      }
      if (compute_point) cu::event_destroy(compute_point);
      if (side) cu::stream_destroy(side);
    } catch (...) {
    }
  }
};
#else
struct Uploader::Staging {};
#endif

Uploader::Uploader(Device device) : device_(device) {
#ifdef LOOM_WITH_CUDA
  if (device.is_cuda()) {
    staging_ = std::make_unique<Staging>();
    staging_->device = device.index;
    const int previous = cu::current_device();
    cu::set_device(device.index);
    staging_->side = cu::stream_create();
    staging_->compute_point = cu::event_create(false);
    cu::set_device(previous);
  }
#else
  LOOM_CHECK(device.is_cpu(), "Uploader: ", device.str(), " needs a loom built with CUDA");
#endif
}

Uploader::~Uploader() = default;

Tensor Uploader::upload(const Tensor& t) {
  LOOM_CHECK(t.device().is_cpu(), "Uploader::upload: ", t.describe(), " is not on the CPU");
  if (device_.is_cpu()) return t.detach();
#ifdef LOOM_WITH_CUDA
  Tensor src = t.detach().contiguous();
  // Allocated on the compute stream (the caching allocator ties the block to it), filled on the side stream.
  Tensor dst = Tensor::empty(src.shape(), src.dtype(), device_);
  const size_t n = size_t(src.numel()) * dtype_size(src.dtype());
  if (n == 0) return dst;
  Staging& s = *staging_;
  Staging::Buffer& buf = s.take(n);
  std::memcpy(buf.host, src.raw_data(), n);
  const cu::StreamHandle compute = cu::current_stream();
  // dst's block may have been freed by kernels still queued on the compute stream (the caching
  // allocator reuses blocks in that stream's order): the side stream starts after them.
  cu::event_record(s.compute_point, compute);
  cu::stream_wait_event(s.side, s.compute_point);
  cu::set_current_stream(s.side);
  try {
    cu::memcpy_async(dst.raw_data(), buf.host, n, cu::CopyKind::host_to_device);
    cu::event_record(buf.done, s.side);
  } catch (...) {
    cu::set_current_stream(compute);
    throw;
  }
  cu::set_current_stream(compute);
  buf.used = true;
  cu::stream_wait_event(compute, buf.done);
  return dst;
#else
  return t.detach();
#endif
}

}  // namespace loom
