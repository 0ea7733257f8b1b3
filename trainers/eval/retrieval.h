// Zero-shot classification and retrieval for a two-tower contrastive model (CLIP: image-text, CLAP:
// audio-text) over a manifest. Names as in metrics.jsonl, with X the non-text side's letter (i for
// images, a for audio): eval/zeroshot_top1, eval/zeroshot_top5, eval/X2t_r{1,5,10}, eval/t2X_r{1,5,10},
// eval/X2t_map10, eval/t2X_map10, eval/samples.
#pragma once
#include <functional>
#include <string>
#include <vector>
#include "trainers/tasks/task.h"

namespace loom {

struct ClipEvalOptions {
  bool zeroshot = false, retrieval = false;
  std::string zeroshot_labels;                 // class names, one per line
  std::vector<std::string> zeroshot_templates;  // "a photo of a {}."
  int64_t retrieval_samples = 1000;             // the first N evaluation pairs
};

// What evaluation needs of a two-tower model.
struct ContrastiveTowers {
  Module* model = nullptr;  // switched to eval mode for the evaluation
  std::string key;          // the batch key of the non-text side: "image" | "audio"
  std::string letter;       // "i" | "a" (metric names)
  std::function<Tensor(const Tensor&)> encode;       // inputs -> L2-normalised [B, E]
  std::function<Tensor(const Tensor&)> encode_text;  // token ids -> L2-normalised [B, E]
  std::function<void(data::LoaderConfig&)> configure;  // the task's loader settings
  int64_t context = 0;
};

Metrics evaluate_contrastive(const ContrastiveTowers& towers, const data::BpeTokenizer& tok, const ClipEvalOptions& opt,
                             const DataSpec& data, int64_t max_samples);

// Recall@1/5/10 of rows against columns of `sim` [n, n]; column j is a positive for row i when
// group[i] == group[j] (the same caption text). Keys prefix + "1", "5", "10".
Metrics recall_at(const Tensor& sim, const std::vector<int64_t>& group, const std::string& prefix);

// Mean average precision at 10 of rows against columns (LAION-CLAP's mAP@10), positives as in
// recall_at: per row, the sum over the top 10 columns of precision@k at each positive, divided by
// min(10, positives); ties between a positive and a negative count against the positive.
double map_at_10(const Tensor& sim, const std::vector<int64_t>& group);

}  // namespace loom
