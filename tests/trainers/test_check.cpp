// loom train --check (trainers/dry_run.h) and loom stats (trainers/data_stats.h).
#include <gtest/gtest.h>
#include "tests/tmp_dir.h"
#include <cmath>
#include <filesystem>
#include <fstream>
#include "data/audio.h"
#include "data/fbank.h"
#include "tests/trainers/tiny_data.h"
#include "trainers/dry_run.h"
#include "trainers/data_stats.h"

using namespace loom;
namespace fs = std::filesystem;

namespace {

std::string clip_recipe(const fs::path& data) {
  return "name: tiny\nseed: 3\n"
         "model:\n  type: clip\n  embed_dim: 16\n"
         "  vision: {type: vit, image_size: 8, channels: 1, patch: 4, width: 32, layers: 1, heads: 2}\n"
         "  text: {type: transformer, context: 8, width: 32, layers: 1, heads: 2}\n"
         "tokenizer: {vocab_size: 64}\n"
         "data:\n  train: {manifest: " + (data / "train.jsonl").string() + ", batch_size: 16, workers: 0}\n"
         "  eval: {manifest: " + (data / "test.jsonl").string() + ", batch_size: 16, workers: 0}\n"
         "train: {steps: 5}\n";
}

std::string check_error(const std::string& yaml) {
  try {
    Config c = Config::parse(yaml, "r.yaml");
    c.allow_missing_files();
    check_recipe(Recipe::from(c), c);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Check, BuildsRunsAForwardPassAndListsMissingData) {
  const fs::path data = loom::testing::make_dataset("check");
  Config c = Config::parse(clip_recipe(data), "r.yaml");
  c.allow_missing_files();
  const std::string report = check_recipe(Recipe::from(c), c);
  EXPECT_NE(report.find("stage 1/1 'contrastive': task contrastive"), std::string::npos) << report;
  EXPECT_NE(report.find("image [2, 1, 8, 8]"), std::string::npos) << report;
  EXPECT_NE(report.find("text [2, 8]"), std::string::npos) << report;
  EXPECT_NE(report.find("infonce"), std::string::npos) << report;
  EXPECT_EQ(report.find("not on this machine"), std::string::npos) << report;

  // The same recipe with its data elsewhere: a run refuses it, --check lists what is missing.
  const std::string moved = clip_recipe("/nonexistent/loom-data");
  try {
    Recipe::from(Config::parse(moved, "r.yaml"));
    ADD_FAILURE() << "a run must refuse a missing manifest";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("file not found: /nonexistent/loom-data/train.jsonl"), std::string::npos) << e.what();
  }
  Config m = Config::parse(moved + "stages_are_not_here: 1\n", "r.yaml");
  m.allow_missing_files();
  EXPECT_THROW(Recipe::from(m), ConfigError);  // unknown keys are still errors
  Config ok = Config::parse(moved, "r.yaml");
  ok.allow_missing_files();
  const std::string r2 = check_recipe(Recipe::from(ok), ok);
  EXPECT_NE(r2.find("not on this machine (a run needs them):\n  r.yaml:"), std::string::npos) << r2;
  EXPECT_NE(r2.find("data.train.manifest: /nonexistent/loom-data/train.jsonl"), std::string::npos) << r2;
  EXPECT_NE(r2.find("check passed"), std::string::npos) << r2;
}

TEST(Check, RefusesWhatARunWouldRefuse) {
  const fs::path data = loom::testing::make_dataset("check_errors");
  const std::string base = clip_recipe(data);
  std::string e = check_error(base + "optim: {lr: -1}\n");
  EXPECT_NE(e.find("optim.lr"), std::string::npos) << e;
  std::string bad = base;
  bad.replace(bad.find("patch: 4"), 8, "patch: 3");
  e = check_error(bad);
  EXPECT_NE(e.find("patch"), std::string::npos) << e;
  // A stage pattern that matches no parameter.
  e = check_error(base.substr(0, base.find("train: {steps: 5}")) +
                  "stages:\n  - {task: {type: contrastive}, steps: 2, freeze: ['visual.nothing.*']}\n");
  EXPECT_NE(e.find("stages.0.freeze"), std::string::npos) << e;
  EXPECT_NE(e.find("matches no parameter"), std::string::npos) << e;
  // A batch larger than the manifest.
  bad = base;
  bad.replace(bad.find("batch_size: 16"), 14, "batch_size: 999");
  e = check_error(bad);
  EXPECT_NE(e.find("data.train.batch_size"), std::string::npos) << e;
}

TEST(Stats, ImageChannelMeanAndStdOfThePixels) {
  const fs::path data = loom::testing::make_dataset("stats_images");
  Config c = Config::parse(clip_recipe(data), "r.yaml");
  const std::vector<InputStats> s = input_stats(Recipe::from(c), "train", 0);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].key, "image");
  EXPECT_EQ(s[0].examples, 256);
  // The same numbers from the files themselves (8x8 binary PGM, 11 header bytes).
  double sum = 0, sq = 0;
  int64_t n = 0;
  for (int i = 0; i < 256; ++i) {
    std::ifstream f(data / "img" / ("train_" + std::to_string(i) + ".pgm"), std::ios::binary);
    f.ignore(11);
    for (int j = 0; j < 64; ++j) {
      const double v = double(static_cast<unsigned char>(f.get())) / 255.0;
      sum += v, sq += v * v, ++n;
    }
  }
  const double mean = sum / double(n), sd = std::sqrt(sq / double(n) - mean * mean);
  ASSERT_EQ(s[0].mean.size(), 1u);
  EXPECT_NEAR(s[0].mean[0], mean, 1e-5);
  EXPECT_NEAR(s[0].std[0], sd, 1e-5);
}

