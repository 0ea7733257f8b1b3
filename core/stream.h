// Devices, streams and events for code above core/: the trainer waits for a device, the NCCL
// communicator overlaps its collectives with compute on a stream of its own. Handles are opaque
// (cudaStream_t, cudaEvent_t); a null stream is the legacy default stream. Without CUDA built in,
// synchronize() of the CPU is a no-op and every CUDA call throws loom::Error naming itself.
#pragma once
#include "core/device.h"

namespace loom::gpu {

using StreamHandle = void*;
using EventHandle = void*;

void set_device(int index);     // the calling thread's current CUDA device (ops launch on it)
StreamHandle current_stream();  // the calling thread's
StreamHandle stream_create();   // non-blocking
void stream_destroy(StreamHandle stream);
void stream_synchronize(StreamHandle stream);
EventHandle event_create();     // without timing
void event_destroy(EventHandle event);
void event_record(EventHandle event, StreamHandle stream);
void stream_wait_event(StreamHandle stream, EventHandle event);

}  // namespace loom::gpu

namespace loom {

void synchronize(Device device);  // waits for everything queued on a CUDA device; nothing to wait for on the CPU
// The library the CPU's f32 GEMM uses ("onednn" or "openblas"), as loom bench reports it.
const char* cpu_gemm_library();

}  // namespace loom
