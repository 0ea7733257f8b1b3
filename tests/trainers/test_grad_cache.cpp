// GradCache (train.grad_cache): with 4 micro-batches of 8 the contrastive gradient is the one of a
// single batch of 32 (compared through AdamW's first moment after one step, (1 - beta1) times the
// gradient), while plain accumulation of per-micro-batch losses is not; a task that cannot cache
// features is a recipe error.
#include <gtest/gtest.h>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include "core/safetensors.h"
#include "tests/trainers/tiny_data.h"
#include "trainers/trainer.h"

using namespace loom;
namespace fs = std::filesystem;
using loom::testing::make_dataset;
using loom::testing::tiny_clip_recipe;

namespace {

// One step of the tiny CLIP at micro-batch `batch` with these train keys; AdamW's exp_avg by parameter.
std::map<std::string, std::vector<float>> first_moments(const fs::path& data, const std::string& name, int64_t batch,
                                                        const std::string& train) {
  Config c = Config::parse(tiny_clip_recipe(data, 1, "checkpoint_every: 1, log_every: 1" + train), "tiny.yaml");
  c.apply_override("data.train.workers=1");
  c.apply_override("data.train.batch_size=" + std::to_string(batch));
  Recipe r = Recipe::from(c);
  r.eval_every = 0;
  {
    Trainer t(r, c, (data / name).string(), false);
    t.train();
  }
  std::map<std::string, std::vector<float>> out;
  for (auto& [k, v] : load_safetensors((data / name / "checkpoints/latest/optimizer.safetensors").string()).tensors)
    if (k.size() > 8 && k.compare(k.size() - 8, 8, ".exp_avg") == 0) out[k] = v.to_vector<float>();
  return out;
}

// The largest difference over the tensor, relative to the tensor's largest magnitude.
double relative_gap(const std::vector<float>& a, const std::vector<float>& b) {
  double gap = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    gap = std::max(gap, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(a[i])));
  }
  return gap / scale;
}

}  // namespace

TEST(GradCache, FourMicroBatchesGiveTheFullBatchsGradient) {
  const fs::path data = make_dataset("grad_cache");
  const auto full = first_moments(data, "full", 32, "");
  const auto cached = first_moments(data, "cached", 8, ", grad_accum: 4, grad_cache: true");
  const auto plain = first_moments(data, "plain", 8, ", grad_accum: 4");
  ASSERT_FALSE(full.empty());
  ASSERT_TRUE(full.count("logit_scale.exp_avg"));
  double worst_cached = 0, worst_plain = 0;
  for (const auto& [k, v] : full) {
    ASSERT_TRUE(cached.count(k) && plain.count(k)) << k;
    worst_cached = std::max(worst_cached, relative_gap(v, cached.at(k)));
    worst_plain = std::max(worst_plain, relative_gap(v, plain.at(k)));
    EXPECT_LT(relative_gap(v, cached.at(k)), 2e-5) << k;
  }
  std::cerr << "grad cache: worst relative gap to the full batch " << worst_cached << "; plain accumulation " << worst_plain << "\n";
  EXPECT_GT(worst_plain, 1e-2) << "plain accumulation contrasts each micro-batch alone, so its gradient differs";
}

TEST(GradCache, OnlyAContrastiveTaskCachesFeatures) {
  const fs::path data = make_dataset("grad_cache_errors");
  std::string yaml = tiny_clip_recipe(data, 1, "grad_accum: 2, grad_cache: true");
  yaml.replace(yaml.find("task: {type: contrastive, temperature_init: 0.1}"), 48,
               "task: {type: mae, input: image, decoder: {width: 16, layers: 1, heads: 2}}");
  try {
    Config c = Config::parse(yaml, "tiny.yaml");
    Recipe::from(c);
    ADD_FAILURE() << "expected an error";
  } catch (const std::exception& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("tiny.yaml:"), std::string::npos) << m;
    EXPECT_NE(m.find("train.grad_cache: stage"), std::string::npos) << m;
    EXPECT_NE(m.find("task mae cannot cache features"), std::string::npos) << m;
  }
}
