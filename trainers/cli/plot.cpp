// loom plot: runs' curves into one PNG.
#include <iostream>
#include <sstream>
#include "trainers/cli/cli.h"
#include "trainers/plot.h"

namespace loom::cli {
namespace {

int plot(const Args& a, Session&) {
  if (a.recipe.empty()) throw Error("usage: loom plot RUN_DIR [RUN_DIR ...] [--out FILE.png] [--metrics 'train/loss,eval/*']");
  std::vector<std::string> dirs{a.recipe};
  dirs.insert(dirs.end(), a.positional.begin(), a.positional.end());
  std::vector<RunCurves> runs;
  for (const std::string& d : dirs) runs.push_back(read_curves(d));
  std::vector<std::string> wanted;
  std::stringstream list(a.metrics);
  for (std::string m; std::getline(list, m, ',');)
    if (!m.empty()) wanted.push_back(m);
  const std::vector<std::string> metrics = choose_metrics(runs, wanted);
  const std::string out = a.out.empty() ? dirs.front() + "/curves.png" : a.out;
  plot_curves(runs, metrics, out);
  std::cout << "loom plot: " << metrics.size() << " metrics of " << runs.size() << " run" << (runs.size() > 1 ? "s" : "")
            << " -> " << out << "\n";
  return 0;
}

}  // namespace

const Command kPlot = {"plot", R"(  plot RUN_DIR [RUN_DIR ...] [--out FILE.png] [--metrics 'train/loss,eval/*']
        Draws the runs' metrics.jsonl into one PNG (default RUN_DIR/curves.png): a panel per metric,
        the runs overlaid (a run beside its baseline). By default the loss and its parts, the
        learning rate and the evaluation metrics; --metrics names others (globs).
)", plot};

}  // namespace loom::cli
