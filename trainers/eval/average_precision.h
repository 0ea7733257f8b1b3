// Average precision, the multi-label metric of AudioSet (mAP) as scikit-learn computes it
// (sklearn.metrics.average_precision_score): AP = sum over the distinct score thresholds, highest
// first, of (R_n - R_{n-1}) * P_n, with tied scores one threshold (no interpolation).
#pragma once
#include <cstdint>
#include <vector>

namespace loom {

// One class: the examples' scores and whether each is a positive. NaN when there is no positive.
double average_precision(const std::vector<float>& scores, const std::vector<bool>& positive);

struct MeanAveragePrecision {
  double map = 0;                  // the mean over the classes with at least one positive
  std::vector<double> per_class;   // NaN for a class without positives
  int64_t classes_scored = 0;
};
// scores [N * C] row-major, targets [N * C] (true: the class is present).
MeanAveragePrecision mean_average_precision(const std::vector<float>& scores, const std::vector<bool>& targets, int64_t classes);

}  // namespace loom
