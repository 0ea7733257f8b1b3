// A recipe, read strictly from YAML (trainers/config.h). Today: the contrastive task on a CLIP
// model; the sections mirror ../shared/DESIGN.md §6.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>
#include "data/transforms.h"
#include "layers/clip.h"
#include "losses/contrastive.h"
#include "trainers/config.h"
#include "trainers/optim.h"

namespace loom {

struct DataSpec {
  std::string manifest;
  int64_t batch_size = 128;
  int workers = 2;
  std::string on_error = "skip";  // skip | fail
  data::ImageTransform transform;
};

struct InitFrom {
  std::string path;                            // a checkpoint directory or a .safetensors file
  std::map<std::string, std::string> remap;    // key prefix -> new prefix, applied in order of length
  bool strict = true;
};

struct Recipe {
  std::string name;
  uint64_t seed = 0;
  ClipConfig model;
  int64_t vocab_size = 512;
  std::string tokenizer_train_on;

  std::string loss = "infonce";  // infonce | triplet
  ContrastiveOptions contrastive;
  double triplet_margin = 0.2;

  DataSpec train_data, eval_data;
  bool has_eval_data = false;
  InitFrom init_from;

  AdamWConfig optim;
  ScheduleConfig schedule;

  int64_t steps = 0, epochs = 0;  // exactly one is set; epochs become steps once the data is known
  int64_t grad_accum = 1, checkpoint_every = 0, keep = 2, log_every = 10;
  double clip_grad_norm = 0.0;
  std::string device = "cpu", precision = "fp32";
  int threads = 0;  // 0: OpenMP's default

  int64_t eval_every = 0;
  bool zeroshot = false, retrieval = false;
  std::string zeroshot_labels;
  std::vector<std::string> zeroshot_templates;
  int64_t retrieval_samples = 1000, eval_max_samples = 0;

  // Reads and validates everything (types, choices, files, shapes) and rejects unknown keys.
  static Recipe from(const Config& c);
};

}  // namespace loom
