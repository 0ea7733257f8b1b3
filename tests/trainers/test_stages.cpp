// Stages and the MAE task through the trainer: frozen parameters stay bitwise unchanged, parameters
// unfrozen later do change, resume inside and across stages equals the uninterrupted run bitwise
// (with drop-path and augmentation, so random state must be restored), MAE learns and draws its
// reconstructions, the probe reports, and broken stage recipes stop with file, line and key.
#include <gtest/gtest.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include "core/safetensors.h"
#include "tests/trainers/tiny_data.h"
#include "trainers/trainer.h"

using namespace loom;
namespace fs = std::filesystem;
using loom::testing::config_error;
using loom::testing::losses_of;
using loom::testing::replaced;
using loom::testing::snapshot;
using loom::testing::make_dataset;

namespace {

std::string staged_recipe(const fs::path& data) {
  const std::string d = data.string();
  return "name: staged\nseed: 5\n"
         "model:\n  type: clip\n  embed_dim: 16\n"
         "  vision: {type: vit, image_size: 8, channels: 1, patch: 2, width: 32, layers: 2, heads: 2, drop_path: 0.1}\n"
         "  text: {type: transformer, context: 8, width: 32, layers: 1, heads: 2}\n"
         "tokenizer: {type: bpe, vocab_size: 64}\n"
         "data:\n"
         "  train: {manifest: " + d + "/train.jsonl, batch_size: 32, workers: 2,\n"
         "          transform: {random_resized_crop: true, crop_scale_min: 0.6, hflip: true}}\n"
         "  eval: {manifest: " + d + "/test.jsonl, batch_size: 64, workers: 1}\n"
         "optim: {type: adamw, lr: 3.0e-3, weight_decay: 0.01}\n"
         "schedule: {type: cosine, warmup_steps: 2}\n"
         "stages:\n"
         "  - {name: mae, task: {type: mae, decoder: {width: 16, layers: 1, heads: 2}}, steps: 6,\n"
         "     freeze: ['visual.blocks.0.*']}\n"
         "  - {name: clip, task: {type: contrastive, temperature_init: 0.1}, steps: 6, freeze: ['mae_decoder.*'],\n"
         "     optim: {lr: 1.0e-3}}\n"
         "train: {checkpoint_every: 0, keep: 0, log_every: 1}\n";
}

// Names matching `prefix` whose values are equal (want_equal) or differ between two snapshots.
void expect_params(const std::map<std::string, std::vector<float>>& a, const std::map<std::string, std::vector<float>>& b,
                   const std::string& prefix, bool want_equal, const std::string& when) {
  int seen = 0;
  for (auto& [k, v] : a) {
    if (k.rfind(prefix, 0) != 0 || k.find("pos_embed") != std::string::npos) continue;
    ++seen;
    if (want_equal) EXPECT_EQ(v, b.at(k)) << k << " changed " << when;
    else EXPECT_NE(v, b.at(k)) << k << " did not change " << when;
  }
  EXPECT_GT(seen, 0) << prefix;
}

}  // namespace

TEST(Stages, FrozenParametersStayAndUnfrozenOnesMove) {
  fs::path data = make_dataset("stages_freeze");
  Config c = Config::parse(staged_recipe(data), "staged.yaml");
  Recipe r = Recipe::from(c);
  Trainer t(r, c, (data / "run").string(), false);
  ASSERT_EQ(t.total_steps(), 12);
  ASSERT_TRUE(t.model().has_child("mae_decoder"));  // added by the mae task
  auto start = snapshot(t.model());
  t.train(6);  // stage 1: mae, visual.blocks.0 frozen; the text tower is not used
  auto mid = snapshot(t.model());
  expect_params(start, mid, "visual.blocks.0.", true, "in stage mae, where it is frozen");
  expect_params(start, mid, "visual.blocks.1.", false, "in stage mae");
  expect_params(start, mid, "mae_decoder.", false, "in stage mae");
  expect_params(start, mid, "text.", true, "in stage mae, which does not use it");
  t.train();  // stage 2: contrastive, everything but the decoder trains
  auto end = snapshot(t.model());
  expect_params(mid, end, "visual.blocks.0.", false, "in stage clip, where it is unfrozen");
  expect_params(mid, end, "text.", false, "in stage clip");
  expect_params(mid, end, "mae_decoder.", true, "in stage clip, where it is frozen");
  // Metrics are tagged with their stage and name each loss part.
  std::ifstream f(data / "run" / "metrics.jsonl");
  std::set<std::string> stage_parts;
  for (std::string line; std::getline(f, line);) {
    auto j = nlohmann::json::parse(line);
    ASSERT_TRUE(j.contains("stage")) << line;
    for (const char* part : {"train/mae", "train/infonce"})
      if (j.contains(part)) stage_parts.insert(j["stage"].get<std::string>() + ":" + part);
  }
  EXPECT_EQ(stage_parts, (std::set<std::string>{"mae:train/mae", "clip:train/infonce"}));
  EXPECT_TRUE(fs::exists(data / "run" / "checkpoints" / "step_00000006"));  // every stage ends with a checkpoint
  fs::remove_all(data);
}

