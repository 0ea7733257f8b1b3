// The device runtime: devices, raw allocations, streams, events, copies.
#include <string>
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/cuda.h"

namespace loom::kernels::cuda {
namespace {
thread_local cudaStream_t tls_stream = nullptr;  // null: the legacy default stream
ScratchAlloc g_scratch_alloc = nullptr;
ScratchFree g_scratch_free = nullptr;

// Switches to `device` for one call and back: the allocator serves tensors of any device, and must
// not leave the caller's thread on another one (its next kernel would launch there).
struct DeviceGuard {
  int prev = 0;
  bool switched = false;
  explicit DeviceGuard(int device) {
    LOOM_CUDA_CHECK(cudaGetDevice(&prev));
    if (device != prev) {
      LOOM_CUDA_CHECK(cudaSetDevice(device));
      switched = true;
    }
  }
  ~DeviceGuard() {
    if (switched) cudaSetDevice(prev);  // a destructor must not throw; the switch back cannot fail once the forward one did not
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
};
}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

int current_device() {
  int d = 0;
  LOOM_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

void set_device(int device) { LOOM_CUDA_CHECK(cudaSetDevice(device)); }

void mem_get_info(int device, size_t* free_bytes, size_t* total_bytes) {
  DeviceGuard on(device);
  LOOM_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

void* device_malloc(size_t nbytes, int device) {
  DeviceGuard on(device);
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, nbytes);
  if (err != cudaSuccess) {
    size_t free_b = 0, total_b = 0;
    cudaGetLastError();
    cudaMemGetInfo(&free_b, &total_b);
    throw std::runtime_error("CUDA out of memory on cuda:" + std::to_string(device) + ": asked " +
                             std::to_string(nbytes) + " bytes, " + std::to_string(free_b) + " of " +
                             std::to_string(total_b) + " free (" + cudaGetErrorString(err) + ")");
  }
  return p;
}

void* device_try_malloc(size_t nbytes, int device) {
  DeviceGuard on(device);
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, nbytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // not sticky; clear it so the next check does not see it
    return nullptr;
  }
  LOOM_CUDA_CHECK(err);
  return p;
}

void device_free(void* ptr, int device) {
  DeviceGuard on(device);
  LOOM_CUDA_CHECK(cudaFree(ptr));
}

void* host_malloc_pinned(size_t nbytes) {
  void* p = nullptr;
  cudaError_t err = cudaHostAlloc(&p, nbytes, cudaHostAllocDefault);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error("could not allocate " + std::to_string(nbytes) + " bytes of pinned host memory (" +
                             cudaGetErrorString(err) + ")");
  }
  return p;
}

void host_free_pinned(void* ptr) { LOOM_CUDA_CHECK(cudaFreeHost(ptr)); }

void memset_async(void* dst, int byte, size_t nbytes) { LOOM_CUDA_CHECK(cudaMemsetAsync(dst, byte, nbytes, tls_stream)); }

StreamHandle current_stream() { return tls_stream; }
void set_current_stream(StreamHandle stream) { tls_stream = static_cast<cudaStream_t>(stream); }

StreamHandle stream_create() {
  cudaStream_t s = nullptr;
  LOOM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}
void stream_destroy(StreamHandle stream) { LOOM_CUDA_CHECK(cudaStreamDestroy(static_cast<cudaStream_t>(stream))); }
void stream_synchronize(StreamHandle stream) {
  LOOM_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}
void device_synchronize() { LOOM_CUDA_CHECK(cudaDeviceSynchronize()); }

EventHandle event_create(bool timing) {
  cudaEvent_t e = nullptr;
  LOOM_CUDA_CHECK(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
  return e;
}
void event_destroy(EventHandle event) { LOOM_CUDA_CHECK(cudaEventDestroy(static_cast<cudaEvent_t>(event))); }
void event_record(EventHandle event, StreamHandle stream) {
  LOOM_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)));
}
void event_synchronize(EventHandle event) { LOOM_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event))); }
bool event_query(EventHandle event) {
  cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(event));
  if (err == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  LOOM_CUDA_CHECK(err);
  return true;
}
void stream_wait_event(StreamHandle stream, EventHandle event) {
  LOOM_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(event), 0));
}
float event_elapsed_ms(EventHandle start, EventHandle end) {
  float ms = 0;
  LOOM_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end)));
  return ms;
}

static cudaMemcpyKind to_cuda(CopyKind kind) {
  return kind == CopyKind::host_to_device   ? cudaMemcpyHostToDevice
         : kind == CopyKind::device_to_host ? cudaMemcpyDeviceToHost
                                            : cudaMemcpyDeviceToDevice;
}

// Synchronous with respect to the host, and ordered after the work queued on the current stream
// (a plain cudaMemcpy would only order against the legacy stream).
void memcpy(void* dst, const void* src, size_t nbytes, CopyKind kind) {
  LOOM_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, to_cuda(kind), tls_stream));
  LOOM_CUDA_CHECK(cudaStreamSynchronize(tls_stream));
}

void memcpy_async(void* dst, const void* src, size_t nbytes, CopyKind kind) {
  LOOM_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, to_cuda(kind), tls_stream));
}

void set_scratch_allocator(ScratchAlloc alloc, ScratchFree free) {
  g_scratch_alloc = alloc;
  g_scratch_free = free;
}

void* scratch_malloc(size_t nbytes, StreamHandle stream) {
  if (g_scratch_alloc) return g_scratch_alloc(nbytes, current_device(), stream);
  void* p = nullptr;
  LOOM_CUDA_CHECK(cudaMallocAsync(&p, nbytes, static_cast<cudaStream_t>(stream)));
  return p;
}

void scratch_free(void* ptr, StreamHandle stream) noexcept {
  if (!ptr) return;
  if (g_scratch_free) {
    int device = 0;
    if (cudaGetDevice(&device) == cudaSuccess) g_scratch_free(ptr, device);
    return;
  }
  cudaFreeAsync(ptr, static_cast<cudaStream_t>(stream));  // a failure here leaks at worst
}

}  // namespace loom::kernels::cuda
