// Masked language modelling through the trainer (trainers/tasks/mlm.cpp): a tiny BERT learns texts
// whose words predict each other better than their frequency does, resumes bitwise, and a recipe it
// cannot run stops before any work naming file, line and key.
#include <gtest/gtest.h>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include "core/safetensors.h"
#include "tests/tmp_dir.h"
#include "tests/trainers/tiny_data.h"
#include "trainers/dry_run.h"
#include "trainers/trainer.h"

using namespace loom;
namespace fs = std::filesystem;
using loom::testing::losses_of;
using loom::testing::replaced;

namespace {

// "the {colour} {animal}s {sound} at the {place}": the animal fixes the sound and the place, the
// colour is free, so half the masked words can be told from their neighbours and not from frequency.
fs::path make_texts(const std::string& tag) {
  const fs::path dir = loom::testing_support::tmp_path("loom_mlm_" + tag);
  fs::remove_all(dir);
  fs::create_directories(dir);
  const char* colours[] = {"red", "green", "blue", "brown", "white"};
  const char* animals[][3] = {{"dog", "bark", "door"}, {"cat", "purr", "window"}, {"bird", "sing", "tree"},
                              {"cow", "moo", "barn"}, {"frog", "croak", "pond"}, {"owl", "hoot", "night"}};
  for (const char* split : {"train", "test"}) {
    std::ofstream m(dir / (std::string(split) + ".jsonl"));
    const int n = std::string(split) == "train" ? 240 : 60;
    for (int i = 0; i < n; ++i) {
      const auto& a = animals[(i * 7 + (split[1] == 'e' ? 1 : 0)) % 6];
      const std::string text =
          std::string("the ") + colours[(i * 3) % 5] + " " + a[0] + "s " + a[1] + " at the " + a[2];
      m << nlohmann::json{{"text", text}}.dump() << "\n";
    }
  }
  return dir;
}

std::string mlm_recipe(const fs::path& d, int64_t steps, const std::string& text_tower = "{type: bert, context: 12, width: 32, layers: 2, heads: 2}",
                       const std::string& task = "{type: mlm, mask_ratio: 0.3, whole_word: true}") {
  return "name: tiny_mlm\nseed: 4\n"
         "model:\n  type: towers\n  towers:\n    text: " + text_tower + "\n"
         "tokenizer: {type: bpe, vocab_size: 80}\n"
         "task: " + task + "\n"
         "data:\n"
         "  train: {manifest: " + (d / "train.jsonl").string() + ", batch_size: 32, workers: 1}\n"
         "  eval: {manifest: " + (d / "test.jsonl").string() + ", batch_size: 60, workers: 1}\n"
         "optim: {type: adamw, lr: 3.0e-3, weight_decay: 0.01, betas: [0.9, 0.98]}\n"
         "schedule: {type: cosine, warmup_steps: 10}\n"
         "train: {steps: " + std::to_string(steps) + ", log_every: 1, checkpoint_every: 5}\n"
         "eval: {every: 0}\n";
}

std::string error_of(const std::string& yaml, const fs::path& run = {}) {
  try {
    Config c = Config::parse(yaml, "mlm.yaml");
    Recipe r = Recipe::from(c);
    if (!run.empty()) Trainer t(r, c, run.string(), false);
  } catch (const std::exception& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an error for:\n" << yaml;
  return "";
}

}  // namespace

TEST(Mlm, TinyBertLearnsBeyondTheFrequencyBaseline) {
  const fs::path d = make_texts("learns");
  Config c = Config::parse(mlm_recipe(d, 150), "mlm.yaml");
  Recipe r = Recipe::from(c);
  Trainer t(r, c, (d / "run").string(), false);
  const Metrics before = t.evaluate();
  t.train();
  const Metrics after = t.evaluate();
  const auto losses = losses_of(d / "run");
  std::cerr << "mlm: held-out accuracy " << before.at("eval/mlm_acc") << " -> " << after.at("eval/mlm_acc")
            << ", frequency baseline " << after.at("eval/mlm_unigram_acc") << ", loss " << losses.front() << " -> "
            << losses.back() << "\n";
  ASSERT_EQ(losses.size(), 150u);
  EXPECT_LT(losses.back(), 0.5 * losses.front());
  EXPECT_NEAR(before.at("eval/mlm_unigram_acc"), after.at("eval/mlm_unigram_acc"), 1e-12) << "the same masks every evaluation";
  EXPECT_LT(before.at("eval/mlm_acc"), before.at("eval/mlm_unigram_acc"));
  EXPECT_GT(after.at("eval/mlm_acc"), after.at("eval/mlm_unigram_acc") + 0.2)
      << "accuracy " << after.at("eval/mlm_acc") << ", frequency baseline " << after.at("eval/mlm_unigram_acc");
  EXPECT_LT(after.at("eval/mlm_perplexity"), before.at("eval/mlm_perplexity"));
  // train/mlm_acc is logged with the loss.
  std::ifstream f(d / "run" / "metrics.jsonl");
  int with_acc = 0;
  for (std::string line; std::getline(f, line);) with_acc += nlohmann::json::parse(line).contains("train/mlm_acc");
  EXPECT_EQ(with_acc, 150);
  // The run's tokenizer holds "<mask>".
  EXPECT_EQ(data::load_tokenizer((d / "run" / "tokenizer.json").string())->mask_token(), 4);
}

TEST(Mlm, ResumeIsBitwiseExact) {
  const fs::path d = make_texts("resume");
  Config c = Config::parse(mlm_recipe(d, 10), "mlm.yaml");
  Recipe r = Recipe::from(c);
  {
    Trainer straight(r, c, (d / "straight").string(), false);
    straight.train();
  }
  {
    Trainer a(r, c, (d / "resumed").string(), false);
    a.train(5);
  }
  {
    Trainer b(r, c, (d / "resumed").string(), true);
    b.train();
  }
  EXPECT_EQ(losses_of(d / "straight"), losses_of(d / "resumed"));
  auto a = load_safetensors((d / "straight/checkpoints/latest/model.safetensors").string());
  auto b = load_safetensors((d / "resumed/checkpoints/latest/model.safetensors").string());
  ASSERT_TRUE(a.tensors.count("mlm_head.bias"));
  for (auto& [k, t] : a.tensors) EXPECT_EQ(t.to_vector<float>(), b.tensors.at(k).to_vector<float>()) << k;
}

TEST(Mlm, RecipesItCannotRunAreOneClearError) {
  const fs::path d = make_texts("errors");
  const std::string good = mlm_recipe(d, 2);
  // A causal text tower.
  std::string e = error_of(replaced(good, "{type: bert, context: 12,", "{type: transformer, context: 12,"));
  EXPECT_NE(e.find("mlm.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("task.type: task mlm predicts masked tokens from both sides"), std::string::npos) << e;
  EXPECT_NE(e.find("model.towers.text.type: bert"), std::string::npos) << e;
  // A mask ratio outside (0, 1), and a replacement split that is not one.
  for (const char* ratio : {"0.0", "1.0", "1.5", "-0.1"}) {
    e = error_of(replaced(good, "mask_ratio: 0.3", std::string("mask_ratio: ") + ratio));
    EXPECT_NE(e.find("task.mask_ratio: must be in (0, 1)"), std::string::npos) << e;
  }
  e = error_of(replaced(good, "whole_word: true", "whole_word: true, replace: [0.8, 0.2, 0.2]"));
  EXPECT_NE(e.find("task.replace: expected [mask, random, keep]"), std::string::npos) << e;
  // No text tower at all.
  e = error_of(replaced(good, "whole_word: true", "whole_word: true, input: image"));
  EXPECT_NE(e.find("task.input: task mlm needs a text tower 'image'"), std::string::npos) << e;
  // A tokenizer without a mask token: CLIP's byte-level BPE.
  const fs::path clip_tok = fs::path(LOOM_SOURCE_DIR) / "tests" / "fixtures" / "hf_clip_tiny" / "tokenizer.json";
  e = error_of(replaced(good, "tokenizer: {type: bpe, vocab_size: 80}", "tokenizer: {type: clip_bpe, path: " + clip_tok.string() + "}"));
  EXPECT_NE(e.find("tokenizer.path: masked language modelling needs a mask token"), std::string::npos) << e;
  // The check runs the task's forward pass without a tokenizer (loom's BPE is trained by the run).
  Config c = Config::parse(good, "mlm.yaml");
  const std::string report = check_recipe(Recipe::from(c), c);
  EXPECT_NE(report.find("check passed"), std::string::npos) << report;
}