TEST(Stages, ResumeInsideAndAcrossStagesIsBitwiseExact) {
  fs::path data = make_dataset("stages_resume");
  Config c = Config::parse(staged_recipe(data), "staged.yaml");
  Recipe r = Recipe::from(c);
  {
    Trainer straight(r, c, (data / "straight").string(), false);
    straight.train();
  }
  {  // interrupted inside stage 1, at the boundary, inside stage 2
    Trainer a(r, c, (data / "resumed").string(), false);
    a.train(4);
  }
  for (int64_t stop : {6, 9, -1}) {
    Trainer b(r, c, (data / "resumed").string(), true);
    EXPECT_EQ(b.stage(), b.step() >= 6 ? 1u : 0u) << "at step " << b.step();
    b.train(stop);
  }
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    auto a = load_safetensors((data / "straight/checkpoints/latest" / file).string());
    auto b = load_safetensors((data / "resumed/checkpoints/latest" / file).string());
    ASSERT_EQ(a.tensors.size(), b.tensors.size()) << file;
    for (auto& [k, t] : a.tensors)
      EXPECT_EQ(t.to(DType::f64).to_vector<double>(), b.tensors.at(k).to(DType::f64).to_vector<double>()) << file << " " << k;
  }
  EXPECT_EQ(losses_of(data / "straight"), losses_of(data / "resumed"));
  EXPECT_EQ(losses_of(data / "straight").size(), 12u);
  fs::remove_all(data);
}

