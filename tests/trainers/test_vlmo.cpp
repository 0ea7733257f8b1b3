// VLMo through the trainer (model.type vlmo, tasks itm and mlm with_image): the three stages from one
// recipe, the parameters frozen in stage 2 bitwise unchanged by it, resume bitwise across both stage
// boundaries, ITM learning against hard-negative captions, the hard-negative sampler's distribution,
// and the recipe errors named by file, line and key.
#include <gtest/gtest.h>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include "core/safetensors.h"
#include "tests/trainers/tiny_data.h"
#include "trainers/embedding_index.h"
#include "trainers/tasks/itm.h"
#include "trainers/trainer.h"

using namespace loom;
namespace fs = std::filesystem;
using loom::testing::config_error;
using loom::testing::losses_of;
using loom::testing::replaced;
using loom::testing::snapshot;
using loom::testing::make_dataset;

namespace {

const char* kFrozenInStage2[] = {"image.", "multiway.blocks.0.attn.", "multiway.blocks.1.attn.", "multiway.blocks.0.ln1.",
                                 "multiway.blocks.0.image.", "multiway.blocks.1.image.", "multiway.norm."};

std::string vlmo_recipe(const fs::path& data, int64_t steps1, int64_t steps2, int64_t steps3, double lr = 3.0e-3) {
  const std::string d = data.string();
  return "name: vlmo\nseed: 3\n"
         "model:\n  type: vlmo\n  embed_dim: 16\n  width: 32\n  layers: 2\n  heads: 2\n  vl_from: 1\n  drop_path: 0.1\n"
         "  image: {image_size: 8, channels: 1, patch: 2}\n  text: {context: 8}\n"
         "tokenizer: {type: bpe, vocab_size: 64}\n"
         "data:\n"
         "  train: {manifest: " + d + "/train.jsonl, batch_size: 16, workers: 2,\n"
         "          transform: {random_resized_crop: true, crop_scale_min: 0.8}}\n"
         "  eval: {manifest: " + d + "/test.jsonl, batch_size: 64, workers: 1}\n"
         "optim: {type: adamw, lr: " + std::to_string(lr) + ", weight_decay: 0.01}\n"
         "schedule: {type: cosine, warmup_steps: 2}\n"
         "stages:\n"
         "  - {name: image, task: {type: mae, decoder: {width: 16, layers: 1, heads: 2}}, steps: " + std::to_string(steps1) + ",\n"
         "     train_only: ['image.*', 'multiway.blocks.*.ln1.*', 'multiway.blocks.*.attn.*', 'multiway.blocks.*.image.*',\n"
         "                  'multiway.norm.*', 'mae_decoder.*']}\n"
         "  - {name: text, task: {type: mlm}, steps: " + std::to_string(steps2) + ",\n"
         "     freeze: ['image.*', 'multiway.blocks.*.ln1.*', 'multiway.blocks.*.attn.*', 'multiway.blocks.*.image.*',\n"
         "              'multiway.norm.*', 'mae_decoder.*']}\n"
         "  - name: vl\n"
         "    tasks:\n"
         "      - {type: contrastive, temperature_init: 0.1}\n"
         "      - {type: itm, exclude_same_label: true, hard_negative_warmup: 100, eval: {hard_negatives: " + d + "/hard_negatives.jsonl, rerank_k: 4, samples: 64}}\n"
         "      - {type: mlm, with_image: true}\n"
         "    steps: " + std::to_string(steps3) + "\n"
         "    freeze: ['mae_decoder.*']\n"
         "train: {checkpoint_every: 0, keep: 0, log_every: 1}\n"
         "eval: {every: 0, retrieval: true, retrieval_samples: 64}\n";
}

// Each test image's caption and a caption of another quadrant (tiny_data.h's classes).
void write_hard_negatives(const fs::path& data) {
  std::ifstream in(data / "test.jsonl");
  std::ofstream out(data / "hard_negatives.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    const int k = j["label"].get<int>();
    out << nlohmann::json{{"image", j["image"]}, {"text", std::string("a ") + loom::testing::kClasses[k] + " picture"},
                          {"negative", std::string("a ") + loom::testing::kClasses[(k + 1) % 4] + " picture"}}
               .dump()
        << "\n";
  }
}

int count_changed(const std::map<std::string, std::vector<float>>& a, const std::map<std::string, std::vector<float>>& b,
                  const std::string& prefix, int* seen) {
  int changed = 0;
  *seen = 0;
  for (auto& [k, v] : a)
    if (k.rfind(prefix, 0) == 0) {
      ++*seen;
      changed += v != b.at(k);
    }
  return changed;
}

}  // namespace

