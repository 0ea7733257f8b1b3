// loom plot: the curves of one or several runs (their metrics.jsonl) drawn into one PNG, a panel per
// metric, the runs overlaid in colours (a run beside its baseline).
#pragma once
#include <map>
#include <string>
#include <vector>

namespace loom {

struct RunCurves {
  std::string name;  // the run directory's name
  std::map<std::string, std::vector<std::pair<double, double>>> series;  // metric -> (step, value), in step order
};

// A run directory's metrics.jsonl (or the file itself). Lines of an interrupted run that a resume
// wrote again replace the earlier ones; null values (non-finite) are gaps. A missing or unreadable
// file, or one with no metric, is a loom::Error naming it.
RunCurves read_curves(const std::string& run_dir);

// The metrics to draw: `wanted` (globs, '*' any run of characters) in their order, or by default the
// loss, its parts, the learning rate and every evaluation metric but counts, at most `max_panels`.
std::vector<std::string> choose_metrics(const std::vector<RunCurves>& runs, const std::vector<std::string>& wanted,
                                        size_t max_panels = 12);

// Draws the metrics of `runs` into a PNG at `out` (written through a temporary file and a rename).
void plot_curves(const std::vector<RunCurves>& runs, const std::vector<std::string>& metrics, const std::string& out);

}  // namespace loom