TEST(Stages, BrokenStageRecipesNameFileLineAndKey) {
  fs::path data = make_dataset("stages_errors");
  const std::string good = staged_recipe(data);
  std::string e = config_error(replaced(good, "steps: 6,\n     freeze", "stpes: 6,\n     freeze"));
  EXPECT_NE(e.find("bad.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("stages.0.steps"), std::string::npos) << e;
  EXPECT_NE(e.find("'stpes'"), std::string::npos) << e;
  e = config_error(replaced(good, "steps: 6,\n     freeze", "steps: 6, fraeze: [x],\n     freeze"));
  EXPECT_NE(e.find("stages.0.fraeze: unknown key (did you mean 'freeze'?)"), std::string::npos) << e;
  e = config_error(replaced(good, "type: contrastive", "type: contrastiv"));
  EXPECT_NE(e.find("bad.yaml:18: stages.1.task.type: 'contrastiv' is not one of: classify, contrastive, itm, mae"), std::string::npos) << e;
  e = config_error(replaced(good, "freeze: ['visual.blocks.0.*']", "freeze: ['visual.blockz.0.*']"), data / "run_pattern");
  EXPECT_NE(e.find("bad.yaml:17: stages.0.freeze: pattern 'visual.blockz.0.*' matches no parameter"), std::string::npos) << e;
  e = config_error(replaced(good, "steps: 6, freeze: ['mae_decoder.*']", "steps: 6, data: imgs, freeze: ['mae_decoder.*']"));
  EXPECT_NE(e.find("stages.1.data: no section data.imgs"), std::string::npos) << e;
  e = config_error(replaced(good, "stages:\n", "task: {type: mae}\nstages:\n"));
  EXPECT_NE(e.find("task: with stages:, each stage has its own task"), std::string::npos) << e;
  // A task asking for a batch key the data cannot fill: captions stripped from a copy of the manifest.
  {
    std::ifstream in(data / "train.jsonl");
    std::ofstream out(data / "images.jsonl");
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      j.erase("text");
      j["image"] = "img/" + fs::path(j["image"].get<std::string>()).filename().string();
      out << j.dump() << "\n";
    }
  }
  e = config_error(replaced(replaced(good, "  eval: {", "  images: {manifest: " + (data / "images.jsonl").string() + "}\n  eval: {"),
                            "steps: 6, freeze: ['mae_decoder.*']", "steps: 6, data: images, freeze: ['mae_decoder.*']"));
  EXPECT_NE(e.find("stages.1.data: task contrastive needs batch key 'text', but data.images"), std::string::npos) << e;
  EXPECT_NE(e.find("provides only: image, label"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(data / "run_pattern" / "checkpoints" / "latest"));
  fs::remove_all(data);
}

TEST(Mae, TinyMaeLearnsDrawsAndProbes) {
  fs::path data = make_dataset("mae_learns");
  const std::string d = data.string();
  const std::string yaml =
      "name: tiny_mae\nseed: 2\n"
      "model:\n  type: vit\n"
      "  vision: {type: vit, image_size: 8, channels: 1, patch: 2, width: 32, layers: 2, heads: 2, pos_embed: sincos}\n"
      "task: {type: mae, mask_ratio: 0.5, norm_pix_loss: false, decoder: {width: 32, layers: 1, heads: 2}, reconstructions: 4}\n"
      "data:\n"
      "  train: {manifest: " + d + "/train.jsonl, batch_size: 32, workers: 2}\n"
      "  eval: {manifest: " + d + "/test.jsonl, batch_size: 64, workers: 1}\n"
      "optim: {type: adamw, lr: 2.0e-3, weight_decay: 0.05, betas: [0.9, 0.95]}\n"
      "schedule: {type: cosine, warmup_steps: 5}\n"
      "train: {steps: 80, log_every: 1}\n"
      "eval: {every: 80, probe: {train_samples: 256, epochs: 20}}\n";
  Config c = Config::parse(yaml, "mae.yaml");
  Recipe r = Recipe::from(c);
  Trainer t(r, c, (data / "run").string(), false);
  Metrics before = t.evaluate();
  t.train();
  Metrics after = t.evaluate();
  auto losses = losses_of(data / "run");
  ASSERT_EQ(losses.size(), 80u);
  const double first = (losses[0] + losses[1] + losses[2]) / 3, last = (losses[77] + losses[78] + losses[79]) / 3;
  EXPECT_LT(last, 0.5 * first) << "loss did not fall: " << first << " -> " << last;
  EXPECT_LT(after.at("eval/mae_loss"), 0.5 * before.at("eval/mae_loss"));
  EXPECT_TRUE(fs::exists(data / "run" / "eval" / "recon_step_80.png"));
  for (const char* k : {"eval/linear_top1", "eval/knn_top1"}) {
    ASSERT_TRUE(after.count(k)) << k;
    EXPECT_GE(after.at(k), 0.0);
    EXPECT_LE(after.at(k), 1.0);
  }
  EXPECT_EQ(after.at("eval/probe_train_samples"), 256.0);
  EXPECT_EQ(after.at("eval/probe_test_samples"), 64.0);
  // The quadrant classes are linearly separable in pixel space: the probe itself must find that.
  Config pc = Config::parse(yaml, "mae.yaml");
  pc.apply_override("eval.probe.features=pixels");
  Metrics pixels = evaluate_recipe(Recipe::from(pc), "");
  EXPECT_GE(pixels.at("eval/linear_top1"), 0.95);
  EXPECT_GE(pixels.at("eval/knn_top1"), 0.95);
  // A checkpoint evaluates to the same numbers as the trained model.
  Metrics again = evaluate_recipe(r, (data / "run" / "checkpoints" / "latest").string());
  EXPECT_DOUBLE_EQ(again.at("eval/mae_loss"), after.at("eval/mae_loss"));
  EXPECT_DOUBLE_EQ(again.at("eval/linear_top1"), after.at("eval/linear_top1"));
  fs::remove_all(data);
}
