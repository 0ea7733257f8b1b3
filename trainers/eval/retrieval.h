// Zero-shot classification and retrieval for a contrastive model over a manifest, for every pair of
// its towers with heads that the evaluation data has (trained together or not). Names as in
// metrics.jsonl, with X and Y the modalities' letters (i image, a audio, t text; another modality by
// its name, as its first letter would clash):
//   eval/X2Y_r{1,5,10}, eval/Y2X_r{1,5,10}, eval/X2Y_map10, eval/Y2X_map10 for each pair (text second,
//   otherwise in the model's order); eval/retrieval_clips (one pair) or eval/X2Y_clips (several);
//   eval/zeroshot_top1, eval/zeroshot_top5 (one modality besides text) or eval/<modality>_zeroshot_top1/5
//   (several); eval/samples.
// Retrieval queries every clip of X (rows naming the same file are one clip) against every row of Y,
// and every row of Y against every clip, with RetrievalTruth deciding hits.
#pragma once
#include <functional>
#include <string>
#include <vector>
#include "data/text_tokenizer.h"
#include "trainers/data_spec.h"

namespace loom {

struct ClipEvalOptions {
  bool zeroshot = false, retrieval = false;
  std::string zeroshot_labels;                 // class names, one per line
  std::vector<std::string> zeroshot_templates;  // "a photo of a {}."
  int64_t retrieval_samples = 1000;             // the first N evaluation pairs
};

// What evaluation and loom embed need of a contrastive model.
struct ContrastiveTowers {
  MultimodalModel* model = nullptr;     // switched to eval mode for the evaluation
  std::vector<std::string> modalities;  // the towers with heads into the shared space, in the model's order
  // The loader settings of the given modalities' towers (those the data has).
  void configure(data::LoaderConfig& c, const std::vector<std::string>& which) const;
  int64_t context() const;  // the text tower's (0 without one)
  std::string letter(const std::string& modality) const;  // i, a, t (metric names)
};

// tok may be null when no evaluated modality is text and zero-shot is off.
Metrics evaluate_contrastive(const ContrastiveTowers& towers, const data::TextTokenizer* tok, const ClipEvalOptions& opt,
                             const DataSpec& data, int64_t max_samples);

// Which captions are right for which clip (or image). Rows of the evaluation data that name the same
// file are one clip (AudioCaps and Clotho list a clip once per caption), and a caption is right for
// every clip it was written for — or, when captions repeat across clips (class prompts, canonical
// captions), for every clip that carries the same text. Between two modalities without text, the
// "caption" is the other side's file: an image is right for the sounds of its rows.
struct RetrievalTruth {
  std::vector<int64_t> clip_of;     // per row: the clip it belongs to (0..clips-1, by first appearance)
  std::vector<int64_t> caption_of;  // per row: its caption text's id
  std::vector<int64_t> clip_rows;   // per clip: its first row (whose features stand for the clip)
  // per clip: the caption ids written for it
  std::vector<std::vector<int64_t>> clip_captions;
  // From each row's file and caption text.
  static RetrievalTruth from(const std::vector<std::string>& files, const std::vector<std::string>& captions);
  int64_t clips() const { return int64_t(clip_rows.size()); }
  bool right(int64_t clip, int64_t row) const;  // is row's caption right for the clip?
};

// Recall@1/5/10 of queries (rows of `sim`) against candidates (columns); `positive(q, c)` says which
// candidates are right. rank = wrong candidates scoring at least as high as the best right one (ties
// count against it, so a collapsed model with equal scores everywhere scores 0, not 1). Keys prefix +
// "1", "5", "10".
Metrics recall_at(const Tensor& sim, const std::function<bool(int64_t, int64_t)>& positive, const std::string& prefix);

// Mean average precision at 10 of queries against candidates (LAION-CLAP's mAP@10): per query, the sum
// over the top 10 candidates of precision@k at each right one, divided by min(10, right ones); ties
// between a right and a wrong candidate count against the right one.
double map_at_10(const Tensor& sim, const std::function<bool(int64_t, int64_t)>& positive);

}  // namespace loom
