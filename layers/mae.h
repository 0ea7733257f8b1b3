// Masked autoencoding (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners"): per-sample
// random masking by argsort of noise, and the lightweight decoder that reconstructs every patch from
// the encoder's visible tokens plus a shared mask token.
#pragma once
#include <memory>
#include <string>
#include <vector>
#include "layers/transformer.h"

namespace loom {

struct Masking {
  Tensor kept;         // [B, K, W]: the tokens at ids_shuffle[:, :K], in that order
  Tensor mask;         // f32 [B, N]: 1 = masked (dropped), 0 = kept
  Tensor ids_restore;  // i64 [B, N]: position of token n in the shuffled order; un-shuffles
  Tensor ids_keep;     // i64 [B, K]
};

// Keeps K = floor(N * (1 - ratio)) tokens per sample: those with the smallest noise [B, N] (any
// float dtype; draw it uniform, e.g. ops::rand(.., DType::f64), so every subset is equally likely).
// x [B, N, W]. 0 <= ratio < 1 and K >= 1, else OpError.
Masking random_masking(const Tensor& x, double ratio, const Tensor& noise);

// Noise [B, grid_h * grid_w] (f64, on `device`) for random_masking that masks patches together, as
// AudioMAE's structured options do on a spectrogram (frequency on the grid's rows, time on its columns):
//   random     each patch on its own (MAE; AudioMAE's best for pretraining)
//   time       whole columns (every frequency of a time span)
//   frequency  whole rows (a band over the whole clip)
// A structured patch's noise is its column's (row's) rank in a random order of the columns (rows) plus a
// uniform draw in [0, 1) ordering the patches within it, so the kept patches are whole columns (rows)
// and at most one part of another.
Tensor mask_noise(int64_t batch, int64_t grid_h, int64_t grid_w, const std::string& masking, Generator& gen,
                  Device device = Device::cpu());

struct MaeDecoderConfig {
  int64_t encoder_width = 128, width = 64, layers = 2, heads = 4;
  double mlp_ratio = 4.0;
  int64_t grid_h = 7, grid_w = 7, patch_dim = 16;  // patch_dim = patch * patch * channels
  std::string pos_embed = "sincos";                 // sincos (fixed, as MAE) | learned
};

// Children "embed" (Linear encoder_width -> width), "blocks", "norm", "pred" (Linear width -> patch_dim);
// parameter "mask_token" [width] (N(0, 0.02²) as MAE); "pos_embed" [1 + N, width] (buffer or parameter).
class MaeDecoder : public Module {
 public:
  MaeDecoder(const MaeDecoderConfig& c, Generator& gen);
  // x [B, 1+K, encoder_width] (class token first), ids_restore [B, N] -> predicted patches [B, N, patch_dim].
  Tensor forward(const Tensor& x, const Tensor& ids_restore, Generator* drop_gen = nullptr) const;
  std::shared_ptr<Linear> embed, pred;
  Tensor mask_token, pos_embed;
  std::shared_ptr<ModuleList<Block>> blocks;
  std::shared_ptr<LayerNorm> norm;
  MaeDecoderConfig config;
};

// CAV-MAE's decoder (Gong et al. 2023): one decoder over every modality's tokens. Each modality's
// visible latents are embedded to the decoder width, completed with the shared mask token and put
// back in patch order, given their own fixed 2-D sin-cos positions and a learned modality-type
// embedding; the blocks run over the concatenation; a prediction head per modality.
struct JointMaeDecoderConfig {
  int64_t encoder_width = 128, width = 64, layers = 2, heads = 4;
  double mlp_ratio = 4.0;
  struct Part {
    std::string modality;
    int64_t grid_h = 0, grid_w = 0, patch_dim = 0;
  };
  std::vector<Part> parts;
};

// Children "embed", "blocks", "norm", "pred_<m>"; parameters "mask_token", "type_<m>"; buffers "pos_<m>".
class JointMaeDecoder : public Module {
 public:
  JointMaeDecoder(const JointMaeDecoderConfig& c, Generator& gen);
  // latents[i] [B, K_i, encoder_width] (the visible patches, no class token), ids_restore[i] [B, N_i]
  // -> predicted patches [B, N_i, patch_dim_i] for each part.
  std::vector<Tensor> forward(const std::vector<Tensor>& latents, const std::vector<Tensor>& ids_restore,
                              Generator* drop_gen = nullptr) const;
  std::shared_ptr<Linear> embed;
  Tensor mask_token;
  std::vector<Tensor> pos, types;
  std::shared_ptr<ModuleList<Block>> blocks;
  std::shared_ptr<LayerNorm> norm;
  std::vector<std::shared_ptr<Linear>> preds;
  JointMaeDecoderConfig config;
};

}  // namespace loom
