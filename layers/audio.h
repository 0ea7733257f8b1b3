// The audio tower: an AST-style transformer (Gong et al. 2021) over a log-mel spectrogram
// [B, 1, mel_bins, frames] (frequency on the height, time on the width, as data::Loader makes it),
// cut into patch x patch tiles over a non-square grid, with a class token and learned or 2-D sin-cos
// positions. It is a ViT on a one-channel "image", so the ViT's stages (embed_patches, prepend_cls,
// forward_blocks, block_outputs) and the MAE masking split serve it unchanged (AudioMAE).
// `stride` below `patch` overlaps the patches as AST does (16 with stride 10: a 12 x 101 grid on
// 128 x 1024); MAE-style reconstruction needs non-overlapping ones.
#pragma once
#include <string>
#include "layers/transformer.h"

namespace loom {

struct AudioTransformerConfig {
  int64_t mel_bins = 128, frames = 1024, patch = 16, width = 768, layers = 12, heads = 12;
  int64_t stride = 0;  // 0: patch
  double mlp_ratio = 4.0;
  std::string pos_embed = "learned";  // learned | sincos
  double layer_scale_init = 0.0, drop_path = 0.0, patch_dropout = 0.0;
  int64_t checkpoint_every = 0;  // ViTConfig's
  ViTConfig vit() const;  // the equivalent ViT: channels 1, image mel_bins x frames
  int64_t grid_f() const { return vit().grid_h(); }
  int64_t grid_t() const { return vit().grid_w(); }
};

// Children and parameters as ViT's; forward(spec) is the class token [B, width].
class AudioTransformer : public ViT {
 public:
  AudioTransformer(const AudioTransformerConfig& c, Generator& gen);
  EncoderInput input() const override { return {"audio", 1, config.height(), config.width_px(), 0}; }
  AudioTransformerConfig audio_config;
};

}  // namespace loom
