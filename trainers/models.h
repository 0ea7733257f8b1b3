// The model factory, keyed on model.type: the root module every task of a recipe works on.
//   clip — image tower "visual" (ViT) + causal text tower "text", projections, logit_scale (layers/clip.h)
//   vit  — an image tower "visual" alone (MAE pretraining, linear probes)
//   clap — audio tower "audio" (AudioTransformer) + causal text tower "text", projections, logit_scale
//          (layers/clap.h)
//   ast  — an audio tower "audio" alone (AudioMAE pretraining, linear probes)
// Tasks find towers by child name (trainers/tasks/task.h: tower<M>) and may add heads of their own.
#pragma once
#include <memory>
#include "layers/clap.h"
#include "layers/clip.h"
#include "trainers/config.h"

namespace loom {

struct ModelSpec {
  std::string type = "clip";
  ClipConfig clip;  // clip and vit: vision; clip: text and embed_dim
  ClapConfig clap;  // clap and ast: audio; clap: text, embed_dim, projection
  bool has_text() const { return type == "clip" || type == "clap"; }
  // Built from `gen` in a fixed order (the same seed gives the same weights).
  std::shared_ptr<Module> build(Generator& gen) const;
};

// The root of type vit: one child, "visual".
class VisionModel : public Module {
 public:
  VisionModel(const ViTConfig& c, Generator& gen);
  std::shared_ptr<ViT> visual;
};

// The root of type ast: one child, "audio".
class AudioModel : public Module {
 public:
  AudioModel(const AudioTransformerConfig& c, Generator& gen);
  std::shared_ptr<AudioTransformer> audio;
};

// Reads model.* (vocab size comes from the tokenizer later; temperature from the contrastive task).
ModelSpec parse_model(const Config& c);

}  // namespace loom
