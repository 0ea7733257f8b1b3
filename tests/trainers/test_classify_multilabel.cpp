// Multi-label fine-tuning (task classify, multi_label: true): average precision against scikit-learn
// on fixed scores (tests/fixtures/average_precision.json from scripts/golden/average_precision.py),
// the manifest's "labels" lists and their errors, the loader's padded "labels", and a tiny ViT that
// learns which quadrants of an image are lit (any subset) with held-out mAP well above the untrained one.
#include <gtest/gtest.h>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <nlohmann/json.hpp>
#include "data/loader.h"
#include "data/webdataset.h"
#include "tests/tmp_dir.h"
#include "tests/trainers/tiny_data.h"
#include "trainers/eval/average_precision.h"
#include "trainers/trainer.h"

using namespace loom;
namespace fs = std::filesystem;

namespace {

// 8x8 images whose quadrants are each lit with probability one half (at least one); "labels" lists them.
fs::path make_multilabel_dataset(const std::string& tag) {
  const fs::path dir = loom::testing_support::tmp_path("loom_multilabel_" + tag);
  fs::remove_all(dir);
  fs::create_directories(dir / "img");
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> noise(0, 60), coin(0, 1);
  for (const char* split : {"train", "test"}) {
    std::ofstream m(dir / (std::string(split) + ".jsonl"));
    const int n = std::string(split) == "train" ? 256 : 64;
    for (int i = 0; i < n; ++i) {
      bool lit[4];
      do {
        for (bool& l : lit) l = coin(rng);
      } while (!(lit[0] || lit[1] || lit[2] || lit[3]));
      const std::string name = std::string(split) + "_" + std::to_string(i) + ".pgm";
      std::ofstream f(dir / "img" / name, std::ios::binary);
      f << "P5\n8 8\n255\n";
      for (int y = 0; y < 8; ++y)
        for (int x = 0; x < 8; ++x) f.put(char(std::min(255, (lit[(y >= 4) * 2 + (x >= 4)] ? 180 : 20) + noise(rng))));
      nlohmann::json labels = nlohmann::json::array();
      for (int q = 0; q < 4; ++q)
        if (lit[q]) labels.push_back(q);
      m << nlohmann::json{{"image", "img/" + name}, {"labels", labels}}.dump() << "\n";
    }
  }
  return dir;
}

std::string multilabel_recipe(const fs::path& d, int64_t steps, const std::string& task_extra = "") {
  return "name: tiny_multilabel\nseed: 5\n"
         "model:\n  type: vit\n  vision: {type: vit, image_size: 8, channels: 1, patch: 4, width: 32, layers: 2, heads: 2}\n"
         "task: {type: classify, classes: 4, multi_label: true, pool: mean" + task_extra + "}\n"
         "data:\n"
         "  train: {manifest: " + (d / "train.jsonl").string() + ", batch_size: 32, workers: 1}\n"
         "  eval: {manifest: " + (d / "test.jsonl").string() + ", batch_size: 64, workers: 1}\n"
         "optim: {type: adamw, lr: 3.0e-3, weight_decay: 0.01}\n"
         "train: {steps: " + std::to_string(steps) + ", log_every: 1, checkpoint_every: 0}\n"
         "eval: {every: 0}\n";
}

std::string manifest_error(const std::string& line) {
  const fs::path p = loom::testing_support::tmp_path("loom_labels_manifest.jsonl");
  fs::create_directories(p.parent_path());
  std::ofstream(p) << R"({"image": "a.png", "label": 1})" << "\n" << line << "\n";
  try {
    data::Manifest::load(p.string());
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error for " << line;
  return "(no error)";
}

}  // namespace

TEST(AveragePrecision, MatchesScikitLearnOnFixedScoresWithTies) {
  std::ifstream f(std::string(LOOM_SOURCE_DIR) + "/tests/fixtures/average_precision.json");
  ASSERT_TRUE(f) << "tests/fixtures/average_precision.json";
  const nlohmann::json j = nlohmann::json::parse(f);
  const std::vector<float> scores = j["scores"].get<std::vector<float>>();
  std::vector<bool> targets;
  for (int64_t t : j["targets"].get<std::vector<int64_t>>()) targets.push_back(t != 0);
  const MeanAveragePrecision ap = mean_average_precision(scores, targets, j["classes"].get<int64_t>());
  ASSERT_EQ(ap.per_class.size(), j["per_class"].size());
  for (size_t c = 0; c < ap.per_class.size(); ++c) {
    if (j["per_class"][c].is_null()) {
      EXPECT_TRUE(std::isnan(ap.per_class[c])) << "class " << c << " has no positive";
    } else {
      EXPECT_NEAR(ap.per_class[c], j["per_class"][c].get<double>(), 1e-12) << "class " << c;
    }
  }
  EXPECT_EQ(ap.classes_scored, 5);
  EXPECT_NEAR(ap.map, j["map"].get<double>(), 1e-12);
  // Hand-checkable: scores 0.9 (+), 0.8 (-), 0.8 (+), 0.1 (-): thresholds 0.9 (P 1, R 1/2), 0.8
  // (P 2/3, R 1): AP 1/2 + 1/2 * 2/3.
  EXPECT_NEAR(average_precision({0.9f, 0.8f, 0.8f, 0.1f}, {true, false, true, false}), 0.5 + 1.0 / 3.0, 1e-15);
}

TEST(MultiLabel, ManifestListsAreCheckedAndTheLoaderPadsThem) {
  EXPECT_NE(manifest_error(R"({"image": "b.png", "labels": [2, 2]})").find(":2: key \"labels\" lists class 2 twice"), std::string::npos);
  EXPECT_NE(manifest_error(R"({"image": "b.png", "labels": []})").find(":2: key \"labels\" is empty"), std::string::npos);
  EXPECT_NE(manifest_error(R"({"image": "b.png", "labels": [1, -3]})").find("must hold non-negative integers, got -3"),
            std::string::npos);
  EXPECT_NE(manifest_error(R"({"image": "b.png", "labels": "1,2"})").find("must be a list of class ids, got string"),
            std::string::npos);
  EXPECT_NE(manifest_error(R"({"image": "b.png", "label": 1, "labels": [1]})").find("give \"label\" (one class) or \"labels\""),
            std::string::npos);
  const fs::path d = make_multilabel_dataset("loader");
  auto m = std::make_shared<const data::Manifest>(data::Manifest::load((d / "test.jsonl").string()));
  data::LoaderConfig lc;
  lc.batch_size = 8;
  lc.workers = 0;
  lc.shuffle = false;
  lc.repeat = false;
  lc.channels = 1;
  lc.transform.size = 8;
  data::Loader loader(m, nullptr, lc);
  const data::Batch b = *loader.next();
  const Tensor labels = b["labels"];
  ASSERT_EQ(labels.dim(), 2);
  EXPECT_EQ(labels.size(0), 8);
  const std::vector<int64_t> v = labels.to_vector<int64_t>();
  for (int64_t i = 0; i < 8; ++i) {
    const std::vector<int64_t>& want = m->rows[size_t(i)].labels;
    for (int64_t k = 0; k < labels.size(1); ++k)
      EXPECT_EQ(v[size_t(i * labels.size(1) + k)], k < int64_t(want.size()) ? want[size_t(k)] : -1) << i << "," << k;
  }
}

TEST(MultiLabel, ShardsKeepTheLists) {
  const fs::path d = make_multilabel_dataset("shards");
  const data::Manifest m = data::Manifest::load((d / "test.jsonl").string());
  data::pack_webdataset(m, (d / "shard-%06d.tar").string(), 40);
  const data::Manifest back = data::load_webdataset((d / "shard-{000000..000001}.tar").string());
  ASSERT_EQ(back.rows.size(), m.rows.size());
  for (size_t i = 0; i < m.rows.size(); ++i) EXPECT_EQ(back.rows[i].labels, m.rows[i].labels) << i;
}

TEST(MultiLabel, TinyVitLearnsWhichQuadrantsAreLit) {
  const fs::path d = make_multilabel_dataset("learns");
  Config c = Config::parse(multilabel_recipe(d, 60), "multilabel.yaml");
  const Recipe r = Recipe::from(c);
  Trainer t(r, c, (d / "run").string(), false);
  const Metrics before = t.evaluate();
  t.train();
  const Metrics after = t.evaluate();
  EXPECT_EQ(after.at("eval/mAP_classes"), 4);
  EXPECT_GT(after.at("eval/mAP"), 0.95) << "untrained " << before.at("eval/mAP");
  EXPECT_GT(after.at("eval/mAP"), before.at("eval/mAP") + 0.2);
  EXPECT_LT(after.at("eval/classify_loss"), 0.5 * before.at("eval/classify_loss"));
  // Errors before any work: smoothing, a class id past task.classes, single-label data.
  auto error_of = [](const std::string& yaml, const fs::path& run) {
    try {
      Config cc = Config::parse(yaml, "multilabel.yaml");
      Recipe rr = Recipe::from(cc);
      Trainer tt(rr, cc, run.string(), false);
      tt.train();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  std::string e = error_of(multilabel_recipe(d, 2, ", label_smoothing: 0.1"), d / "e1");
  EXPECT_NE(e.find("multilabel.yaml:6: task.label_smoothing: multi_label trains binary cross-entropy"), std::string::npos) << e;
  e = error_of(loom::testing::replaced(multilabel_recipe(d, 2), "classes: 4", "classes: 3"), d / "e2");
  EXPECT_NE(e.find("lists class 3, and task.classes is 3"), std::string::npos) << e;
  const fs::path single = loom::testing::make_dataset("multilabel_single");
  e = error_of(multilabel_recipe(single, 2), d / "e3");
  EXPECT_NE(e.find("needs batch key 'labels'"), std::string::npos) << e;
}

// data.NAME.sampler: balanced (AudioMAE's weighted sampler): a class with an eighth of the rows is
// drawn about as often as the other, the same draws every time, and a row without labels is refused.
TEST(BalancedSampler, DrawsARareClassAsOftenAsACommonOne) {
  const fs::path d = loom::testing::make_dataset("balanced");
  {
    std::ifstream in(d / "train.jsonl");
    std::ofstream out(d / "skewed.jsonl");
    int rare = 0;
    for (std::string line; std::getline(in, line);) {
      const int label = nlohmann::json::parse(line)["label"].get<int>();
      if (label == 0 || (label == 1 && rare++ < 8)) out << line << "\n";  // 64 rows of class 0, 8 of class 1
    }
  }
  auto recipe = [&](const std::string& sampler) {
    return "name: skewed\nmodel:\n  type: vit\n  vision: {type: vit, image_size: 8, channels: 1, patch: 4, width: 16, layers: 1, heads: 2}\n"
           "task: {type: classify, classes: 2}\n"
           "data:\n  train: {manifest: " + (d / "skewed.jsonl").string() + ", batch_size: 8, workers: 1" + sampler + "}\n"
           "train: {steps: 1}\n";
  };
  auto class_one_share = [&](const std::string& sampler, std::vector<int64_t>* rows) {
    Config c = Config::parse(recipe(sampler), "skewed.yaml");
    const Recipe r = Recipe::from(c);
    data::LoaderConfig lc = loader_config(r.data.at("train"), 3, true);
    lc.channels = 1;
    lc.transform.size = 8;
    data::Loader loader(r.data.at("train").rows, nullptr, lc);
    int64_t ones = 0, seen = 0;
    for (int i = 0; i < 60; ++i) {
      const data::Batch b = *loader.next();
      for (int64_t v : b["label"].to_vector<int64_t>()) ones += v == 1, ++seen;
      if (rows) rows->insert(rows->end(), b.indices.begin(), b.indices.end());
    }
    return double(ones) / double(seen);
  };
  std::vector<int64_t> a, b;
  const double balanced = class_one_share(", sampler: balanced", &a);
  EXPECT_GT(balanced, 0.4);  // 480 draws of p = 0.5: 3 standard deviations are 0.068
  EXPECT_LT(balanced, 0.6);
  EXPECT_LT(class_one_share("", nullptr), 0.2) << "a shuffle keeps the skew (8 of 72)";
  class_one_share(", sampler: balanced", &b);
  EXPECT_EQ(a, b) << "the draws depend on the seed and the position only";
  std::ofstream(d / "skewed.jsonl", std::ios::app) << R"({"image": "img/train_0.pgm", "text": "no label"})" << "\n";
  try {
    Config c = Config::parse(recipe(", sampler: balanced"), "skewed.yaml");
    Recipe::from(c);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.train.sampler: balanced sampling weighs rows by their classes, and row 73"),
              std::string::npos)
        << e.what();
  }
}
