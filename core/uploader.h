// Host-to-device copies of input batches: each CPU tensor is staged into page-locked (pinned) host
// memory and copied on a side stream, so the copy is asynchronous to the host and runs beside
// whatever the compute stream is doing; the compute stream waits on an event before its next kernel
// reads the copy. Staging buffers are pooled and reused once their copy has finished. For a CPU
// device upload() returns its input, and no CUDA call is made.
#pragma once
#include <memory>
#include "core/tensor.h"

namespace loom {

class Uploader {
 public:
  explicit Uploader(Device device);
  ~Uploader();
  Uploader(const Uploader&) = delete;
  Uploader& operator=(const Uploader&) = delete;

  Device device() const { return device_; }
  // `t` (on the CPU) on this uploader's device, contiguous, without autograd history. Later work on
  // the calling thread's current stream sees the whole copy.
  Tensor upload(const Tensor& t);

 private:
  struct Staging;  // the CUDA side: side stream, pinned buffers and their events
  Device device_;
  std::unique_ptr<Staging> staging_;
};

}  // namespace loom
