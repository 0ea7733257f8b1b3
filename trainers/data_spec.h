// What tasks and evaluation share below both: a data section as the recipe gives it, the metrics
// they report, and the loader settings both derive from them.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>
#include "data/loader.h"
#include "data/manifest.h"
#include "layers/towers.h"

namespace loom {

using Metrics = std::map<std::string, double>;

struct DataSpec {
  std::string name;      // the section under data: ("train", "eval", "images", ...)
  std::string manifest;  // the JSONL path, or the shards' pattern (data.NAME.shards)
  bool shards = false;   // WebDataset tar shards (data/webdataset.h) rather than a JSONL manifest
  std::shared_ptr<const data::Manifest> rows;  // read when the recipe is read
  bool present = true;  // false only under loom train --check, for a manifest not on this machine (rows empty)
  int64_t batch_size = 128;
  int workers = 2;
  std::string on_error = "skip";  // skip | fail
  data::ImageTransform transform;
  data::AudioConfig audio;  // data.NAME.audio (defaults when absent)
  // data.NAME.read: the columns read from each row (image, audio, text, label); empty: all. The
  // others are dropped when the manifest is read, so one paired manifest can serve as images alone
  // or texts alone (VL-BEiT's monomodal data beside its pairs).
  std::vector<std::string> read;
  // data.NAME.sampler: balanced draws training rows with replacement, each in proportion to the sum
  // over its classes (label, or every one of labels) of 1 / that class's row count, so every class
  // comes up about equally often (AudioMAE's weighted sampler); null: a shuffle.
  std::shared_ptr<const std::vector<double>> sample_weights;
  // The batch keys this data can fill: "image", "audio", "text", "label" (some row has them); all of
  // them when the manifest is not present (so --check validates the rest of the recipe).
  std::vector<std::string> provides() const;
};

// Loader settings for `data` (training: shuffled, full batches, endless), before the task's configure().
data::LoaderConfig loader_config(const DataSpec& data, uint64_t seed, bool train);

// Loader settings a tower's input fixes: channels and image size, mel bins and frames, or the text context.
void configure_input(const EncoderInput& in, data::LoaderConfig& c);

}  // namespace loom