TEST(Vlmo, StageTwoLeavesTheSharedAttentionAndTheVisionExpertBitwiseAlone) {
  fs::path data = make_dataset("vlmo_freeze");
  write_hard_negatives(data);
  Config c = Config::parse(vlmo_recipe(data, 4, 4, 4), "vlmo.yaml");
  Recipe r = Recipe::from(c);
  Trainer t(r, c, (data / "run").string(), false);
  auto start = snapshot(t.model());
  t.train(4);
  auto after1 = snapshot(t.model());
  int seen = 0;
  EXPECT_GT(count_changed(start, after1, "multiway.blocks.0.attn.", &seen), 0) << "stage 1 trains the shared attention";
  EXPECT_EQ(count_changed(start, after1, "text.", &seen), 0) << "stage 1 reads no text";
  EXPECT_EQ(count_changed(start, after1, "multiway.blocks.0.text.", &seen), 0);
  t.train(8);
  auto after2 = snapshot(t.model());
  for (const char* p : kFrozenInStage2) {
    EXPECT_EQ(count_changed(after1, after2, p, &seen), 0) << p << " changed in stage 2, where it is frozen";
    EXPECT_GT(seen, 0) << p;
  }
  EXPECT_GT(count_changed(after1, after2, "multiway.blocks.0.text.", &seen), 0) << "stage 2 trains the language expert";
  EXPECT_GT(count_changed(after1, after2, "text.", &seen), 0);
  t.train();
  auto after3 = snapshot(t.model());
  for (const char* p : {"multiway.blocks.0.attn.", "multiway.blocks.1.vl.", "multiway.blocks.0.image.", "itm_head.", "image."})
    EXPECT_GT(count_changed(after2, after3, p, &seen), 0) << p << " did not train in stage 3";
  // The last block's own experts sit out the fused pass, but ITC's dual-encoder path trains them.
  EXPECT_GT(count_changed(after2, after3, "multiway.blocks.1.text.", &seen), 0);
  fs::remove_all(data);
}

