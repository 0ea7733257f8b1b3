// Image transforms applied per example by the loader: optional Inception-style random resized crop,
// bilinear resize, horizontal flip, per-channel normalisation. All randomness comes from the `seed`
// given to apply() (a Philox stream), so an example's augmentation never depends on thread scheduling.
#pragma once
#include <cstdint>
#include <vector>
#include "core/tensor.h"

namespace loom::data {

struct ImageTransform {
  int64_t size = 0;                    // output H = W (0: keep the input size); bilinear resize
  bool random_resized_crop = false;    // Inception-style crop, scale range below, ratio 3/4..4/3
  double crop_scale_min = 0.08, crop_scale_max = 1.0;
  bool hflip = false;                  // flip left-right with probability 1/2
  std::vector<double> mean{0.5}, std{0.5};  // per channel (one value broadcasts)

  // image: f32 [C, H, W]. Returns a new f32 [C, size, size] (or [C, H, W] when size is 0).
  // Deterministic given seed; uses no randomness when random_resized_crop and hflip are off.
  Tensor apply(const Tensor& image, uint64_t seed) const;
  // Throws loom::Error for an impossible configuration (bad scale range, mean/std sizes, zero std).
  void validate(int64_t channels) const;
};

// Bilinear resampling of the box (top, left, height, width) of a contiguous f32 [C, H, W] image to
// [C, out_h, out_w], with half-pixel centres (PyTorch's align_corners=False, no antialiasing) and
// sampling clamped to the box.
Tensor resize_bilinear(const Tensor& image, int64_t top, int64_t left, int64_t height, int64_t width,
                       int64_t out_h, int64_t out_w);

}  // namespace loom::data
