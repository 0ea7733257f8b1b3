#include "trainers/tasks/mixup.h"
#include <algorithm>
#include <cmath>
#include <numbers>
#include "core/error.h"

namespace loom {

double uniform01(Generator& gen) {
  const uint64_t c = gen.reserve(4);
  const Philox4 r = philox4x32(c, gen.seed());
  return double(((uint64_t(r.v[0]) << 32) | r.v[1]) >> 11) * (1.0 / 9007199254740992.0);
}

namespace {

double normal(Generator& gen) {  // Box-Muller
  const double u1 = 1.0 - uniform01(gen), u2 = uniform01(gen);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

double sample_gamma(double a, Generator& gen) {
  if (a < 1) return sample_gamma(a + 1, gen) * std::pow(1.0 - uniform01(gen), 1.0 / a);
  const double d = a - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    const double x = normal(gen), v0 = 1.0 + c * x;
    if (v0 <= 0) continue;
    const double v = v0 * v0 * v0, u = 1.0 - uniform01(gen);
    if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v;
  }
}

}  // namespace

double sample_beta(double alpha, Generator& gen) {
  const double x = sample_gamma(alpha, gen), y = sample_gamma(alpha, gen);
  return x / (x + y);
}

Mixed mix_batch(const Tensor& inputs, const Tensor& targets, const MixSpec& spec, Generator& gen) {
  LOOM_CHECK(inputs.dim() == 4 && targets.dim() == 2 && targets.size(0) == inputs.size(0), "mix_batch: inputs ",
             inputs.describe(), " and targets ", targets.describe(), " must be [B, C, H, W] and [B, K]");
  Mixed m;
  m.inputs = inputs;
  m.targets = targets;
  if (!spec.on() || uniform01(gen) >= spec.prob) return m;
  const bool cutmix = spec.cutmix_alpha > 0 && (spec.mixup_alpha <= 0 || uniform01(gen) < spec.switch_prob);
  const double lam = sample_beta(cutmix ? spec.cutmix_alpha : spec.mixup_alpha, gen);
  const int64_t B = inputs.size(0), H = inputs.size(2), W = inputs.size(3);
  std::vector<int64_t> rev(static_cast<size_t>(B));
  for (int64_t i = 0; i < B; ++i) rev[size_t(i)] = B - 1 - i;
  const Tensor order = Tensor::from(rev, {B});
  const Tensor partner = ops::index_select(inputs, 0, order.to(inputs.device()));
  const Tensor partner_targets = ops::index_select(targets, 0, order.to(targets.device()));
  if (cutmix) {  // timm's rand_bbox: a box of side sqrt(1 - lambda) of each, centred anywhere, clipped
    const double ratio = std::sqrt(1.0 - lam);
    const int64_t ch = int64_t(double(H) * ratio), cw = int64_t(double(W) * ratio);
    const int64_t cy = int64_t(uniform01(gen) * double(H)), cx = int64_t(uniform01(gen) * double(W));
    m.box[0] = std::clamp<int64_t>(cy - ch / 2, 0, H), m.box[1] = std::clamp<int64_t>(cy + ch / 2, 0, H);
    m.box[2] = std::clamp<int64_t>(cx - cw / 2, 0, W), m.box[3] = std::clamp<int64_t>(cx + cw / 2, 0, W);
    std::vector<float> in_box(size_t(H * W), 0.0f);
    for (int64_t y = m.box[0]; y < m.box[1]; ++y)
      for (int64_t x = m.box[2]; x < m.box[3]; ++x) in_box[size_t(y * W + x)] = 1.0f;
    const Tensor mask = Tensor::from(in_box, {1, 1, H, W}).to(inputs.dtype()).to(inputs.device());
    m.inputs = ops::add(ops::mul(inputs, ops::rsub(1.0, mask)), ops::mul(partner, mask));
    m.lambda = 1.0 - double((m.box[1] - m.box[0]) * (m.box[3] - m.box[2])) / double(H * W);
    m.cutmix = true;
  } else {
    m.lambda = lam;
    m.inputs = ops::add(ops::mul(inputs, lam), ops::mul(partner, 1.0 - lam));
  }
  m.targets = ops::add(ops::mul(targets, m.lambda), ops::mul(partner_targets, 1.0 - m.lambda));
  return m;
}

}  // namespace loom
