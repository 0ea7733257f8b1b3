// Mixup and CutMix for task classify (trainers/tasks/mixup.h): the Beta draws' moments, a mixed
// batch's inputs and targets exactly as the lambda it reports says, and through the trainer a tiny
// ViT that still learns under both, resumes bitwise, and refuses CutMix on spectrograms.
#include <gtest/gtest.h>
#include <cmath>
#include <filesystem>
#include "tests/trainers/tiny_data.h"
#include "trainers/tasks/mixup.h"
#include "trainers/trainer.h"

using namespace loom;
namespace fs = std::filesystem;
using loom::testing::losses_of;
using loom::testing::make_dataset;
using loom::testing::replaced;

namespace {

std::string mix_recipe(const fs::path& d, int64_t steps, const std::string& mix, int64_t checkpoint_every = 0) {
  return "name: tiny_mixup\nseed: 5\n"
         "model:\n  type: vit\n  vision: {type: vit, image_size: 8, channels: 1, patch: 4, width: 32, layers: 2, heads: 2}\n"
         "task: {type: classify, classes: 4, label_smoothing: 0.1, pool: mean" + mix + "}\n"
         "data:\n"
         "  train: {manifest: " + (d / "train.jsonl").string() + ", batch_size: 32, workers: 1}\n"
         "  eval: {manifest: " + (d / "test.jsonl").string() + ", batch_size: 64, workers: 1}\n"
         "optim: {type: adamw, lr: 3.0e-3, weight_decay: 0.01}\n"
         "train: {steps: " + std::to_string(steps) + ", log_every: 1, checkpoint_every: " + std::to_string(checkpoint_every) + "}\n"
         "eval: {every: 0}\n";
}

}  // namespace

TEST(Mixup, BetaDrawsHaveTheirMoments) {
  for (double a : {0.3, 0.8, 1.0, 2.0}) {
    Generator gen(17);
    const int n = 8000;
    double s = 0, s2 = 0;
    for (int i = 0; i < n; ++i) {
      const double x = sample_beta(a, gen);
      ASSERT_TRUE(x >= 0 && x <= 1) << x;
      s += x, s2 += x * x;
    }
    const double mean = s / n, var = s2 / n - mean * mean, want_var = 1.0 / (4.0 * (2.0 * a + 1.0));
    EXPECT_NEAR(mean, 0.5, 4 * std::sqrt(want_var / n)) << "alpha " << a;
    EXPECT_NEAR(var, want_var, 0.1 * want_var) << "alpha " << a;
  }
}

