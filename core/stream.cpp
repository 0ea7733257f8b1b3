#include "core/stream.h"
#include "core/error.h"
#include "kernels/cpu/cpu.h"
#ifdef LOOM_WITH_CUDA
#include "kernels/cuda/cuda.h"
#endif

namespace loom::gpu {

#ifdef LOOM_WITH_CUDA
namespace cu = kernels::cuda;
void set_device(int index) { cu::set_device(index); }
StreamHandle current_stream() { return cu::current_stream(); }
StreamHandle stream_create() { return cu::stream_create(); }
void stream_destroy(StreamHandle stream) { cu::stream_destroy(stream); }
void stream_synchronize(StreamHandle stream) { cu::stream_synchronize(stream); }
EventHandle event_create() { return cu::event_create(false); }
void event_destroy(EventHandle event) { cu::event_destroy(event); }
void event_record(EventHandle event, StreamHandle stream) { cu::event_record(event, stream); }
void stream_wait_event(StreamHandle stream, EventHandle event) { cu::stream_wait_event(stream, event); }
#else
[[noreturn]] static void no_cuda(const char* call) { throw Error(str_cat("gpu::", call, ": loom was built without CUDA")); }
void set_device(int) { no_cuda("set_device"); }
StreamHandle current_stream() { no_cuda("current_stream"); }
StreamHandle stream_create() { no_cuda("stream_create"); }
void stream_destroy(StreamHandle) { no_cuda("stream_destroy"); }
void stream_synchronize(StreamHandle) { no_cuda("stream_synchronize"); }
EventHandle event_create() { no_cuda("event_create"); }
void event_destroy(EventHandle) { no_cuda("event_destroy"); }
void event_record(EventHandle, StreamHandle) { no_cuda("event_record"); }
void stream_wait_event(StreamHandle, EventHandle) { no_cuda("stream_wait_event"); }
#endif

}  // namespace loom::gpu

namespace loom {

void synchronize(Device device) {
  if (!device.is_cuda()) return;
#ifdef LOOM_WITH_CUDA
  kernels::cuda::device_synchronize();
#else
  throw Error("synchronize: loom was built without CUDA");
#endif
}

const char* cpu_gemm_library() { return kernels::cpu::sgemm_library(); }

}  // namespace loom
