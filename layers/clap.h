// CLAP (LAION-CLAP, Wu et al. 2023): an audio tower and a text tower, each projected into a shared
// embedding space, and a learnable log temperature — a MultimodalModel (layers/towers.h). LAION-CLAP's
// projections are 2-layer MLPs with a ReLU (projection: mlp); projection: linear gives CLIP's bias-free
// linear map (as the Projection's fc1).
#pragma once
#include <cmath>
#include <memory>
#include <string>
#include "layers/audio.h"
#include "layers/bert.h"
#include "layers/transformer.h"
#include "layers/towers.h"

namespace loom {

struct ClapConfig {
  int64_t embed_dim = 64;
  AudioTransformerConfig audio;
  TextConfig text;
  std::string projection = "mlp";  // mlp | linear
  double init_temperature = 0.07;
};

// Children "audio" (AudioTransformer), "text" (TextTransformer or Bert), "audio_proj", "text_proj"
// (Projection); parameter "logit_scale" (f32 scalar, log(1 / init_temperature)).
class Clap : public MultimodalModel {
 public:
  Clap(const ClapConfig& c, Generator& gen);
  // spectrograms [B, 1, mel_bins, frames] -> L2-normalised [B, embed_dim].
  Tensor encode_audio(const Tensor& spec, Generator* drop_gen = nullptr) const;
  // tokens i64 [B, S] -> L2-normalised [B, embed_dim], pooled at the first eot_id of each row.
  Tensor encode_text(const Tensor& tokens, int64_t eot_id) const;

  std::shared_ptr<AudioTransformer> audio;
  std::shared_ptr<TextEncoder> text;  // TextTransformer or Bert (config.text.type)
  std::shared_ptr<Projection> audio_proj, text_proj;
  Tensor logit_scale;
  ClapConfig config;
};

}  // namespace loom
