#include "core/profiler.h"
#include <algorithm>
#include <cstdio>
#include <map>
#include <sstream>
#include <utility>
#include "core/caching_allocator.h"

namespace loom::profiler {
namespace detail {



namespace {

using clock = std::chrono::steady_clock;

struct State {
  int depth = 0;  // op frames open; only the outermost is timed
  std::string op; // the outermost op's row name
  clock::time_point op_start;
  uint64_t op_bytes = 0;
  clock::time_point kernel_start;
  const char* kernel = nullptr;
  std::map<std::string, Row> ops;
  std::map<std::pair<std::string, std::string>, Row> kernels;
};

thread_local State t_state;

}  // namespace

void enter(const char* name, bool backward) {
  State& s = t_state;
  if (s.depth++ > 0) return;
  s.op = backward ? std::string(name) + " (backward)" : std::string(name);
  s.op_bytes = 0;
  s.op_start = clock::now();
}

void leave() {
  State& s = t_state;
  if (s.depth == 0 || --s.depth > 0) return;
  const double secs = std::chrono::duration<double>(clock::now() - s.op_start).count();
  Row& r = s.ops[s.op];
  if (r.name.empty()) r.name = s.op;
  r.calls += 1;
  r.seconds += secs;
  r.bytes += s.op_bytes;
  s.op.clear();
}

void enter_kernel(const char* name) {
  t_state.kernel = name;
  t_state.kernel_start = clock::now();
}

void leave_kernel() {
  State& s = t_state;
  if (!s.kernel) return;
  const double secs = std::chrono::duration<double>(clock::now() - s.kernel_start).count();
  Row& r = s.kernels[{s.kernel, s.depth > 0 ? s.op : std::string()}];
  if (r.name.empty()) {
    r.name = s.kernel;
    r.op = s.depth > 0 ? s.op : std::string();
  }
  r.calls += 1;
  r.seconds += secs;
  s.kernel = nullptr;
}

void allocated(size_t bytes) {
  State& s = t_state;
  if (s.depth > 0) s.op_bytes += bytes;
  else s.ops["(outside ops)"].bytes += bytes;
}

}  // namespace detail

void start() {
  detail::t_state = detail::State{};
  detail::t_active = true;
}

Report stop() {
  detail::t_active = false;
  Report r;
  for (auto& [k, row] : detail::t_state.ops) {
    Row copy = row;
    if (copy.name.empty()) copy.name = k;
    r.ops.push_back(copy);
  }
  for (auto& [k, row] : detail::t_state.kernels) r.kernels.push_back(row);
  auto by_time = [](const Row& a, const Row& b) { return a.seconds != b.seconds ? a.seconds > b.seconds : a.name < b.name; };
  std::sort(r.ops.begin(), r.ops.end(), by_time);
  std::sort(r.kernels.begin(), r.kernels.end(), by_time);
  detail::t_state = detail::State{};
  return r;
}

std::string format_report(const Report& r, int64_t steps, double step_seconds, size_t max_rows) {
  std::ostringstream o;
  const double n = double(std::max<int64_t>(1, steps));
  char line[256];
  auto table = [&](const std::vector<Row>& rows, bool kernels) {
    double total = 0;
    for (const Row& x : rows) total += x.seconds;
    std::snprintf(line, sizeof line, "%-44s %9s %11s %8s %12s\n", kernels ? "kernel [in op]" : "op", "calls/step",
                  "ms/step", "% step", kernels ? "" : "alloc/step");
    o << line;
    size_t shown = 0;
    double rest = 0;
    for (const Row& x : rows) {
      if (shown >= max_rows) {
        rest += x.seconds;
        continue;
      }
      ++shown;
      std::string name = kernels ? x.name + " [" + (x.op.empty() ? "-" : x.op) + "]" : x.name;
      if (name.size() > 44) name = name.substr(0, 41) + "...";
      std::snprintf(line, sizeof line, "%-44s %9.1f %11.3f %7.1f%% %12s\n", name.c_str(), double(x.calls) / n,
                    1e3 * x.seconds / n, 100 * x.seconds / std::max(1e-12, step_seconds * n),
                    kernels ? "" : format_bytes(size_t(double(x.bytes) / n)).c_str());
      o << line;
    }
    if (rest > 0) {
      std::snprintf(line, sizeof line, "%-44s %9s %11.3f %7.1f%%\n", "(other rows)", "", 1e3 * rest / n,
                    100 * rest / std::max(1e-12, step_seconds * n));
      o << line;
    }
    std::snprintf(line, sizeof line, "%-44s %9s %11.3f %7.1f%%\n", kernels ? "all kernels" : "all ops", "",
                  1e3 * total / n, 100 * total / std::max(1e-12, step_seconds * n));
    o << line;
    if (!kernels) {
      const double outside = step_seconds * n - total;
      std::snprintf(line, sizeof line, "%-44s %9s %11.3f %7.1f%%\n", "outside ops (loader wait, trainer)", "",
                    1e3 * outside / n, 100 * outside / std::max(1e-12, step_seconds * n));
      o << line;
    }
  };
  std::snprintf(line, sizeof line, "profile over %lld steps, %.3f ms per step\n\n", static_cast<long long>(steps),
                1e3 * step_seconds);
  o << line;
  table(r.ops, false);
  o << "\n";
  table(r.kernels, true);
  return o.str();
}

}  // namespace loom::profiler
