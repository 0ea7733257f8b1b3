// A synthetic image-text set made on the spot for the trainer tests: 8x8 grayscale images whose
// class's quadrant is bright (plus noise), captions naming the quadrant, labels 0..3.
#pragma once
#include <filesystem>
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

inline std::vector<double> losses_of(const fs::path& run) {
  std::ifstream f(run / "metrics.jsonl");
  std::vector<double> out;
  for (std::string line; std::getline(f, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("train/loss")) out.push_back(j["train/loss"].get<double>());
  }
  return out;
}

}  // namespace loom::testing
