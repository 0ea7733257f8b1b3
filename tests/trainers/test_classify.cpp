// Supervised fine-tuning through the trainer (trainers/tasks/classify.cpp): a tiny ViT learns the
// quadrant labels, fine-tunes from another run's checkpoint (its encoder's weights are where it
// starts), resumes bitwise, and a recipe it cannot run stops before any work naming file, line and key.
#include <gtest/gtest.h>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include "core/safetensors.h"
#include "tests/trainers/tiny_data.h"
#include "trainers/trainer.h"

using namespace loom;
namespace fs = std::filesystem;
using loom::testing::losses_of;
using loom::testing::replaced;
using loom::testing::make_dataset;

namespace {

std::string classify_recipe(const fs::path& d, int64_t steps, const std::string& task = "{type: classify, classes: 4, label_smoothing: 0.1, pool: mean}",
                            const std::string& extra = "") {
  return "name: tiny_classify\nseed: 5\n"
         "model:\n  type: vit\n  vision: {type: vit, image_size: 8, channels: 1, patch: 4, width: 32, layers: 2, heads: 2}\n"
         "task: " + task + "\n"
         "data:\n"
         "  train: {manifest: " + (d / "train.jsonl").string() + ", batch_size: 32, workers: 1}\n"
         "  eval: {manifest: " + (d / "test.jsonl").string() + ", batch_size: 64, workers: 1}\n"
         "optim: {type: adamw, lr: 3.0e-3, weight_decay: 0.01}\n"
         "train: {steps: " + std::to_string(steps) + ", log_every: 1, checkpoint_every: 5}\n"
         "eval: {every: 0}\n" + extra;
}

std::string error_of(const std::string& yaml, const fs::path& run = {}) {
  try {
    Config c = Config::parse(yaml, "classify.yaml");
    Recipe r = Recipe::from(c);
    if (!run.empty()) {
      Trainer t(r, c, run.string(), false);
      t.train();
    }
  } catch (const std::exception& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an error for:\n" << yaml;
  return "";
}

}  // namespace

TEST(Classify, TinyVitLearnsTheLabels) {
  const fs::path d = make_dataset("classify_learns");
  Config c = Config::parse(classify_recipe(d, 40), "classify.yaml");
  Recipe r = Recipe::from(c);
  Trainer t(r, c, (d / "run").string(), false);
  const Metrics before = t.evaluate();
  t.train();
  const Metrics after = t.evaluate();
  const auto losses = losses_of(d / "run");
  std::cerr << "classify: held-out top-1 " << before.at("eval/top1") << " -> " << after.at("eval/top1") << ", loss "
            << losses.front() << " -> " << losses.back() << "\n";
  ASSERT_EQ(losses.size(), 40u);
  EXPECT_LT(losses.back(), 0.5 * losses.front());
  EXPECT_LT(before.at("eval/top1"), 0.5);  // chance is 0.25
  EXPECT_GT(after.at("eval/top1"), 0.95);
  EXPECT_EQ(after.at("eval/top4"), 1.0);  // top-k with k = min(5, classes): every target among the 4
  EXPECT_EQ(after.at("eval/samples"), 64.0);
  EXPECT_LT(after.at("eval/classify_loss"), before.at("eval/classify_loss"));
  std::ifstream f(d / "run" / "metrics.jsonl");
  int with_acc = 0;
  for (std::string line; std::getline(f, line);) with_acc += nlohmann::json::parse(line).contains("train/acc");
  EXPECT_EQ(with_acc, 40);
}

// FLIP's patch dropout on the tower: training sees half the patches, evaluation all of them.
TEST(Classify, LearnsWithPatchDropout) {
  const fs::path d = make_dataset("classify_patch_dropout");
  const std::string yaml = replaced(classify_recipe(d, 40), "heads: 2}", "heads: 2, patch_dropout: 0.5}");
  Config c = Config::parse(yaml, "classify.yaml");
  Recipe r = Recipe::from(c);
  Trainer t(r, c, (d / "run").string(), false);
  t.train();
  const Metrics after = t.evaluate();
  EXPECT_GT(after.at("eval/top1"), 0.9);
  EXPECT_NE(error_of(replaced(yaml, "patch_dropout: 0.5", "patch_dropout: 1.0")).find("model.vision.patch_dropout: must be in [0, 1)"),
            std::string::npos);
}

TEST(Classify, FineTunesFromAnotherRunsCheckpointAndResumesBitwise) {
  const fs::path d = make_dataset("classify_finetune");
  // A pretraining run of the same tower (MAE), then classify from its checkpoint.
  {
    const std::string mae = replaced(replaced(classify_recipe(d, 3), "task: {type: classify, classes: 4, label_smoothing: 0.1, pool: mean}",
                                              "task: {type: mae, mask_ratio: 0.5, decoder: {width: 16, layers: 1, heads: 2}}"),
                                     "name: tiny_classify", "name: tiny_mae");
    Config c = Config::parse(mae, "mae.yaml");
    Recipe r = Recipe::from(c);
    Trainer t(r, c, (d / "mae").string(), false);
    t.train();
  }
  const fs::path ckpt = d / "mae/checkpoints/latest";
  const std::string yaml =
      classify_recipe(d, 6, "{type: classify, classes: 4, head: {hidden: 16}}",
                      "init_from: {path: " + ckpt.string() + ", strict: false}\n");
  Config c = Config::parse(yaml, "classify.yaml");
  Recipe r = Recipe::from(c);
  {
    Trainer start(r, c, (d / "start").string(), false);
    const auto pre = load_safetensors((ckpt / "model.safetensors").string());
    int shared = 0;
    bool head = false;
    for (const auto& [k, v] : start.model().named_parameters()) {
      if (k.rfind("classifier.", 0) == 0) {
        head = true;
        continue;
      }
      ASSERT_TRUE(pre.tensors.count(k)) << k;
      EXPECT_EQ(v.to_vector<float>(), pre.tensors.at(k).to_vector<float>()) << k;
      ++shared;
    }
    EXPECT_GT(shared, 10);
    EXPECT_TRUE(head);
  }
  {
    Trainer straight(r, c, (d / "straight").string(), false);
    straight.train();
  }
  {
    Trainer a(r, c, (d / "resumed").string(), false);
    a.train(3);
  }
  {
    Trainer b(r, c, (d / "resumed").string(), true);
    b.train();
  }
  EXPECT_EQ(losses_of(d / "straight"), losses_of(d / "resumed"));
}

TEST(Classify, RecipesItCannotRunAreOneClearError) {
  const fs::path d = make_dataset("classify_errors");
  const std::string good = classify_recipe(d, 2);
  std::string e = error_of(replaced(good, "classes: 4, ", ""));
  EXPECT_NE(e.find("classify.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("task.classes: required"), std::string::npos) << e;
  e = error_of(replaced(good, "classes: 4", "classes: 1"));
  EXPECT_NE(e.find("task.classes: must be >= 2"), std::string::npos) << e;
  e = error_of(replaced(good, "label_smoothing: 0.1", "label_smoothing: 1.0"));
  EXPECT_NE(e.find("task.label_smoothing: must be in [0, 1)"), std::string::npos) << e;
  e = error_of(replaced(good, "classes: 4", "classes: 4, input: audio"));
  EXPECT_NE(e.find("task.input: task classify needs the tower it fine-tunes, 'audio'"), std::string::npos) << e;
  // A manifest without labels: named before any work.
  {
    std::ifstream in(d / "train.jsonl");
    std::ofstream out(d / "unlabelled.jsonl");
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      j.erase("label");
      out << j.dump() << "\n";
    }
  }
  e = error_of(replaced(good, (d / "train.jsonl").string(), (d / "unlabelled.jsonl").string()));
  EXPECT_NE(e.find("label"), std::string::npos) << e;
  EXPECT_NE(e.find("classify.yaml:"), std::string::npos) << e;
  // Labels past task.classes: the run stops at the first batch naming the label and the key.
  e = error_of(replaced(good, "classes: 4", "classes: 3"), d / "run_bad_label");
  EXPECT_NE(e.find("has label 3, and task.classes is 3"), std::string::npos) << e;
}

// Rows without a label (a set where only some are classified) are left out of the loss and metrics.
TEST(Classify, RowsWithoutALabelAreLeftOut) {
  const fs::path d = make_dataset("classify_partial");
  for (const char* split : {"train", "test"}) {
    std::ifstream in(d / (std::string(split) + ".jsonl"));
    std::ofstream out(d / (std::string(split) + "_partial.jsonl"));
    int i = 0;
    for (std::string line; std::getline(in, line); ++i) {
      auto j = nlohmann::json::parse(line);
      if (i % 3 == 1) j.erase("label");
      out << j.dump() << "\n";
    }
  }
  std::string yaml = replaced(classify_recipe(d, 40), (d / "train.jsonl").string(), (d / "train_partial.jsonl").string());
  yaml = replaced(yaml, (d / "test.jsonl").string(), (d / "test_partial.jsonl").string());
  Config c = Config::parse(yaml, "classify.yaml");
  Recipe r = Recipe::from(c);
  Trainer t(r, c, (d / "run").string(), false);
  t.train();
  const Metrics m = t.evaluate();
  EXPECT_EQ(m.at("eval/samples"), 43.0);  // 64 test rows, every third without a label
  EXPECT_GT(m.at("eval/top1"), 0.9);
}

// model.<tower>.checkpoint_activations through the trainer: the same losses and weights, bitwise,
// with drop-path on; a value that is no block count is named.
TEST(Classify, CheckpointedActivationsTrainBitwiseTheSame) {
  const fs::path d = make_dataset("classify_checkpoint");
  auto run = [&](const std::string& vision_extra, const std::string& dir) {
    const std::string yaml = replaced(classify_recipe(d, 4), "heads: 2}", "heads: 2, drop_path: 0.2" + vision_extra + "}");
    Config c = Config::parse(yaml, "classify.yaml");
    Recipe r = Recipe::from(c);
    Trainer t(r, c, (d / dir).string(), false);
    t.train();
    return losses_of(d / dir);
  };
  const auto plain = run("", "plain"), every = run(", checkpoint_activations: true", "every"),
             other = run(", checkpoint_activations: 2", "other");
  ASSERT_EQ(plain.size(), 4u);
  EXPECT_EQ(every, plain);
  EXPECT_EQ(other, plain);
  auto a = load_safetensors((d / "plain/checkpoints/latest/model.safetensors").string());
  auto b = load_safetensors((d / "every/checkpoints/latest/model.safetensors").string());
  for (auto& [k, t] : a.tensors) EXPECT_EQ(t.to_vector<float>(), b.tensors.at(k).to_vector<float>()) << k;
  const std::string e = error_of(replaced(classify_recipe(d, 2), "heads: 2}", "heads: 2, checkpoint_activations: 0}"));
  EXPECT_NE(e.find("model.vision.checkpoint_activations: expected true, false or every how many blocks (>= 1), got 0"),
            std::string::npos) << e;
}
