// The audio tower: an AST-style transformer (Gong et al. 2021) over a log-mel spectrogram
// [B, 1, mel_bins, frames] (frequency on the height, time on the width, as data::Loader makes it),
// cut into patch x patch tiles over a non-square grid, with a class token and learned or 2-D sin-cos
// positions. It is a ViT on a one-channel "image", so the ViT's stages (embed_patches, prepend_cls,
// forward_blocks, block_outputs) and the MAE masking split serve it unchanged (AudioMAE).
// Non-overlapping patches only for now; AST's overlapping stride (10 with patch 16) is not built yet.
#pragma once
#include <string>
#include "layers/layers.h"

namespace loom {

struct AudioTransformerConfig {
  int64_t mel_bins = 128, frames = 1024, patch = 16, width = 768, layers = 12, heads = 12;
  double mlp_ratio = 4.0;
  std::string pos_embed = "learned";  // learned | sincos
  double layer_scale_init = 0.0, drop_path = 0.0;
  ViTConfig vit() const;  // the equivalent ViT: channels 1, image mel_bins x frames
  int64_t grid_f() const { return mel_bins / patch; }
  int64_t grid_t() const { return frames / patch; }
};

// Children and parameters as ViT's; forward(spec) is the class token [B, width].
class AudioTransformer : public ViT {
 public:
  AudioTransformer(const AudioTransformerConfig& c, Generator& gen);
  AudioTransformerConfig audio_config;
};

}  // namespace loom
