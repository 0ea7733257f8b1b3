#include "layers/audio.h"

namespace loom {

ViTConfig AudioTransformerConfig::vit() const {
  ViTConfig v;
  v.channels = 1;
  v.image_size = v.image_height = mel_bins;
  v.image_width = frames;
  v.patch = patch;
  v.stride = stride;
  v.width = width;
  v.layers = layers;
  v.heads = heads;
  v.mlp_ratio = mlp_ratio;
  v.pos_embed = pos_embed;
  v.layer_scale_init = layer_scale_init;
  v.drop_path = drop_path;
  v.patch_dropout = patch_dropout;
  v.checkpoint_every = checkpoint_every;
  return v;
}

AudioTransformer::AudioTransformer(const AudioTransformerConfig& c, Generator& gen) : ViT(c.vit(), gen), audio_config(c) {
  LOOM_CHECK(c.vit().overlapping() || (c.mel_bins % c.patch == 0 && c.frames % c.patch == 0), "AudioTransformer: patch ",
             c.patch, " must divide mel_bins ", c.mel_bins, " and frames ", c.frames, " (or give a stride below it)");
}

}  // namespace loom
