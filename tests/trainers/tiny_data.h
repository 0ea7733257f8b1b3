// A synthetic image-text set made on the spot for the trainer tests: 8x8 grayscale images whose
// class's quadrant is bright (plus noise), captions naming the quadrant, labels 0..3.
#pragma once
#include <gtest/gtest.h>
#include <filesystem>
#include <map>
#include "layers/module.h"
#include "trainers/trainer.h"
#include "tests/tmp_dir.h"
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace loom::testing {
namespace fs = std::filesystem;

inline const char* kClasses[] = {"top left", "top right", "bottom left", "bottom right"};

// 8x8 grayscale images: the class's quadrant is bright, plus noise. Captions name the quadrant.
inline fs::path make_dataset_in(const fs::path& dir) {
  fs::remove_all(dir);
  fs::create_directories(dir / "img");
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> noise(0, 60);
  const char* templates[] = {"a {} picture", "bright at the {}", "the {} corner is lit"};
  for (const char* split : {"train", "test"}) {
    std::ofstream m(dir / (std::string(split) + ".jsonl"));
    const int n = std::string(split) == "train" ? 256 : 64;
    for (int i = 0; i < n; ++i) {
      const int k = i % 4;
      const std::string name = std::string(split) + "_" + std::to_string(i) + ".pgm";
      std::ofstream f(dir / "img" / name, std::ios::binary);
      f << "P5\n8 8\n255\n";
      for (int y = 0; y < 8; ++y)
        for (int x = 0; x < 8; ++x) {
          const bool lit = (y < 4) == (k < 2) && (x < 4) == (k % 2 == 0);
          f.put(char(std::min(255, (lit ? 180 : 20) + noise(rng))));
        }
      std::string caption = templates[i % 3];
      caption.replace(caption.find("{}"), 2, kClasses[k]);
      m << R"({"image": "img/)" << name << R"(", "text": ")" << caption << R"(", "label": )" << k << "}\n";
    }
  }
  std::ofstream c(dir / "classes.txt");
  for (const char* k : kClasses) c << k << "\n";
  return dir;
}

// The same in this test process's own scratch directory.
inline fs::path make_dataset(const std::string& tag) {
  return make_dataset_in(loom::testing_support::tmp_path("loom_trainer_" + tag));
}

// `s` with the first `from` replaced by `to` (a failure when `from` is absent).
inline std::string replaced(std::string s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return at == std::string::npos ? s : s.replace(at, from.size(), to);
}

// Every parameter and buffer by name, as f32 values (to compare a model before and after training).
inline std::map<std::string, std::vector<float>> snapshot(const Module& m) {
  std::map<std::string, std::vector<float>> out;
  for (auto& [k, t] : m.state_dict()) out[k] = t.to(DType::f32).contiguous().to_vector<float>();
  return out;
}

// The ConfigError a recipe stops with: when the recipe is read, or with `run`, when a trainer is
// built on it there (checks against the built model: freeze patterns). A failure when there is none.
inline std::string config_error(const std::string& yaml, const fs::path& run = {}) {
  try {
    Config c = Config::parse(yaml, "bad.yaml");
    Recipe r = Recipe::from(c);
    if (!run.empty()) Trainer t(r, c, run.string(), false);
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a ConfigError for:\n" << yaml;
  return "";
}

inline std::vector<double> losses_of(const fs::path& run) {
  std::ifstream f(run / "metrics.jsonl");
  std::vector<double> out;
  for (std::string line; std::getline(f, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("train/loss")) out.push_back(j["train/loss"].get<double>());
  }
  return out;
}

// A tiny CLIP recipe on make_dataset's data; `train_keys` are the train section's keys besides
// steps. The zero-shot prompt is one of the training templates: this checks learning, not prompt
// generalisation.
inline std::string tiny_clip_recipe(const fs::path& data, int64_t steps,
                                    const std::string& train_keys = "checkpoint_every: 10, keep: 2, log_every: 1") {
  const std::string d = data.string();
  return "name: tiny\nseed: 3\n"
         "model:\n  embed_dim: 16\n"
         "  vision: {type: vit, image_size: 8, channels: 1, patch: 4, width: 32, layers: 1, heads: 2}\n"
         "  text: {type: transformer, context: 8, width: 32, layers: 1, heads: 2}\n"
         "tokenizer: {type: bpe, vocab_size: 64}\n"
         "task: {type: contrastive, temperature_init: 0.1}\n"
         "data:\n"
         "  train: {manifest: " + d + "/train.jsonl, batch_size: 32, workers: 2}\n"
         "  eval: {manifest: " + d + "/test.jsonl, batch_size: 64, workers: 1}\n"
         "optim: {type: adamw, lr: 3.0e-3, weight_decay: 0.01, betas: [0.9, 0.98]}\n"
         "schedule: {type: cosine, warmup_steps: 5}\n"
         "train: {steps: " + std::to_string(steps) + ", " + train_keys + "}\n"
         "eval:\n  zeroshot: {labels_from: " + d + "/classes.txt, templates: ['a {} picture']}\n"
         "  retrieval: true\n";
}

}  // namespace loom::testing
