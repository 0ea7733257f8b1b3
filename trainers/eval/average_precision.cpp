#include "trainers/eval/average_precision.h"
#include <algorithm>
#include <cmath>
#include <numeric>
#include "core/error.h"

namespace loom {

double average_precision(const std::vector<float>& scores, const std::vector<bool>& positive) {
  LOOM_CHECK(scores.size() == positive.size(), "average_precision: ", scores.size(), " scores and ", positive.size(), " targets");
  const int64_t positives = std::count(positive.begin(), positive.end(), true);
  if (positives == 0) return std::nan("");
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  double ap = 0, recall_before = 0;
  int64_t tp = 0, seen = 0;
  for (size_t i = 0; i < order.size();) {
    size_t j = i;  // every example tied at this score is one threshold
    while (j < order.size() && scores[order[j]] == scores[order[i]]) {
      tp += positive[order[j]];
      ++seen;
      ++j;
    }
    const double recall = double(tp) / double(positives), precision = double(tp) / double(seen);
    ap += (recall - recall_before) * precision;
    recall_before = recall;
    i = j;
  }
  return ap;
}

MeanAveragePrecision mean_average_precision(const std::vector<float>& scores, const std::vector<bool>& targets, int64_t classes) {
  LOOM_CHECK(classes > 0 && scores.size() == targets.size() && scores.size() % size_t(classes) == 0,
             "mean_average_precision: ", scores.size(), " scores and ", targets.size(), " targets of ", classes, " classes");
  const size_t n = scores.size() / size_t(classes);
  MeanAveragePrecision out;
  double sum = 0;
  for (int64_t c = 0; c < classes; ++c) {
    std::vector<float> s(n);
    std::vector<bool> t(n);
    for (size_t i = 0; i < n; ++i) s[i] = scores[i * size_t(classes) + size_t(c)], t[i] = targets[i * size_t(classes) + size_t(c)];
    const double ap = average_precision(s, t);
    out.per_class.push_back(ap);
    if (!std::isnan(ap)) sum += ap, ++out.classes_scored;
  }
  out.map = out.classes_scored > 0 ? sum / double(out.classes_scored) : std::nan("");
  return out;
}

}  // namespace loom