TEST(Vlmo, ResumeAcrossBothStageBoundariesIsBitwiseExact) {
  fs::path data = make_dataset("vlmo_resume");
  write_hard_negatives(data);
  Config c = Config::parse(vlmo_recipe(data, 3, 3, 3), "vlmo.yaml");
  Recipe r = Recipe::from(c);
  {
    Trainer straight(r, c, (data / "straight").string(), false);
    straight.train();
  }
  {
    Trainer a(r, c, (data / "resumed").string(), false);
    a.train(2);
  }
  for (int64_t stop : {3, 5, 6, 8, -1}) {  // inside 1, at 1|2, inside 2, at 2|3, inside 3, the end
    Trainer b(r, c, (data / "resumed").string(), true);
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
  EXPECT_EQ(losses_of(data / "straight").size(), 9u);
  fs::remove_all(data);
}

TEST(Vlmo, ItmLearnsToTellTheCaptionFromItsHardNegative) {
  fs::path data = make_dataset("vlmo_itm");
  write_hard_negatives(data);
  Config c = Config::parse(replaced(vlmo_recipe(data, 1, 1, 400, 1.0e-3), "      - {type: mlm, with_image: true}\n", ""), "vlmo.yaml");
  Recipe r = Recipe::from(c);
  Trainer t(r, c, (data / "run").string(), false);
  t.train();
  const Metrics m = t.evaluate();
  // Chance is 0.5 for both; the quadrants are easy, so a working fusion path gets well above it.
  EXPECT_GT(m.at("eval/itm_acc"), 0.75) << "itm_pick " << m.at("eval/itm_pick");
  EXPECT_GT(m.at("eval/itm_pick"), 0.75);
  EXPECT_EQ(m.at("eval/itm_pairs"), 64);
  for (const char* k : {"eval/itc_pick", "eval/t2i_dual_r1", "eval/t2i_rerank_r1", "eval/i2t_rerank_r1", "eval/t2i_r1"})
    EXPECT_TRUE(m.count(k)) << k;
  // Text queries repeat (three templates per quadrant): text->image R@1 is of one right image among 16.
  EXPECT_GE(m.at("eval/t2i_rerank_r1"), 0.0);
  // loom retrieve --rerank: a caption's top 8 images by cosine, re-scored by ITM log-odds + ITC logit.
  const fs::path ckpt = data / "run" / "checkpoints" / "latest";
  ASSERT_TRUE(fs::exists(ckpt));
  const Embedder emb(r, ckpt.string());
  const data::Manifest test = data::Manifest::load((data / "test.jsonl").string());
  const Embeddings images = emb.embed_manifest((data / "test.jsonl").string(), "image", false);
  const std::string query = "a bottom right picture";
  const std::vector<Hit> dual = top_k(images, emb.embed_query("text", query), 8);
  const std::vector<Hit> re = emb.rerank("text", query, "image", test, dual);
  ASSERT_EQ(re.size(), dual.size());
  std::multiset<int64_t> a, b;
  for (size_t i = 0; i < re.size(); ++i) {
    a.insert(dual[i].row), b.insert(re[i].row);
    if (i > 0) {
      EXPECT_GE(re[i - 1].score, re[i].score);
    }
  }
  EXPECT_EQ(a, b) << "the same candidates";
  EXPECT_EQ(test.rows[size_t(re[0].row)].label, 3) << "the bottom-right quadrant first";
  // An image query against the captions: its own quadrant's caption first.
  const Embeddings texts = emb.embed_manifest((data / "test.jsonl").string(), "text", false);
  const std::string image = test.rows[1].image;
  const std::vector<Hit> captions = emb.rerank("image", image, "text", test, top_k(texts, emb.embed_query("image", image), 8));
  EXPECT_EQ(test.rows[size_t(captions[0].row)].label, test.rows[1].label);
  EXPECT_THROW(emb.rerank("image", image, "image", test, dual), Error);
  fs::remove_all(data);
}

TEST(Itm, HardNegativesFollowTheSimilaritySoftmax) {
  // One query against 5 candidates, candidate 2 the positive: draws follow softmax over the other
  // four (chi-square, 3 degrees of freedom, p = 0.001 threshold 16.27), never the positive.
  const std::vector<float> s{0.5f, -1.0f, 3.0f, 1.5f, 0.0f};
  const Tensor sim = Tensor::from(s, {1, 5});
  auto allowed = [](int64_t, int64_t j) { return j != 2; };
  std::vector<double> p(5, 0.0);
  double z = 0;
  for (int j = 0; j < 5; ++j) z += p[size_t(j)] = j == 2 ? 0.0 : std::exp(double(s[size_t(j)]));
  for (double& v : p) v /= z;
  Generator gen(1);
  const int n = 20000;
  std::vector<int> counts(5, 0);
  const std::vector<double> u = ops::rand({n}, gen, DType::f64).to_vector<double>();
  for (int i = 0; i < n; ++i) {
    const int64_t j = sample_hard_negatives(sim, allowed, {u[size_t(i)]})[0];
    ASSERT_NE(j, 2) << "drew the positive";
    ++counts[size_t(j)];
  }
  double chi2 = 0;
  for (int j = 0; j < 5; ++j)
    if (j != 2) chi2 += std::pow(counts[size_t(j)] - n * p[size_t(j)], 2) / (n * p[size_t(j)]);
  EXPECT_LT(chi2, 16.27) << counts[0] << " " << counts[1] << " " << counts[3] << " " << counts[4];
  EXPECT_EQ(counts[2], 0);
  // Nothing allowed: -1; scores that underflow: uniform over what is allowed.
  EXPECT_EQ(sample_hard_negatives(sim, [](int64_t, int64_t) { return false; }, {0.3})[0], -1);
  const Tensor far = Tensor::from(std::vector<float>{-1e30f, -1e30f, 0.f}, {1, 3});
  EXPECT_EQ(sample_hard_negatives(far, [](int64_t, int64_t j) { return j != 2; }, {0.9})[0], 1);
}

TEST(Itm, ARepeatedCaptionIsNeverItsOwnNegative) {
  // Texts 0 and 1 are the same caption: image 0's negative must be text 2 or 3, whatever the scores.
  const Tensor tokens = Tensor::from(std::vector<int64_t>{1, 7, 2, 1, 7, 2, 1, 8, 2, 1, 9, 2}, {4, 3});
  const Tensor emb = Tensor::from(std::vector<float>{1, 0, 1, 0, 0, 1, 0, 1}, {4, 2});
  Generator gen(2);
  for (int i = 0; i < 50; ++i) {
    const ItmNegatives n = itm_hard_negatives(emb, emb, ops::randn({4, 1, 2, 2}), tokens, 100.0, nullptr, gen);
    EXPECT_GE(n.text_for_image[0], 2);
    EXPECT_GE(n.text_for_image[1], 2);
    EXPECT_GE(n.image_for_text[0], 2);
    EXPECT_EQ(n.text_for_image[2], 3);  // its nearest other text at this scale
  }
  // exclude_same_label: distinct captions, but rows 0 and 1 share a label, so they are not each other's.
  const Tensor distinct = Tensor::from(std::vector<int64_t>{1, 7, 2, 1, 6, 2, 1, 8, 2, 1, 9, 2}, {4, 3});
  const Tensor labels = Tensor::from(std::vector<int64_t>{0, 0, 1, -1}, {4});
  for (int i = 0; i < 50; ++i) {
    const ItmNegatives n = itm_hard_negatives(emb, emb, ops::randn({4, 1, 2, 2}), distinct, 100.0, nullptr, gen, labels);
    EXPECT_GE(n.text_for_image[0], 2);
    EXPECT_GE(n.image_for_text[1], 2);
  }
}

TEST(Vlmo, BrokenRecipesNameFileLineAndKey) {
  fs::path data = make_dataset("vlmo_errors");
  write_hard_negatives(data);
  const std::string ok = vlmo_recipe(data, 1, 1, 1);
  const fs::path run = data / "run";
  // The VL expert past the last layer.
  std::string e = config_error(replaced(ok, "vl_from: 1", "vl_from: 2"), run);
  EXPECT_NE(e.find("bad.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("model.vl_from"), std::string::npos) << e;
  // A stage freezing a pattern that matches nothing.
  e = config_error(replaced(ok, "freeze: ['mae_decoder.*']", "freeze: ['multiway.blocks.*.ffn.*']"), run);
  EXPECT_NE(e.find("stages.2.freeze"), std::string::npos) << e;
  EXPECT_NE(e.find("matches no parameter"), std::string::npos) << e;
  // ITM on a model without a text tower, and on one without a fusion encoder.
  auto itm_only = [&](const std::string& model) {
    return "name: bad\nmodel:\n" + model + "tokenizer: {type: bpe, vocab_size: 64}\n"
           "data:\n  train: {manifest: " + data.string() + "/train.jsonl, batch_size: 16}\n"
           "task: {type: itm}\ntrain: {steps: 1}\n";
  };
  e = config_error(itm_only("  type: vit\n  vision: {type: vit, image_size: 8, channels: 1, patch: 2, width: 32, layers: 1, heads: 2}\n"), run);
  EXPECT_NE(e.find("bad.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("task.type"), std::string::npos) << e;
  EXPECT_NE(e.find("no text tower"), std::string::npos) << e;
  e = config_error(itm_only("  type: clip\n  embed_dim: 16\n"
                            "  vision: {type: vit, image_size: 8, channels: 1, patch: 2, width: 32, layers: 1, heads: 2}\n"
                            "  text: {type: transformer, context: 8, width: 32, layers: 1, heads: 2}\n"), run);
  EXPECT_NE(e.find("fusion encoder"), std::string::npos) << e;
  EXPECT_NE(e.find("task.type"), std::string::npos) << e;
  fs::remove_all(data);
}
