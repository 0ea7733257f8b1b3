// Host-callable CUDA entry points. Includers need no CUDA headers. Every CUDA return code is
// checked; failures throw std::runtime_error naming the call and CUDA's message.
//
// The op kernels mirror kernels/cpu/cpu.h one for one (same arguments, same semantics, same
// dtypes: bf16/f16 computed in f32, f64 in f64), so core/ dispatches on the device alone; the CPU
// header documents each. They are asynchronous on the calling thread's current stream unless
// they say otherwise. Pointers in Views are device pointers.
#pragma once
#include <cstddef>
#include <cstdint>
#include "kernels/common/kernel_enums.h"
#include "kernels/common/view.h"

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

// ---- elementwise (elementwise.cu) ----
void copy(const View& src, const View& dst);  // same shape, any strides, converts dtype; device to device
void fill(const View& dst, double value);     // any strides
void unary(Unary op, const View& x, const View& out, double a = 0, double b = 0);
void binary(Binary op, const View& a, const View& b, const View& out);
void where(const View& cond, const View& a, const View& b, const View& out);

// ---- reductions (reduce.cu) ----
void reduce(Reduce op, const View& x, uint32_t dims_mask, const View& out);
void argmax(const View& x, int dim, const View& out);

// ---- GEMM (gemm.cu): cuBLASLt (or the hand-written gemm_mma), f32 accumulation for bf16/f16 ----
void gemm(DType dtype, int64_t M, int64_t N, int64_t K, double alpha, GemmOperand A, GemmOperand B,
          double beta, void* C, int64_t ldc);
// bf16/f16 single products through the hand-written kernel (gemm_mma.h) where it takes them, instead
// of cuBLASLt (process-wide; kernels.gemm: loom). Batched products stay with cuBLASLt.
void set_gemm_mma_default(bool on);
bool gemm_mma_default();
// One cuBLASLt call for `batch` products, the i-th operands and output `stride_*` elements after the first.
void gemm_strided_batched(DType dtype, int64_t batch, int64_t M, int64_t N, int64_t K, double alpha, GemmOperand A,
                          int64_t stride_a, GemmOperand B, int64_t stride_b, double beta, void* C, int64_t ldc,
                          int64_t stride_c);

// ---- rows (rows.cu) ----
void softmax(const View& x, const View& y, bool log);
void softmax_backward(const View& y, const View& dy, const View& dx, bool log);
void layer_norm_forward(const View& x, const View& weight, const View& bias, double eps,
                        const View& y, const View& mean, const View& rstd);
void layer_norm_backward(const View& dy, const View& x, const View& weight, const View& mean,
                         const View& rstd, const View& dx, const View& dweight, const View& dbias);
void cross_entropy_forward(const View& logits, const View& targets, int64_t ignore_index,
                           double smoothing, const View& loss, const View& lse);
void cross_entropy_backward(const View& logits, const View& targets, const View& lse,
                            int64_t ignore_index, double smoothing, double scale, const View& dlogits);

// ---- indexing (index.cu) ----
void gather(const View& x, int dim, const View& index, const View& out);
void scatter_add(const View& out, int dim, const View& index, const View& src);
void index_select(const View& x, int dim, const View& index, const View& out);
void embedding_backward(const View& dy, const View& ids, const View& dweight);
// Synchronises: reads a flag back to raise std::out_of_range on the host.
void check_indices(const View& index, int64_t bound, const char* what, int64_t allowed = INT64_MIN);
// Without a synchronisation: the first out-of-range index of any deferred check is recorded on the
// device (the indexing kernels themselves never read or write out of range: they write zeros or
// skip), and raise_deferred_index_fault(), called after the host's next synchronising read, throws
// std::out_of_range naming `what`, the index and its position. `what` must outlive the check
// (a string literal).
void check_indices_deferred(const View& index, int64_t bound, const char* what, int64_t allowed = INT64_MIN);
void raise_deferred_index_fault();

// ---- randomness (random.cu): the same Philox streams as the CPU ----
void uniform(const View& out, uint64_t seed, uint64_t offset);
void normal(const View& out, uint64_t seed, uint64_t offset);
void dropout(const View& x, double p, uint64_t seed, uint64_t offset, const View& y, const View& mask);

// ---- sorting (sort.cu) ----
void argsort(const View& x, bool descending, const View& out);

// ---- optimizer (optim.cu: one launch per 48 tensors): fused AdamW over many tensors, f32 or f64 ----
// m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; p = p*decay - step_size * m / (sqrt(v)*rbc2 + eps)
void adamw(DType dtype, const AdamWTensor* tensors, int64_t count, double beta1, double beta2, double eps);

}  // namespace loom::kernels::cuda