TEST(Mixup, MixedBatchesAreWhatTheirLambdaSays) {
  Generator ig(2);
  const Tensor x = ops::randn({4, 1, 6, 8}, ig);
  std::vector<float> hot(16, 0.0f);
  for (int i = 0; i < 4; ++i) hot[size_t(i * 4 + i)] = 1.0f;
  const Tensor y = Tensor::from(hot, {4, 4});
  const std::vector<float> xv = x.to_vector<float>();
  auto at = [&](int64_t b, int64_t h, int64_t w) { return xv[size_t(b * 48 + h * 8 + w)]; };
  MixSpec mixup;
  mixup.mixup_alpha = 1.0;
  Generator g1(3);
  const Mixed m = mix_batch(x, y, mixup, g1);
  ASSERT_FALSE(m.cutmix);
  ASSERT_GT(m.lambda, 0.0);
  ASSERT_LT(m.lambda, 1.0);
  const std::vector<float> mv = m.inputs.to_vector<float>(), tv = m.targets.to_vector<float>();
  for (int64_t b = 0; b < 4; ++b) {
    for (int64_t h = 0; h < 6; ++h)
      for (int64_t w = 0; w < 8; ++w)
        EXPECT_NEAR(mv[size_t(b * 48 + h * 8 + w)], m.lambda * at(b, h, w) + (1 - m.lambda) * at(3 - b, h, w), 1e-6);
    EXPECT_NEAR(tv[size_t(b * 4 + b)], m.lambda, 1e-6);
    EXPECT_NEAR(tv[size_t(b * 4 + 3 - b)], 1 - m.lambda, 1e-6);
  }
  MixSpec cutmix;
  cutmix.cutmix_alpha = 1.0;
  Generator g2(4);
  Mixed c;
  for (int tries = 0; tries < 20 && (c.box[1] == c.box[0] || c.box[3] == c.box[2]); ++tries) c = mix_batch(x, y, cutmix, g2);
  ASSERT_TRUE(c.cutmix);
  ASSERT_GT((c.box[1] - c.box[0]) * (c.box[3] - c.box[2]), 0) << "a box in 20 tries";
  EXPECT_NEAR(c.lambda, 1.0 - double((c.box[1] - c.box[0]) * (c.box[3] - c.box[2])) / 48.0, 1e-12);
  const std::vector<float> cv = c.inputs.to_vector<float>(), ct = c.targets.to_vector<float>();
  for (int64_t b = 0; b < 4; ++b) {
    for (int64_t h = 0; h < 6; ++h)
      for (int64_t w = 0; w < 8; ++w) {
        const bool in = h >= c.box[0] && h < c.box[1] && w >= c.box[2] && w < c.box[3];
        EXPECT_EQ(cv[size_t(b * 48 + h * 8 + w)], in ? at(3 - b, h, w) : at(b, h, w)) << b << "," << h << "," << w;
      }
    EXPECT_NEAR(ct[size_t(b * 4 + b)], c.lambda, 1e-6);
  }
  // Off: the batch as it came.
  Generator g3(5);
  EXPECT_EQ(mix_batch(x, y, MixSpec{}, g3).inputs.to_vector<float>(), xv);
}

TEST(Mixup, TinyVitLearnsUnderMixupAndCutMixAndResumesBitwise) {
  const fs::path d = make_dataset("mixup");
  const std::string mix = ", mixup: 0.8, cutmix: 1.0";
  {
    Config c = Config::parse(mix_recipe(d, 60, mix), "mixup.yaml");
    Recipe r = Recipe::from(c);
    Trainer t(r, c, (d / "learn").string(), false);
    t.train();
    const Metrics m = t.evaluate();
    EXPECT_GT(m.at("eval/top1"), 0.9) << "held-out top-1 (chance 0.25)";
  }
  Config c = Config::parse(mix_recipe(d, 6, mix, 3), "mixup.yaml");
  Recipe r = Recipe::from(c);
  {
    Trainer t(r, c, (d / "straight").string(), false);
    t.train();
  }
  {
    Trainer t(r, c, (d / "resumed").string(), false);
    t.train(3);
  }
  {
    Trainer t(r, c, (d / "resumed").string(), true);
    t.train();
  }
  EXPECT_EQ(losses_of(d / "straight"), losses_of(d / "resumed"));
  // Errors before any work.
  auto error_of = [](const std::string& yaml) {
    try {
      Config cc = Config::parse(yaml, "mixup.yaml");
      Recipe::from(cc);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  std::string e = error_of(mix_recipe(d, 2, ", mixup: -1"));
  EXPECT_NE(e.find("mixup.yaml:6: task.mixup: must be >= 0"), std::string::npos) << e;
  const std::string ast = replaced(mix_recipe(d, 2, ", cutmix: 1.0"),
                                   "model:\n  type: vit\n  vision: {type: vit, image_size: 8, channels: 1, patch: 4, width: 32, layers: 2, heads: 2}\n",
                                   "model:\n  type: ast\n  audio: {type: ast, mel_bins: 16, frames: 16, patch: 4, width: 32, layers: 1, heads: 2}\n");
  e = error_of(ast);
  EXPECT_NE(e.find("task.cutmix: CutMix pastes image boxes; on spectrograms use mixup"), std::string::npos) << e;
}
