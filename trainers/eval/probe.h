// Linear probe and k-NN evaluation of any image encoder (or of raw pixels): features of a training
// split and a test split with the encoder frozen, then
//   eval/linear_top1 — a linear classifier trained here on standardised features (MAE's probe puts a
//                      BatchNorm without affine before its head; this is the same normalisation), with
//                      a small weight-decay sweep chosen on a held-out tenth of the training features;
//   eval/knn_top1    — k-nearest neighbours by cosine similarity with temperature-weighted votes
//                      (DINO: weight exp(s / T), k = 20, T = 0.07).
#pragma once
#include <functional>
#include <string>
#include <vector>
#include "data/text_tokenizer.h"
#include "trainers/data_spec.h"
#include "layers/transformer.h"

namespace loom {

struct ProbeOptions {
  std::string train_data = "train";  // a section of data: (its evaluation transform is used, no augmentation)
  int64_t train_samples = 10000;     // the first N of the training split (0: all)
  int64_t test_samples = 0;          // the first N of the evaluation data (0: all)
  std::string features = "encoder";  // encoder | pixels (the flattened input, a baseline)
  std::string pool = "cls";          // cls | mean (of the patch tokens)
  int64_t blocks = 1;                // features of the last N blocks, concatenated (DINOv2's linear eval)
  bool linear = true, knn = true;
  int64_t knn_k = 20;
  double knn_temperature = 0.07;
  int64_t epochs = 40;
  double lr = 1e-2;
  std::vector<double> weight_decays{0.0, 1e-4, 1e-3, 1e-2};
};

// A function from a batch of inputs (images [B, C, H, W], spectrograms [B, 1, F, T]) to features [B, D].
using FeatureFn = std::function<Tensor(const Tensor& images)>;

struct FeatureSet {
  Tensor features;              // f32 [N, D]
  std::vector<int64_t> labels;  // labels >= 0 only; rows without a label are left out
};

// Features of the first `limit` labelled examples of `data` (0: all), loaded with `loader` settings;
// `key` is the batch key the feature function reads ("image" or "audio").
// Features of a ViT (an image or audio tower) for the probe: its class token (or the mean of its patch
// tokens) after each of its last `o.blocks` blocks (through the final LayerNorm, concatenated), or raw
// pixels. The function holds `v` by reference.
FeatureFn vit_features(const ViT& v, const ProbeOptions& o);
FeatureSet extract_features(const FeatureFn& fn, const DataSpec& data, data::LoaderConfig loader, int64_t limit,
                            const std::string& key = "image");

// eval/knn_top1, eval/linear_top1, eval/linear_weight_decay (the chosen one), eval/probe_train_samples.
Metrics probe(const FeatureSet& train, const FeatureSet& test, const ProbeOptions& opt, uint64_t seed);

}  // namespace loom
