// Input batches to the GPU beside the computation. Each upload() copies a batch's CPU tensors into
// one of two device slots: through page-locked (pinned) host buffers, on a side stream, so the copy
// runs while the compute stream works on the batch in the other slot. The trainer uploads the next
// step's batch once the current step's work is queued (a prefetch), then takes it when the step
// starts. The slots' memory belongs to the uploader (never back to the caching allocator while in
// use), so the only waits are the ones that matter: a slot is rewritten after the compute stream
// has finished the work queued on its previous batch, and the compute stream reads a slot after its
// copy. For a CPU device upload() returns its input, and no CUDA call is made.
#pragma once
#include <map>
#include <memory>
#include <string>
#include "core/tensor.h"

namespace loom {

class Uploader {
 public:
  explicit Uploader(Device device);
  ~Uploader();
  Uploader(const Uploader&) = delete;
  Uploader& operator=(const Uploader&) = delete;

  using Tensors = std::map<std::string, Tensor>;
  Device device() const { return device_; }
  // `host` (CPU tensors) copied into the next slot, as device tensors without autograd history. They
  // stay valid until the slot is rewritten: two uploads later. Call taken() before queueing work on
  // them: only then does the compute stream wait for the copy.
  Tensors upload(const Tensors& host);
  // The latest upload's tensors are about to be used: the compute stream waits for their copy, and
  // the slot taken before them is released once the work queued on the compute stream so far has
  // run (its batch's whole forward and backward).
  void taken();

 private:
  struct Slots;  // the CUDA side: side stream, two slots of device and pinned buffers, events
  Device device_;
  std::unique_ptr<Slots> slots_;
};

}  // namespace loom
