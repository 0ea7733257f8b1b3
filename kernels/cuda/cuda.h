// Host-callable CUDA entry points. Includers need no CUDA headers. Every CUDA return code is
// checked; failures throw std::runtime_error naming the call and CUDA's message.
// This is the device-runtime skeleton; the op kernels arrive with the CUDA backend.
#pragma once
#include <cstddef>
#include "kernels/common/view.h"

namespace loom::kernels::cuda {

int device_count();  // 0 when there is no driver or no GPU
void* device_malloc(size_t nbytes, int device);
void device_free(void* ptr, int device);
enum class CopyKind { host_to_device, device_to_host, device_to_device };
void memcpy(void* dst, const void* src, size_t nbytes, CopyKind kind);  // synchronous
void fill(const View& dst, double value);  // contiguous dst; f32, f64, bf16, f16, i32, i64, u8, bool

}  // namespace loom::kernels::cuda
