// Zero-shot classification and image<->text retrieval for a CLIP model over a manifest. Names as in
// metrics.jsonl: eval/zeroshot_top1, eval/zeroshot_top5, eval/i2t_r{1,5,10}, eval/t2i_r{1,5,10}, eval/samples.
#pragma once
#include <string>
#include <vector>
#include "layers/clip.h"
#include "trainers/tasks/task.h"

namespace loom {

struct ClipEvalOptions {
  bool zeroshot = false, retrieval = false;
  std::string zeroshot_labels;                 // class names, one per line
  std::vector<std::string> zeroshot_templates;  // "a photo of a {}."
  int64_t retrieval_samples = 1000;             // the first N evaluation pairs
};

Metrics evaluate_clip(Clip& model, const data::BpeTokenizer& tok, const ClipEvalOptions& opt, const DataSpec& data,
                      int64_t max_samples);

// Recall@1/5/10 of rows against columns of `sim` [n, n]; column j is a positive for row i when
// group[i] == group[j] (the same caption text). Keys prefix + "1", "5", "10".
Metrics recall_at(const Tensor& sim, const std::vector<int64_t>& group, const std::string& prefix);

}  // namespace loom
