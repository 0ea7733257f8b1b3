// CLIP (Radford et al. 2021) in the open_clip layout: a ViT image tower and a causal text tower, each
// projected without bias to a shared embedding space, and a learnable log temperature — a
// MultimodalModel (layers/towers.h) whose typed members the Hugging Face import and export use.
#pragma once
#include <cmath>
#include <memory>
#include "layers/bert.h"
#include "layers/transformer.h"
#include "layers/towers.h"

namespace loom {

struct ClipConfig {
  int64_t embed_dim = 64;
  ViTConfig vision;
  TextConfig text;
  double init_temperature = 0.07;
};

// Children "visual" (ViT, modality image), "text" (TextTransformer or Bert), "visual_proj",
// "text_proj" (Linear, no bias, std width^-0.5); parameter "logit_scale" (f32 scalar, log(1 / init_temperature)).
class Clip : public MultimodalModel {
 public:
  Clip(const ClipConfig& c, Generator& gen);
  // images [B, C, H, W] -> L2-normalised [B, embed_dim]. drop_gen drives drop-path (training only).
  Tensor encode_image(const Tensor& images, Generator* drop_gen = nullptr) const;
  // tokens i64 [B, S] -> L2-normalised [B, embed_dim], pooled at the first eot_id of each row.
  Tensor encode_text(const Tensor& tokens, int64_t eot_id) const;

  std::shared_ptr<ViT> visual;
  std::shared_ptr<TextEncoder> text;  // TextTransformer or Bert (config.text.type)
  std::shared_ptr<Linear> visual_proj, text_proj;
  Tensor logit_scale;
  ClipConfig config;
};

}  // namespace loom
