#include "layers/vqkd.h"
#include <algorithm>
#include "core/autograd.h"

namespace loom {

VqKd::VqKd(const VqKdConfig& c, Generator& gen) : config(c) {
  LOOM_CHECK(c.codebook_size >= 2 && c.code_dim >= 1, "VqKd: codebook_size must be >= 2 and code_dim >= 1, got ",
             c.codebook_size, ", ", c.code_dim);
  LOOM_CHECK(c.decay > 0 && c.decay < 1, "VqKd: decay must be in (0, 1), got ", c.decay);
  proj_in = std::make_shared<Linear>(c.encoder_width, c.encoder_width, true, gen, 0.02);
  register_module("proj_in", proj_in);
  proj_out = std::make_shared<Linear>(c.encoder_width, c.code_dim, true, gen, 0.02);
  register_module("proj_out", proj_out);
  dec_embed = std::make_shared<Linear>(c.code_dim, c.decoder_width, true, gen, 0.02);
  register_module("dec_embed", dec_embed);
  dec_pos = register_parameter("dec_pos", ops::mul(ops::randn({c.grid_h * c.grid_w, c.decoder_width}, gen), 0.02), NoDecay);
  blocks = make_blocks(*this, c.decoder_width, c.decoder_heads, 4.0, c.decoder_layers, 0.0, 0.0, gen);
  dec_norm = std::make_shared<LayerNorm>(c.decoder_width);
  register_module("dec_norm", dec_norm);
  dec_out = std::make_shared<Linear>(c.decoder_width, c.teacher_width, true, gen, 0.02);
  register_module("dec_out", dec_out);
  codebook = register_buffer("codebook", ops::l2_normalize(ops::randn({c.codebook_size, c.code_dim}, gen), 1));
  ema_count = register_buffer("ema_count", Tensor::zeros({c.codebook_size}));
  ema_sum = register_buffer("ema_sum", codebook.clone());
  initialised_flag = register_buffer("initialised", Tensor::zeros({}));
}

Tensor VqKd::project(const Tensor& tokens) const {
  return ops::l2_normalize(proj_out->forward(ops::tanh(proj_in->forward(tokens))), -1);
}

Tensor VqKd::lookup(const Tensor& z) const {
  NoGradGuard ng;
  const int64_t d = config.code_dim;
  Shape rows(z.shape().begin(), z.shape().end() - 1);
  Tensor sim = ops::matmul(z.detach().reshape({-1, d}).to(codebook.dtype()), codebook.transpose(0, 1));  // [M, K]
  return ops::argmax(sim, 1).reshape(rows);
}

Tensor VqKd::codes(const Tensor& ids) const {
  Shape out = ids.shape();
  out.push_back(config.code_dim);
  return ops::index_select(codebook, 0, ids.reshape({-1})).reshape(out);
}

Tensor VqKd::decode(const Tensor& zq, Generator* drop_gen) const {
  Tensor x = ops::add(dec_embed->forward(zq), dec_pos);
  for (size_t i = 0; i < blocks->size(); ++i) x = (*blocks)[i].forward(x, {}, drop_gen);
  return dec_out->forward(dec_norm->forward(x));
}

bool VqKd::initialised() const { return initialised_flag.item<double>() != 0.0; }

void VqKd::batch_statistics(const Tensor& z, const Tensor& ids, Tensor& counts, Tensor& sums) const {
  NoGradGuard ng;
  const int64_t K = config.codebook_size;
  Tensor zf = z.detach().reshape({-1, config.code_dim}).to(DType::f32);
  Tensor onehot = ops::eq(ids.reshape({-1, 1}), Tensor::arange(K, DType::i64, ids.device()).reshape({1, K})).to(DType::f32);
  counts = ops::sum(onehot, {0});                          // [K]
  sums = ops::matmul(onehot.transpose(0, 1), zf);          // [K, d]
}

void VqKd::init_kmeans(const Tensor& z_in, Generator& gen, int iterations) {
  NoGradGuard ng;
  const int64_t K = config.codebook_size;
  Tensor z = z_in.detach().reshape({-1, config.code_dim}).to(DType::f32);
  const int64_t M = z.size(0);
  LOOM_CHECK(M > 0, "VqKd: k-means needs at least one vector");
  Tensor centers;
  if (M >= K) {
    centers = ops::index_select(z, 0, ops::randperm(M, gen).to(z.device()).narrow(0, 0, K));
  } else {
    // Fewer vectors than codes (a --check batch, a small first batch): each vector seeds ceil(K / M)
    // codes, jittered apart so that they are distinct; dead-code restarts spread them later.
    std::vector<int64_t> rows(static_cast<size_t>(K));
    for (int64_t k = 0; k < K; ++k) rows[size_t(k)] = k % M;
    const Tensor seeds = ops::index_select(z, 0, Tensor::from(rows, {K}).to(z.device()));
    const Tensor jitter = ops::mul(ops::randn({K, config.code_dim}, gen, DType::f32, z.device()), 0.01);
    centers = ops::l2_normalize(ops::add(seeds, jitter), 1);
  }
  Tensor counts, sums;
  for (int it = 0; it < iterations; ++it) {
    const Tensor ids = ops::argmax(ops::matmul(z, centers.transpose(0, 1)), 1);
    batch_statistics(z, ids, counts, sums);
    // An empty cluster keeps its centre.
    const Tensor empty = ops::eq(counts, 0.0).reshape({K, 1});
    centers = ops::l2_normalize(ops::where(empty, centers, sums), 1);
  }
  const Tensor ids = ops::argmax(ops::matmul(z, centers.transpose(0, 1)), 1);
  batch_statistics(z, ids, counts, sums);
  codebook.copy_(centers);
  ema_count.copy_(counts);
  ema_sum.copy_(ops::mul(centers, ops::clamp(counts, 1.0, std::nullopt).reshape({K, 1})));
  initialised_flag.fill_(1.0);
}

int64_t VqKd::ema_update(const Tensor& counts, const Tensor& sums, const Tensor& z_in, Generator& gen, double restart_below) {
  NoGradGuard ng;
  const int64_t K = config.codebook_size;
  const double a = config.decay;
  ema_count.copy_(ops::add(ops::mul(ema_count, a), ops::mul(counts.to(ema_count.dtype()), 1 - a)));
  ema_sum.copy_(ops::add(ops::mul(ema_sum, a), ops::mul(sums.to(ema_sum.dtype()), 1 - a)));
  // Dead codes (hardly chosen for a long while) restart at vectors of this batch.
  const std::vector<float> count = ema_count.to_vector<float>();
  std::vector<int64_t> dead;
  for (int64_t k = 0; k < K; ++k)
    if (count[size_t(k)] < restart_below) dead.push_back(k);
  if (!dead.empty()) {
    Tensor z = z_in.detach().reshape({-1, config.code_dim}).to(DType::f32);
    const Tensor pick = ops::randperm(z.size(0), gen).narrow(0, 0, std::min<int64_t>(int64_t(dead.size()), z.size(0)));
    const std::vector<int64_t> rows = pick.to_vector<int64_t>();
    const Device dev = ema_sum.device();
    for (size_t i = 0; i < dead.size(); ++i) {
      const int64_t k = dead[i], r = rows[i % rows.size()];
      ema_sum.select(0, k).copy_(z.select(0, r).to(dev));
      ema_count.select(0, k).fill_(1.0);
    }
  }
  codebook.copy_(ops::l2_normalize(ema_sum, 1));
  return int64_t(dead.size());
}

}  // namespace loom
