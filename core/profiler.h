// An op-level profiler for `loom bench --profile`: wall time, calls and bytes allocated per op
// (forward, and backward per gradient rule) and per kernel, on the thread that started it.
//
// Attribution: an op's time includes the ops it calls (attention's matmuls count as attention);
// a gradient rule's time includes every op it runs. Kernels are attributed to the op around
// them. CUDA kernels are asynchronous, so on a GPU the figures are launch times unless the
// stream is synchronised. Off (the default) it costs one thread-local flag test per op and kernel.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace loom::profiler {

struct Row {
  std::string name;     // op, "op (backward)" or kernel
  std::string op;       // for kernels: the op they ran in ("" outside any op)
  int64_t calls = 0;
  double seconds = 0;
  uint64_t bytes = 0;   // allocated while it ran (ops only), not counting nested op frames twice
};

struct Report {
  std::vector<Row> ops;      // by time, largest first
  std::vector<Row> kernels;  // by time, largest first
};

// Starts collecting on the calling thread (clearing what was collected); other threads are not seen.
void start();
// Stops and returns what was collected since start().
Report stop();

namespace detail {
// Defined here, constant-initialised, so every includer reads it directly (an extern thread_local goes
// through a wrapper function, which UBSan misreads as a null load).
inline thread_local bool t_active = false;
// The innermost op on this thread, kept whether or not the profiler runs: errors of CUDA kernels
// (LOOM_CUDA_SYNC=1) name it.
inline thread_local const char* t_current_op = nullptr;
void enter(const char* name, bool backward);
void leave();
void enter_kernel(const char* name);
void leave_kernel();
void allocated(size_t bytes);
}  // namespace detail

inline void note_allocation(size_t bytes) {
  if (detail::t_active) detail::allocated(bytes);
}

// The frame of one op (backward = a gradient rule). Only the outermost op frame is timed.
class OpScope {
 public:
  explicit OpScope(const char* name, bool backward = false) : on_(detail::t_active), outer_(detail::t_current_op) {
    detail::t_current_op = name;
    if (on_) detail::enter(name, backward);
  }
  ~OpScope() {
    detail::t_current_op = outer_;
    if (on_) detail::leave();
  }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  bool on_;
  const char* outer_;
};

class KernelScope {
 public:
  explicit KernelScope(const char* name) : on_(detail::t_active) {
    if (on_) detail::enter_kernel(name);
  }
  ~KernelScope() {
    if (on_) detail::leave_kernel();
  }
  KernelScope(const KernelScope&) = delete;
  KernelScope& operator=(const KernelScope&) = delete;

 private:
  bool on_;
};

// The table `loom bench --profile` prints: each row's time per step and share of `step_seconds`.
std::string format_report(const Report& r, int64_t steps, double step_seconds, size_t max_rows = 30);

}  // namespace loom::profiler

#define LOOM_OP_SCOPE(name) ::loom::profiler::OpScope loom_op_scope_(name)
