// loom stats: the mean and standard deviation of a data section's inputs as training sees them before
// normalisation — the numbers data.NAME.audio.{mean,std} and data.NAME.transform.{mean,std} take
// (AST, AudioMAE and CAV-MAE normalise their fbank by dataset statistics computed this way). Audio: the
// log-mel fbank after decoding, resampling and the duration policy (centred crops), every frame the clip
// makes; images: per channel, in [0, 1], after the resize to the tower's size. No augmentation.
#pragma once
#include <string>
#include <vector>
#include "trainers/recipe.h"

namespace loom {

struct InputStats {
  std::string key;                // "audio" | "image"
  std::vector<double> mean, std;  // per channel (audio: one)
  int64_t examples = 0, values = 0, skipped = 0;
};

// Over the first `max_examples` rows of data.`data_name` (0: all), in manifest order; one entry per
// input key the rows hold. Throws loom::Error naming the section when it has neither images nor audio.
std::vector<InputStats> input_stats(const Recipe& r, const std::string& data_name, int64_t max_examples);

}  // namespace loom
