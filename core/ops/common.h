// Shared argument checks for op implementations. Every failure throws OpError whose message names
// the op and lists the operands as "name: dtype[shape]".
#pragma once
#include <exception>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>
#include "core/autocast.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "core/profiler.h"
#include "kernels/cpu/cpu.h"
#ifdef LOOM_WITH_CUDA
#include "kernels/cuda/cuda.h"
#endif

// Calls kernel `fn` of the backend that holds `device`: kernels::cpu::fn or kernels::cuda::fn
// (the two APIs match one for one). Without CUDA no CUDA tensor can exist: its allocation throws.
// The profiler's scope is a temporary, so it closes when the call's full expression ends.
// A CUDA kernel's launch error names the op and kernel; with LOOM_CUDA_SYNC=1 the device is also
// synchronised after every kernel, so an asynchronous fault is reported by the op that caused it.
#ifdef LOOM_WITH_CUDA
#define LOOM_KERNEL(device, fn, ...)                                                                         \
  (::loom::profiler::KernelScope(#fn),                                                                       \
   (device).is_cuda() ? ::loom::ops::detail::cuda_kernel(#fn, [&] { return ::loom::kernels::cuda::fn(__VA_ARGS__); }) \
                      : ::loom::kernels::cpu::fn(__VA_ARGS__))
#else
#define LOOM_KERNEL(device, fn, ...) (::loom::profiler::KernelScope(#fn), ::loom::kernels::cpu::fn(__VA_ARGS__))
#endif

// A kernel that exists only on the CPU (the caller has checked the device).
#define LOOM_CPU_KERNEL(fn, ...) (::loom::profiler::KernelScope(#fn), ::loom::kernels::cpu::fn(__VA_ARGS__))

namespace loom::ops::detail {

#ifdef LOOM_WITH_CUDA
bool cuda_sync_each_kernel();  // LOOM_CUDA_SYNC=1, read once
void cuda_sync_after(const char* kernel);  // synchronises the device; a fault throws naming op and kernel
[[noreturn]] void cuda_kernel_failed(const char* kernel, const std::exception& e);

template <class Launch> auto cuda_kernel(const char* kernel, Launch&& launch) -> decltype(launch()) {
  try {
    if constexpr (std::is_void_v<decltype(launch())>) {
      launch();
      if (cuda_sync_each_kernel()) cuda_sync_after(kernel);
    } else {
      auto result = launch();
      if (cuda_sync_each_kernel()) cuda_sync_after(kernel);
      return result;
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    cuda_kernel_failed(kernel, e);
  }
}
#endif

struct Named {
  const char* name;
  const Tensor& t;
};

std::string describe_operands(std::initializer_list<Named> operands);
[[noreturn]] void fail(const char* op, const std::string& what, std::initializer_list<Named> operands);

void check_defined(const char* op, std::initializer_list<Named> operands);
void check_floating(const char* op, std::initializer_list<Named> operands);
void check_same_dtype(const char* op, std::initializer_list<Named> operands);
// Same device, and a device whose kernels are built.
void check_device(const char* op, std::initializer_list<Named> operands);
void check_index_dtype(const char* op, Named index);  // i32 or i64
// Every index in [0, bound) (or equal to `allowed`), else OpError naming the op and operands. On the
// CPU at once; on CUDA without waiting for the device (kernels::cuda::check_indices_deferred): the
// error is thrown by the next read of a tensor back to the host (once a step in training), unless
// LOOM_CUDA_SYNC=1, which checks at once. `what` must be a string literal.
void check_index_range(const char* op, const char* what, const Tensor& index, int64_t bound,
                       std::initializer_list<Named> operands, int64_t allowed = INT64_MIN);
// All of: defined, same device, same floating dtype.
void check_float_operands(const char* op, std::initializer_list<Named> operands);

// numpy broadcasting of two shapes; false if they do not broadcast (out is then unspecified).
bool broadcast_shape(const Shape& a, const Shape& b, Shape& out);

int wrap_dim(const char* op, int dim, int ndim);
uint32_t dims_mask(const char* op, const std::vector<int>& dims, int ndim);  // empty = all
// Shape with the masked dims kept as 1 (keepdim) or removed.
Shape reduced_shape(const Shape& s, uint32_t mask, bool keepdim);

// A kernel View of t broadcast (stride 0) to `shape`.
kernels::View broadcast_view(const Tensor& t, const Shape& shape);
// A View whose data is null (for optional kernel operands).
inline kernels::View null_view() { return kernels::View{}; }

// Acc-type (f32, or f64 for f64) used for kernel statistics.
inline DType stat_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

}  // namespace loom::ops::detail