TEST(Stats, AudioFbankMeanAndStdBeforeNormalisation) {
  const fs::path dir = loom::testing_support::tmp_path("loom_stats_audio");
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream m(dir / "train.jsonl");
  data::FbankOptions o;
  o.num_mel_bins = 32;
  data::KaldiFbank fb(o);
  double sum = 0, sq = 0;
  int64_t n = 0;
  for (int i = 0; i < 6; ++i) {
    std::vector<float> x(8000);
    for (size_t j = 0; j < x.size(); ++j) x[j] = float(0.3 * std::sin(2 * M_PI * (300.0 + 200 * i) * double(j) / 16000.0));
    const std::string name = "tone_" + std::to_string(i) + ".wav";
    data::write_audio((dir / name).string(), x, 1, 16000);
    m << R"({"audio": ")" << name << R"(", "text": "a tone", "label": 0})" << "\n";
    const data::Waveform w = data::decode_audio((dir / name).string());
    const Tensor f = fb.compute(w.samples.data(), int64_t(w.samples.size()));
    const float* p = f.data_ptr<float>();
    for (int64_t j = 0; j < f.numel(); ++j) sum += p[j], sq += double(p[j]) * p[j], ++n;
  }
  m.close();
  const std::string yaml =
      "name: s\nmodel:\n  type: ast\n  audio: {type: ast, mel_bins: 32, frames: 32, patch: 16, width: 32, layers: 1, heads: 2}\n"
      "task: {type: mae, decoder: {width: 16, layers: 1, heads: 2}}\n"
      "data:\n  train: {manifest: " + (dir / "train.jsonl").string() +
      ", batch_size: 4, workers: 0, audio: {duration: 0.5, mean: -3, std: 7, freq_mask: 8}}\n"
      "train: {steps: 1}\n";
  Config c = Config::parse(yaml, "s.yaml");
  const std::vector<InputStats> s = input_stats(Recipe::from(c), "train", 0);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].key, "audio");
  EXPECT_EQ(s[0].examples, 6);
  EXPECT_EQ(s[0].values, n);  // all 48 frames of each clip (training cuts them to the tower's 32)
  const double mean = sum / double(n);
  EXPECT_NEAR(s[0].mean[0], mean, 1e-4);
  EXPECT_NEAR(s[0].std[0], std::sqrt(sq / double(n) - mean * mean), 1e-4);
}
