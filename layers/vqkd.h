// BEiT v2's visual tokenizer head (VQ-KD, Peng et al. 2022) over an encoder's patch tokens: a
// projection into a small code space, l2-normalised; a codebook of l2-normalised codes, looked up by
// cosine similarity and kept by exponential moving averages (no gradient reaches it; k-means starts
// it, dead codes restart from the batch); and a decoder from the quantised codes to the features of a
// frozen teacher. The straight-through estimator and the losses live in the task
// (trainers/tasks/vqkd.cpp); this module holds the weights and the codebook arithmetic.
#pragma once
#include <memory>
#include "layers/transformer.h"

namespace loom {

struct VqKdConfig {
  int64_t encoder_width = 128, code_dim = 32, codebook_size = 256;
  int64_t grid_h = 7, grid_w = 7;            // the encoder's patch grid (the decoder's positions)
  int64_t decoder_width = 128, decoder_layers = 1, decoder_heads = 4;
  int64_t teacher_width = 128;               // the decoder regresses features this wide
  double decay = 0.99;                       // of the codebook's moving averages
};

// Children: proj_in, proj_out (encoder width -> width -> code_dim, tanh between, as BEiT v2's
// encode_task_layer), dec_embed (code_dim -> decoder width), blocks, dec_norm, dec_out (-> teacher
// width); parameter dec_pos [N, decoder width]; buffers codebook [K, d], ema_count [K], ema_sum [K, d],
// initialised [] (1 once k-means has run).
class VqKd : public Module {
 public:
  VqKd(const VqKdConfig& c, Generator& gen);
  // Patch tokens [B, N, encoder_width] -> l2-normalised code-space vectors [B, N, code_dim].
  Tensor project(const Tensor& tokens) const;
  // The nearest code by cosine similarity of each vector of z [..., d] -> i64 [...] (no gradient).
  Tensor lookup(const Tensor& z) const;
  // The codes of `ids` (rows of the codebook, no gradient) [..., d].
  Tensor codes(const Tensor& ids) const;
  // Quantised vectors [B, N, d] -> predicted teacher features [B, N, teacher_width].
  Tensor decode(const Tensor& zq, Generator* drop_gen = nullptr) const;

  bool initialised() const;
  // Spherical k-means over the rows of z [M, d]: K distinct rows drawn by `gen` (when M < K, every row
  // seeds several slightly jittered codes), `iterations` rounds of assignment and renormalised means;
  // the codebook and its averages start there.
  void init_kmeans(const Tensor& z, Generator& gen, int iterations = 10);
  // One moving-average step from a batch's per-code counts [K] and sums of z [K, d] (already summed
  // over processes). Then every code whose average count fell below `restart_below` is restarted at a
  // row of `z` [M, d] drawn by `gen`; returns how many were.
  int64_t ema_update(const Tensor& counts, const Tensor& sums, const Tensor& z, Generator& gen, double restart_below);
  // Per-code counts [K] and sums [K, d] of z [M, d] assigned to ids [M] (no gradient).
  void batch_statistics(const Tensor& z, const Tensor& ids, Tensor& counts, Tensor& sums) const;

  VqKdConfig config;
  std::shared_ptr<Linear> proj_in, proj_out, dec_embed, dec_out;
  std::shared_ptr<ModuleList<Block>> blocks;
  std::shared_ptr<LayerNorm> dec_norm;
  Tensor dec_pos;
  Tensor codebook, ema_count, ema_sum, initialised_flag;
};

}  // namespace loom
