#include "data/transforms.h"
#include <algorithm>
#include <cmath>
#include "core/error.h"
#include "data/random.h"

namespace loom::data {

Tensor resize_bilinear(const Tensor& image, int64_t top, int64_t left, int64_t height, int64_t width,
                       int64_t out_h, int64_t out_w) {
  LOOM_CHECK(image.dim() == 3 && image.dtype() == DType::f32, "resize_bilinear: expected f32 [C, H, W], got ", image.describe());
  const int64_t C = image.size(0), H = image.size(1), W = image.size(2);
  LOOM_CHECK(top >= 0 && left >= 0 && height > 0 && width > 0 && top + height <= H && left + width <= W,
             "resize_bilinear: box (top ", top, ", left ", left, ", ", height, "x", width, ") outside ", image.describe());
  LOOM_CHECK(out_h > 0 && out_w > 0, "resize_bilinear: output size must be positive, got ", out_h, "x", out_w);
  Tensor src = image.contiguous();
  const float* s = src.data_ptr<float>();
  Tensor out = Tensor::empty({C, out_h, out_w});
  float* o = out.data_ptr<float>();
  // Source coordinate of each output row/column: half-pixel centres, clamped to the box.
  auto axis = [](int64_t n_out, int64_t start, int64_t n_in, std::vector<int64_t>& i0, std::vector<int64_t>& i1,
                 std::vector<float>& frac) {
    i0.resize(n_out); i1.resize(n_out); frac.resize(n_out);
    const double scale = double(n_in) / double(n_out);
    for (int64_t d = 0; d < n_out; ++d) {
      double x = std::max((double(d) + 0.5) * scale - 0.5, 0.0);
      int64_t x0 = std::min(int64_t(x), n_in - 1);
      i0[d] = start + x0;
      i1[d] = start + std::min(x0 + 1, n_in - 1);
      frac[d] = float(x - double(x0));
    }
  };
  std::vector<int64_t> y0, y1, x0, x1;
  std::vector<float> fy, fx;
  axis(out_h, top, height, y0, y1, fy);
  axis(out_w, left, width, x0, x1, fx);
  for (int64_t c = 0; c < C; ++c) {
    const float* sc = s + c * H * W;
    for (int64_t y = 0; y < out_h; ++y) {
      const float* r0 = sc + y0[y] * W;
      const float* r1 = sc + y1[y] * W;
      const float wy = fy[y];
      float* orow = o + (c * out_h + y) * out_w;
      for (int64_t x = 0; x < out_w; ++x) {
        const float wx = fx[x];
        const float top_v = r0[x0[x]] + (r0[x1[x]] - r0[x0[x]]) * wx;
        const float bot_v = r1[x0[x]] + (r1[x1[x]] - r1[x0[x]]) * wx;
        orow[x] = top_v + (bot_v - top_v) * wy;
      }
    }
  }
  return out;
}

void ImageTransform::validate(int64_t channels) const {
  LOOM_CHECK(size >= 0, "image transform: size must be >= 0, got ", size);
  if (random_resized_crop)
    LOOM_CHECK(crop_scale_min > 0 && crop_scale_min <= crop_scale_max && crop_scale_max <= 1.0,
               "image transform: crop scale range must satisfy 0 < min <= max <= 1, got [", crop_scale_min, ", ",
               crop_scale_max, "]");
  auto per_channel = [&](const std::vector<double>& v, const char* name) {
    LOOM_CHECK(v.size() == 1 || int64_t(v.size()) == channels, "image transform: ", name, " has ", v.size(),
               " values; expected 1 or one per channel (", channels, ")");
  };
  per_channel(mean, "mean");
  per_channel(std, "std");
  for (double s : std) LOOM_CHECK(s != 0.0 && std::isfinite(s), "image transform: std values must be finite and non-zero, got ", s);
}

Tensor ImageTransform::apply(const Tensor& image, uint64_t seed) const {
  LOOM_CHECK(image.dim() == 3 && image.dtype() == DType::f32, "image transform: expected f32 [C, H, W], got ", image.describe());
  const int64_t C = image.size(0), H = image.size(1), W = image.size(2);
  validate(C);
  detail::Stream rng(detail::mix64(seed));

  // Crop box (torchvision's RandomResizedCrop: 10 tries, then a centre crop with the ratio clamped).
  int64_t top = 0, left = 0, h = H, w = W;
  if (random_resized_crop) {
    const double area = double(H) * double(W);
    const double log_lo = std::log(3.0 / 4.0), log_hi = std::log(4.0 / 3.0);
    bool found = false;
    for (int attempt = 0; attempt < 10 && !found; ++attempt) {
      const double target = area * (crop_scale_min + (crop_scale_max - crop_scale_min) * rng.uniform());
      const double ratio = std::exp(log_lo + (log_hi - log_lo) * rng.uniform());
      const int64_t cw = int64_t(std::lround(std::sqrt(target * ratio)));
      const int64_t ch = int64_t(std::lround(std::sqrt(target / ratio)));
      if (cw > 0 && ch > 0 && cw <= W && ch <= H) {
        top = int64_t(rng.below(uint64_t(H - ch + 1)));
        left = int64_t(rng.below(uint64_t(W - cw + 1)));
        h = ch; w = cw;
        found = true;
      }
    }
    if (!found) {
      const double in_ratio = double(W) / double(H);
      if (in_ratio < 3.0 / 4.0) { w = W; h = std::min(H, int64_t(std::lround(double(w) / (3.0 / 4.0)))); }
      else if (in_ratio > 4.0 / 3.0) { h = H; w = std::min(W, int64_t(std::lround(double(h) * (4.0 / 3.0)))); }
      else { h = H; w = W; }
      top = (H - h) / 2; left = (W - w) / 2;
    }
  }
  const int64_t out_h = size > 0 ? size : H, out_w = size > 0 ? size : W;
  Tensor out = (top == 0 && left == 0 && h == H && w == W && out_h == H && out_w == W)
                   ? image.contiguous().clone()
                   : resize_bilinear(image, top, left, h, w, out_h, out_w);

  float* o = out.data_ptr<float>();
  if (hflip && rng.uniform() < 0.5) {
    for (int64_t r = 0; r < C * out_h; ++r) std::reverse(o + r * out_w, o + (r + 1) * out_w);
  }
  for (int64_t c = 0; c < C; ++c) {
    const float m = float(mean[mean.size() == 1 ? 0 : c]);
    const float sd = float(std[std.size() == 1 ? 0 : c]);
    float* p = o + c * out_h * out_w;
    for (int64_t i = 0; i < out_h * out_w; ++i) p[i] = (p[i] - m) / sd;
  }
  return out;
}

}  // namespace loom::data
