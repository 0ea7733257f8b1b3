#include <gtest/gtest.h>
#include <cmath>
#include "data/transforms.h"
#include "helpers.h"

using loom::Shape;
using loom::Tensor;
using loom::data::ImageTransform;
using loom::data::resize_bilinear;
using loom::data::testing::error_of;

namespace {

std::vector<float> values(const Tensor& t) { return t.to_vector<float>(); }

// [C, H, W] with value c*100 + y*W + x.
Tensor ramp(int64_t C, int64_t H, int64_t W) {
  std::vector<float> v;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < H * W; ++i) v.push_back(float(c * 100 + i));
  return Tensor::from(v, {C, H, W});
}

ImageTransform plain() {
  ImageTransform t;
  t.mean = {0.0};
  t.std = {1.0};
  return t;
}

TEST(Transforms, UpsampleMatchesHandComputedBilinear) {
  // [[0, 1], [2, 3]] to 4x4 with half-pixel centres: sources -0.25 (clamped), 0.25, 0.75, 1.25
  // (clamped), i.e. weights w = {0, .25, .75, 1} on the second row/column; out = 2 w[y] + w[x].
  ImageTransform t = plain();
  t.size = 4;
  Tensor out = t.apply(ramp(1, 2, 2), 0);
  ASSERT_EQ(out.shape(), (Shape{1, 4, 4}));
  const float w[] = {0.0f, 0.25f, 0.75f, 1.0f};
  std::vector<float> v = values(out);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) EXPECT_FLOAT_EQ(v[size_t(y * 4 + x)], 2 * w[y] + w[x]) << y << "," << x;
}

TEST(Transforms, DownsampleMatchesHandComputedBilinear) {
  // 4x4 ramp (4y + x) to 2x2: sources 0.5 and 2.5 on each axis.
  ImageTransform t = plain();
  t.size = 2;
  std::vector<float> v = values(t.apply(ramp(1, 4, 4), 0));
  EXPECT_FLOAT_EQ(v[0], 2.5f);
  EXPECT_FLOAT_EQ(v[1], 4.5f);
  EXPECT_FLOAT_EQ(v[2], 10.5f);
  EXPECT_FLOAT_EQ(v[3], 12.5f);
}

TEST(Transforms, ResizeOfBoxClampsToTheBox) {
  // Box rows 1..2, cols 1..2 of the 4x4 ramp = [[5, 6], [9, 10]], upsampled to 4x4.
  Tensor out = resize_bilinear(ramp(1, 4, 4), 1, 1, 2, 2, 4, 4);
  const float w[] = {0.0f, 0.25f, 0.75f, 1.0f};
  std::vector<float> v = values(out);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) EXPECT_FLOAT_EQ(v[size_t(y * 4 + x)], 5 + 4 * w[y] + w[x]);
  EXPECT_NE(error_of([] { resize_bilinear(ramp(1, 4, 4), 3, 0, 2, 2, 4, 4); }).find("outside"), std::string::npos);
}

TEST(Transforms, SizeZeroKeepsAndNormalises) {
  ImageTransform t;  // mean 0.5, std 0.5: [0, 1] -> [-1, 1]
  Tensor img = Tensor::from(std::vector<float>{0.0f, 0.25f, 0.5f, 1.0f}, {1, 2, 2});
  std::vector<float> v = values(t.apply(img, 7));
  EXPECT_FLOAT_EQ(v[0], -1.0f);
  EXPECT_FLOAT_EQ(v[1], -0.5f);
  EXPECT_FLOAT_EQ(v[2], 0.0f);
  EXPECT_FLOAT_EQ(v[3], 1.0f);
  EXPECT_FLOAT_EQ(values(img)[0], 0.0f);  // the input is untouched

  ImageTransform rgb;
  rgb.mean = {0.1, 0.2, 0.3};
  rgb.std = {0.5, 0.25, 2.0};
  std::vector<float> c = values(rgb.apply(Tensor::ones({3, 1, 1}), 0));
  EXPECT_FLOAT_EQ(c[0], 0.9f / 0.5f);
  EXPECT_FLOAT_EQ(c[1], 0.8f / 0.25f);
  EXPECT_FLOAT_EQ(c[2], 0.7f / 2.0f);
}

TEST(Transforms, BadConfigurationsThrow) {
  ImageTransform t;
  t.mean = {0.1, 0.2};
  EXPECT_NE(error_of([&] { t.apply(Tensor::ones({3, 2, 2}), 0); }).find("mean has 2 values"), std::string::npos);
  t.mean = {0.5};
  t.std = {0.0};
  EXPECT_NE(error_of([&] { t.apply(Tensor::ones({1, 2, 2}), 0); }).find("std"), std::string::npos);
  t.std = {0.5};
  t.random_resized_crop = true;
  t.crop_scale_min = 0.9;
  t.crop_scale_max = 0.5;
  EXPECT_NE(error_of([&] { t.apply(Tensor::ones({1, 2, 2}), 0); }).find("crop scale"), std::string::npos);
}

TEST(Transforms, FlipReversesColumnsForAboutHalfTheSeeds) {
  ImageTransform t = plain();
  t.hflip = true;
  Tensor img = ramp(2, 3, 4);
  std::vector<float> src = values(img);
  int flipped = 0;
  for (uint64_t seed = 0; seed < 64; ++seed) {
    std::vector<float> v = values(t.apply(img, seed));
    bool same = v == src;
    bool mirrored = true;
    for (int64_t r = 0; r < 6; ++r)
      for (int64_t x = 0; x < 4; ++x) mirrored &= v[size_t(r * 4 + x)] == src[size_t(r * 4 + 3 - x)];
    EXPECT_TRUE(same || mirrored) << seed;
    flipped += mirrored;
  }
  EXPECT_GT(flipped, 16);
  EXPECT_LT(flipped, 48);
}

TEST(Transforms, RandomResizedCropIsDeterministicBySeed) {
  ImageTransform t = plain();
  t.size = 8;
  t.random_resized_crop = true;
  t.hflip = true;
  t.crop_scale_min = 0.2;
  Tensor img = ramp(1, 16, 16);
  std::vector<float> a = values(t.apply(img, 42));
  EXPECT_EQ(a, values(t.apply(img, 42)));
  EXPECT_EQ(t.apply(img, 42).shape(), (Shape{1, 8, 8}));
  int differ = 0;
  for (uint64_t seed = 0; seed < 8; ++seed) differ += values(t.apply(img, seed)) != a;
  EXPECT_GE(differ, 7);
  // Values stay inside the source range (bilinear never extrapolates).
  for (float x : a) EXPECT_TRUE(x >= 0.0f && x <= 255.0f);
}

TEST(Transforms, NoRandomnessWhenTrainingFlagsAreOff) {
  ImageTransform t = plain();
  t.size = 5;
  Tensor img = ramp(3, 7, 9);
  std::vector<float> a = values(t.apply(img, 1));
  for (uint64_t seed = 2; seed < 10; ++seed) EXPECT_EQ(values(t.apply(img, seed)), a);
}

TEST(Transforms, FullScaleCropOfSquareImageCanBeIdentity) {
  // scale [1, 1] on a square image: ratio must round back to the full image, so the crop is the
  // whole image unless the fallback kicks in, which is also the whole image.
  ImageTransform t = plain();
  t.random_resized_crop = true;
  t.crop_scale_min = t.crop_scale_max = 1.0;
  Tensor img = ramp(1, 6, 6);
  for (uint64_t seed = 0; seed < 8; ++seed) EXPECT_EQ(values(t.apply(img, seed)), values(img));
}

}  // namespace
