// Host-callable CUDA entry points. Includers need no CUDA headers. Every CUDA return code is
// checked; failures throw std::runtime_error naming the call and CUDA's message.
//
// The op kernels are kernels/kernel_list.h's, as on the CPU (same arguments, same semantics, same
// dtypes: bf16/f16 computed in f32, f64 in f64), so core/ dispatches on the device alone. They are asynchronous on the calling thread's current stream unless
// they say otherwise. Pointers in Views are device pointers.
#pragma once
#include <cstddef>
#include <cstdint>
#include "kernels/common/kernel_enums.h"
#include "kernels/common/view.h"
#include "kernels/kernel_list.h"

namespace loom::kernels::cuda {

// ---- runtime (runtime.cu) ----
int device_count();  // 0 when there is no driver or no GPU
int current_device();
void set_device(int device);
void* device_malloc(size_t nbytes, int device);  // throws with asked/free/total bytes on failure
void device_free(void* ptr, int device);
// nullptr when the device is out of memory (for the caching allocator, which then frees its cache and retries).
void* device_try_malloc(size_t nbytes, int device);
void* host_malloc_pinned(size_t nbytes);  // page-locked host memory, for asynchronous copies
void host_free_pinned(void* ptr);
void mem_get_info(int device, size_t* free_bytes, size_t* total_bytes);

// Streams and events are opaque handles (cudaStream_t / cudaEvent_t). A null stream is the
// legacy default stream, which every thread uses until it sets another.
using StreamHandle = void*;
using EventHandle = void*;
StreamHandle current_stream();
void set_current_stream(StreamHandle stream);  // for the calling thread
StreamHandle stream_create();                   // non-blocking
void stream_destroy(StreamHandle stream);
void stream_synchronize(StreamHandle stream);
void device_synchronize();
EventHandle event_create(bool timing);
void event_destroy(EventHandle event);
void event_record(EventHandle event, StreamHandle stream);
void event_synchronize(EventHandle event);
bool event_query(EventHandle event);  // true once complete
void stream_wait_event(StreamHandle stream, EventHandle event);
float event_elapsed_ms(EventHandle start, EventHandle end);

// Scratch memory of kernels (sort buffers, split reductions, index checks): from the hooks core/
// registers (its caching allocator), else cudaMallocAsync. scratch_free never throws.
using ScratchAlloc = void* (*)(size_t nbytes, int device, StreamHandle stream);
using ScratchFree = void (*)(void* ptr, int device);
void set_scratch_allocator(ScratchAlloc alloc, ScratchFree free);
void* scratch_malloc(size_t nbytes, StreamHandle stream);
void scratch_free(void* ptr, StreamHandle stream) noexcept;

enum class CopyKind { host_to_device, device_to_host, device_to_device };
void memcpy(void* dst, const void* src, size_t nbytes, CopyKind kind);  // synchronous
void memset_async(void* dst, int byte, size_t nbytes);  // on the current stream
// Ordered on the current stream. With pinned host memory the host does not wait at all; from
// pageable memory to the device it returns once the bytes are staged (no device synchronisation);
// from the device to pageable memory it returns once the copy is done.
void memcpy_async(void* dst, const void* src, size_t nbytes, CopyKind kind);

// ---- the kernels of kernels/kernel_list.h (documented there), each in its family's file ----
LOOM_DECLARE_LISTED_KERNELS

// ---- beyond the list ----
// bf16/f16 single products through the hand-written kernel (gemm_mma.h) where it takes them, instead
// of cuBLASLt (process-wide; kernels.gemm: loom). Batched products stay with cuBLASLt. (gemm.cu)
void set_gemm_mma_default(bool on);
bool gemm_mma_default();
// Without a synchronisation: the first out-of-range index of any deferred check is recorded on the
// device (the indexing kernels themselves never read or write out of range: they write zeros or
// skip), and raise_deferred_index_fault(), called after the host's next synchronising read, throws
// std::out_of_range naming `what`, the index and its position. `what` must outlive the check
// (a string literal). check_indices itself synchronises: it reads a flag back. (index.cu)
void check_indices_deferred(const View& index, int64_t bound, const char* what, int64_t allowed = INT64_MIN);
void raise_deferred_index_fault();

}  // namespace loom::kernels::cuda
