#include "trainers/metrics.h"
#include <unistd.h>
#include <cmath>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include "core/json_integer.h"

namespace loom {
using json = nlohmann::json;

MetricsLog::MetricsLog(const std::string& path) {
  f_ = std::fopen(path.c_str(), "a");
  LOOM_CHECK(f_, "cannot open ", path, " for appending");
}
MetricsLog::~MetricsLog() { if (f_) std::fclose(f_); }

void MetricsLog::write(int64_t step, const Metrics& m, const std::string& stage) {
  json j;
  j["step"] = step;
  if (!stage.empty()) j["stage"] = stage;
  for (const auto& [k, v] : m) j[k] = std::isfinite(v) ? json(v) : json(nullptr);
  std::fprintf(f_, "%s\n", j.dump().c_str());
  std::fflush(f_);
}

void MetricsLog::truncate_after(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    try {
      if (json_int64(json::parse(line).at("step"), "step") <= step) kept += line + "\n";
    } catch (const std::exception&) {  // a torn last line from the crash
    }
  }
  in.close();
  std::ofstream out(path, std::ios::trunc);
  out << kept;
}

std::string hms(double seconds) {
  const int64_t s = int64_t(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  return buf;
}

Progress::Progress() : tty_(isatty(fileno(stderr))) {}

void Progress::report(int64_t step, int64_t total, const std::string& stage, double loss, double lr, double sps,
                      double eta) {
  char line[320];
  std::snprintf(line, sizeof line, "%s%sstep %lld/%lld  loss %.4f  lr %.2e  %.1f samples/s  ETA %s", stage.c_str(),
                stage.empty() ? "" : "  ", static_cast<long long>(step), static_cast<long long>(total), loss, lr, sps,
                hms(eta).c_str());
  if (tty_) {
    const int width = 24, filled = int(double(width) * double(step) / double(std::max<int64_t>(1, total)));
    std::cerr << "\r[" << std::string(size_t(filled), '#') << std::string(size_t(width - filled), ' ') << "] " << line
              << std::flush;
    open_ = true;
    if (step == total) finish_line();
  } else {
    std::cerr << line << "\n";
  }
}

void Progress::finish_line() {
  if (tty_ && open_) std::cerr << "\n";
  open_ = false;
}

}  // namespace loom
