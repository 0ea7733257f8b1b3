// Training output: metrics.jsonl (one JSON object per line) and the progress line on stderr.
#pragma once
#include <cstdio>
#include <string>
#include "trainers/data_spec.h"

namespace loom {

// Appends {"step": N, ["stage": S,] "name": value, ...} lines to a file (non-finite values as null).
class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void write(int64_t step, const Metrics& m, const std::string& stage = "");
  // Drops lines of steps after `step` (lost with an interruption) and a torn last line.
  static void truncate_after(const std::string& path, int64_t step);

 private:
  std::FILE* f_ = nullptr;
};

// "[#####   ] step 10/600  loss 2.1  lr 1e-3  130 samples/s  ETA 4:10" redrawn in place on a
// terminal, one line per report otherwise.
class Progress {
 public:
  Progress();
  void report(int64_t step, int64_t total, const std::string& stage, double loss, double lr, double samples_per_s, double eta_s);
  void finish_line();  // before other output (evaluation results) on a terminal
 private:
  bool tty_;
  bool open_ = false;
};

std::string hms(double seconds);  // "4:05"

}  // namespace loom
