#include "layers/mae.h"

#include <algorithm>
#include <cmath>

namespace loom {

Masking random_masking(const Tensor& x, double ratio, const Tensor& noise) {
  if (x.dim() != 3 || noise.dim() != 2 || noise.size(0) != x.size(0) || noise.size(1) != x.size(1))
    throw OpError(str_cat("random_masking: x must be [B, N, W] and noise [B, N], got x: ", x.describe(), ", noise: ",
                          noise.describe()));
  if (!(ratio >= 0 && ratio < 1)) throw OpError(str_cat("random_masking: ratio must be in [0, 1), got ", ratio));
  const int64_t B = x.size(0), N = x.size(1), W = x.size(2);
  const int64_t K = int64_t(double(N) * (1.0 - ratio));
  if (K < 1) throw OpError(str_cat("random_masking: ratio ", ratio, " keeps no token of ", N));
  Masking m;
  Tensor ids_shuffle = ops::argsort(noise, 1);  // ascending: the smallest noise is kept
  m.ids_restore = ops::argsort(ids_shuffle, 1);
  m.ids_keep = ids_shuffle.narrow(1, 0, K).contiguous();
  m.kept = ops::gather(x, 1, m.ids_keep.reshape({B, K, 1}).expand({B, K, W}).contiguous());
  // Token n is masked exactly when its place in the shuffled order is past the kept prefix.
  m.mask = ops::ge(m.ids_restore, Tensor::scalar(double(K), DType::i64, x.device())).to(x.dtype());
  return m;
}

Tensor mask_noise(int64_t B, int64_t gh, int64_t gw, const std::string& masking, Generator& gen, Device device) {
  const int64_t N = gh * gw;
  if (masking == "random") return ops::rand({B, N}, gen, DType::f64, device);
  LOOM_CHECK(masking == "time" || masking == "frequency", "mask_noise: masking must be random, time or frequency, got '",
             masking, "'");
  const bool time = masking == "time";
  const int64_t groups = time ? gw : gh;
  const std::vector<double> order = ops::rand({B, groups}, gen, DType::f64).to_vector<double>();
  const std::vector<double> within = ops::rand({B, N}, gen, DType::f64).to_vector<double>();
  std::vector<double> noise(static_cast<size_t>(B * N));
  std::vector<int64_t> idx(static_cast<size_t>(groups)), rank(static_cast<size_t>(groups));
  for (int64_t b = 0; b < B; ++b) {
    const double* u = order.data() + b * groups;
    for (int64_t g = 0; g < groups; ++g) idx[size_t(g)] = g;
    std::sort(idx.begin(), idx.end(), [&](int64_t x, int64_t y) { return u[x] < u[y] || (u[x] == u[y] && x < y); });
    for (int64_t r = 0; r < groups; ++r) rank[size_t(idx[size_t(r)])] = r;
    for (int64_t i = 0; i < gh; ++i)
      for (int64_t j = 0; j < gw; ++j) {
        const size_t n = size_t(b * N + i * gw + j);
        noise[n] = double(rank[size_t(time ? j : i)]) + within[n];
      }
  }
  return Tensor::from(noise, {B, N}, DType::f64).to(device);
}

MaeDecoder::MaeDecoder(const MaeDecoderConfig& c, Generator& gen) : config(c) {
  LOOM_CHECK(c.width > 0 && c.heads > 0 && c.width % c.heads == 0, "MaeDecoder: heads ", c.heads,
             " must divide width ", c.width);
  const int64_t n = c.grid_h * c.grid_w;
  embed = std::make_shared<Linear>(c.encoder_width, c.width, true, gen, -1.0);
  register_module("embed", embed);
  mask_token = register_parameter("mask_token", ops::mul(ops::randn({c.width}, gen), 0.02), NoDecay);
  if (c.pos_embed == "sincos")
    pos_embed = register_buffer("pos_embed", sincos_pos_embed_2d(c.width, c.grid_h, c.grid_w, true));
  else if (c.pos_embed == "learned")
    pos_embed = register_parameter("pos_embed", ops::mul(ops::randn({1 + n, c.width}, gen), 0.02), NoDecay);
  else
    throw Error(str_cat("MaeDecoder: pos_embed must be 'sincos' or 'learned', got '", c.pos_embed, "'"));
  blocks = make_blocks(*this, c.width, c.heads, c.mlp_ratio, c.layers, 0.0, 0.0, gen);
  norm = std::make_shared<LayerNorm>(c.width);
  register_module("norm", norm);
  pred = std::make_shared<Linear>(c.width, c.patch_dim, true, gen, -1.0);
  register_module("pred", pred);
}

Tensor MaeDecoder::forward(const Tensor& x, const Tensor& ids_restore, Generator* drop_gen) const {
  const int64_t N = config.grid_h * config.grid_w, D = config.width;
  if (x.dim() != 3 || x.size(2) != config.encoder_width || ids_restore.dim() != 2 || ids_restore.size(0) != x.size(0) ||
      ids_restore.size(1) != N || x.size(1) < 2 || x.size(1) > N + 1)
    throw OpError(str_cat("MaeDecoder: x must be [B, 1+K, ", config.encoder_width, "] with 1 <= K <= ", N,
                          " and ids_restore [B, ", N, "], got x: ", x.describe(), ", ids_restore: ", ids_restore.describe()));
  const int64_t B = x.size(0), K = x.size(1) - 1;
  Tensor y = embed->forward(x);  // [B, 1+K, D]
  Tensor masked = mask_token.reshape({1, 1, D}).expand({B, N - K, D});
  Tensor shuffled = ops::cat({y.narrow(1, 1, K), masked}, 1);  // [B, N, D] in shuffled order
  Tensor tokens = ops::gather(shuffled, 1, ids_restore.reshape({B, N, 1}).expand({B, N, D}).contiguous());
  Tensor h = ops::add(ops::cat({y.narrow(1, 0, 1), tokens}, 1), pos_embed);
  for (size_t i = 0; i < blocks->size(); ++i) h = (*blocks)[i].forward(h, {}, drop_gen);
  return pred->forward(norm->forward(h)).narrow(1, 1, N);
}

JointMaeDecoder::JointMaeDecoder(const JointMaeDecoderConfig& c, Generator& gen) : config(c) {
  LOOM_CHECK(c.width > 0 && c.heads > 0 && c.width % c.heads == 0 && c.width % 4 == 0, "JointMaeDecoder: heads ", c.heads,
             " must divide width ", c.width, ", and the width must be divisible by 4 (sin-cos positions)");
  LOOM_CHECK(c.parts.size() >= 2, "JointMaeDecoder: at least two modalities, got ", c.parts.size());
  embed = std::make_shared<Linear>(c.encoder_width, c.width, true, gen, -1.0);
  register_module("embed", embed);
  mask_token = register_parameter("mask_token", ops::mul(ops::randn({c.width}, gen), 0.02), NoDecay);
  for (const auto& p : c.parts) {
    pos.push_back(register_buffer("pos_" + p.modality, sincos_pos_embed_2d(c.width, p.grid_h, p.grid_w, false)));
    types.push_back(register_parameter("type_" + p.modality, ops::mul(ops::randn({c.width}, gen), 0.02), NoDecay));
  }
  blocks = make_blocks(*this, c.width, c.heads, c.mlp_ratio, c.layers, 0.0, 0.0, gen);
  norm = std::make_shared<LayerNorm>(c.width);
  register_module("norm", norm);
  for (const auto& p : c.parts) {
    preds.push_back(std::make_shared<Linear>(c.width, p.patch_dim, true, gen, -1.0));
    register_module("pred_" + p.modality, preds.back());
  }
}

std::vector<Tensor> JointMaeDecoder::forward(const std::vector<Tensor>& latents, const std::vector<Tensor>& ids_restore,
                                             Generator* drop_gen) const {
  const size_t M = config.parts.size();
  LOOM_CHECK(latents.size() == M && ids_restore.size() == M, "JointMaeDecoder: ", M, " modalities, given ", latents.size(),
             " latents and ", ids_restore.size(), " orders");
  const int64_t D = config.width;
  std::vector<Tensor> seq;
  std::vector<int64_t> lengths;
  for (size_t i = 0; i < M; ++i) {
    const auto& part = config.parts[i];
    const int64_t N = part.grid_h * part.grid_w;
    const Tensor& x = latents[i];
    if (x.dim() != 3 || x.size(2) != config.encoder_width || x.size(1) < 1 || x.size(1) > N || ids_restore[i].dim() != 2 ||
        ids_restore[i].size(0) != x.size(0) || ids_restore[i].size(1) != N)
      throw OpError(str_cat("JointMaeDecoder: the ", part.modality, " latents must be [B, K, ", config.encoder_width,
                            "] with 1 <= K <= ", N, " and ids_restore [B, ", N, "], got ", x.describe(), " and ",
                            ids_restore[i].describe()));
    const int64_t B = x.size(0), K = x.size(1);
    Tensor y = embed->forward(x);  // [B, K, D]
    Tensor shuffled = ops::cat({y, mask_token.reshape({1, 1, D}).expand({B, N - K, D})}, 1);
    Tensor tokens = ops::gather(shuffled, 1, ids_restore[i].reshape({B, N, 1}).expand({B, N, D}).contiguous());
    seq.push_back(ops::add(ops::add(tokens, pos[i]), types[i]));
    lengths.push_back(N);
  }
  Tensor h = ops::cat(seq, 1);
  for (size_t b = 0; b < blocks->size(); ++b) h = (*blocks)[b].forward(h, {}, drop_gen);
  h = norm->forward(h);
  std::vector<Tensor> out;
  int64_t at = 0;
  for (size_t i = 0; i < M; ++i) {
    out.push_back(preds[i]->forward(h.narrow(1, at, lengths[i])));
    at += lengths[i];
  }
  return out;
}

}  // namespace loom
