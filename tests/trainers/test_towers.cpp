// Models as towers keyed by modality (layers/towers.h, trainers/models.h): the general form
// (model.towers) with three towers trained on two pairs through the image anchor and evaluated on
// every pair, temperatures learnable or fixed, embedding and retrieval across any two towers, the
// recipe errors, and a tower type and a model family added from outside the library (what
// docs/extending.md promises: one file each and a registration line, no edit to the trainer, the
// contrastive task or a factory).
#include <gtest/gtest.h>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include "data/audio.h"
#include "tests/tmp_dir.h"
#include "tests/trainers/tiny_data.h"
#include "trainers/embedding_index.h"
#include "trainers/trainer.h"

using namespace loom;
namespace fs = std::filesystem;

namespace {

const char* kSides[] = {"top left", "top right", "bottom left", "bottom right"};

// Scenes of one of four classes seen and heard: an 8x8 image bright in the class's quadrant, a tone at
// the class's pitch, and a caption naming the quadrant. Rows hold all three.
fs::path make_scenes(const std::string& tag) {
  fs::path dir = loom::testing_support::tmp_path("loom_towers_" + tag);
  fs::remove_all(dir);
  fs::create_directories(dir / "media");
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> noise(0, 60);
  const double freqs[] = {200, 500, 1300, 3000};
  // ImageBind's way: image-text and image-audio pairs from disjoint halves of the training scenes.
  std::ofstream it(dir / "train_image_text.jsonl"), ia(dir / "train_image_audio.jsonl");
  for (const char* split : {"train", "test"}) {
    std::ofstream m(dir / (std::string(split) + ".jsonl"));
    const int n = std::string(split) == "train" ? 128 : 32;
    for (int i = 0; i < n; ++i) {
      const int k = i % 4;
      const std::string stem = std::string(split) + "_" + std::to_string(i);
      std::ofstream f(dir / "media" / (stem + ".pgm"), std::ios::binary);
      f << "P5\n8 8\n255\n";
      for (int y = 0; y < 8; ++y)
        for (int x = 0; x < 8; ++x) {
          const bool lit = (y < 4) == (k < 2) && (x < 4) == (k % 2 == 0);
          f.put(char(std::min(255, (lit ? 180 : 20) + noise(rng))));
        }
      f.close();
      std::vector<float> wave(4000);
      for (size_t j = 0; j < wave.size(); ++j)
        wave[j] = float(0.3 * std::sin(2 * M_PI * freqs[k] * (1 + 0.01 * (i % 7)) * double(j) / 8000.0));
      data::write_audio((dir / "media" / (stem + ".wav")).string(), wave, 1, 8000);
      m << R"({"image": "media/)" << stem << R"(.pgm", "audio": "media/)" << stem << R"(.wav", "text": "the )" << kSides[k]
        << R"( scene", "label": )" << k << "}\n";
      if (std::string(split) == "test") continue;
      if (i % 2 == 0)
        it << R"({"image": "media/)" << stem << R"(.pgm", "text": "the )" << kSides[k] << R"( scene", "label": )" << k << "}\n";
      else
        ia << R"({"image": "media/)" << stem << R"(.pgm", "audio": "media/)" << stem << R"(.wav", "label": )" << k << "}\n";
    }
  }
  std::ofstream c(dir / "classes.txt");
  for (const char* s : kSides) c << s << "\n";
  return dir;
}

std::string towers_recipe(const fs::path& d, const std::string& task, int64_t steps = 30) {
  const std::string a = "audio: {sample_rate: 8000, duration: 0.5, mean: -8.0, std: 5.0, mel_bins: 16}";
  return "name: tiny_towers\nseed: 4\n"
         "model:\n  embed_dim: 16\n  towers:\n"
         "    image: {type: vit, image_size: 8, channels: 1, patch: 4, width: 32, layers: 1, heads: 2}\n"
         "    audio: {type: ast, mel_bins: 16, frames: 48, patch: 8, width: 32, layers: 1, heads: 2}\n"
         "    text: {type: transformer, context: 8, width: 32, layers: 1, heads: 2}\n"
         "tokenizer: {type: bpe, vocab_size: 64}\n"
         "task: " + task + "\n"
         "data:\n"
         "  train: {manifest: " + d.string() + "/train.jsonl, batch_size: 32, workers: 1, " + a + "}\n"
         "  eval: {manifest: " + d.string() + "/test.jsonl, batch_size: 32, workers: 1, " + a + "}\n"
         "optim: {type: adamw, lr: 3.0e-3, weight_decay: 0.01}\n"
         "schedule: {type: cosine, warmup_steps: 3}\n"
         "train: {steps: " + std::to_string(steps) + ", log_every: 5, threads: 2}\n"
         "eval:\n  every: " + std::to_string(steps) + "\n  zeroshot: {labels_from: " + d.string() + "/classes.txt, templates: ['the {} scene']}\n"
         "  retrieval: true\n";
}

std::vector<nlohmann::json> metrics_of(const fs::path& run) {
  std::ifstream f(run / "metrics.jsonl");
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(f, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(Towers, ThreeTowersBindThroughTheImageAndEvaluateEveryPair) {
  const fs::path d = make_scenes("bind"), run = d / "run";
  Config c = Config::parse(towers_recipe(d, "{type: contrastive, pairs: [[image, text], [image, audio]], temperature_init: 0.1}"),
                           "tiny_towers.yaml");
  Recipe r = Recipe::from(c);
  EXPECT_EQ(r.model.type, "towers");
  Trainer t(r, c, run.string(), false);
  // Towers and heads named by modality, one temperature per trained pair (none for audio-text).
  const auto sd = t.model().state_dict();
  for (const char* k : {"image.patch_embed.proj.weight", "audio.pos_embed", "text.token_embedding", "image_proj.weight",
                        "audio_proj.weight", "text_proj.weight", "logit_scale_image_text", "logit_scale_image_audio"})
    EXPECT_TRUE(sd.count(k)) << k;
  EXPECT_FALSE(sd.count("logit_scale_audio_text"));
  EXPECT_FLOAT_EQ(sd.at("logit_scale_image_audio").item<float>(), float(std::log(10.0)));
  t.train();
  const auto m = metrics_of(run);
  ASSERT_FALSE(m.empty());
  const nlohmann::json& first = m.front();
  nlohmann::json last_train, last_eval;
  for (const auto& j : m) (j.contains("eval/samples") ? last_eval : last_train) = j;
  for (const char* k : {"train/image_text", "train/image_audio", "train/logit_scale_image_text", "train/logit_scale_image_audio"})
    EXPECT_TRUE(first.contains(k)) << k;
  // Each pair's loss is logged, and their sum is the step's loss.
  EXPECT_NEAR(first["train/loss"].get<double>(), first["train/image_text"].get<double>() + first["train/image_audio"].get<double>(),
              1e-5);
  EXPECT_LT(last_train["train/image_text"].get<double>(), first["train/image_text"].get<double>());
  EXPECT_LT(last_train["train/image_audio"].get<double>(), first["train/image_audio"].get<double>());
  // Every pair and direction, the never-trained audio-text among them; zero-shot for both non-text towers.
  for (const char* k : {"eval/i2a_r1", "eval/a2i_r1", "eval/i2t_r1", "eval/t2i_r1", "eval/a2t_r1", "eval/t2a_r5",
                        "eval/a2t_map10", "eval/i2a_clips", "eval/image_zeroshot_top1", "eval/audio_zeroshot_top1"})
    EXPECT_TRUE(last_eval.contains(k)) << k;
  EXPECT_GT(last_eval["eval/image_zeroshot_top1"].get<double>(), 0.5);  // chance 0.25
  EXPECT_GT(last_eval["eval/i2a_r1"].get<double>(), 0.0);
  EXPECT_EQ(last_eval["eval/samples"].get<double>(), 32.0);

  // Any tower against any other: an audio query ranked against an image index.
  const Embedder e(r, (run / "checkpoints/latest").string());
  EXPECT_EQ(e.kinds(), (std::vector<std::string>{"image", "audio", "text"}));
  const Embeddings images = e.embed_manifest((d / "test.jsonl").string(), "image", false);
  EXPECT_EQ(images.kind, "image");
  EXPECT_EQ(images.vectors.shape(), (Shape{32, 16}));
  const Embeddings sounds = e.embed_manifest((d / "test.jsonl").string(), "audio", false);
  EXPECT_EQ(sounds.vectors.shape(), (Shape{32, 16}));
  const std::vector<Hit> hits = top_k(images, e.embed_query("audio", (d / "media/test_2.wav").string()), 5);
  ASSERT_EQ(hits.size(), 5u);
  EXPECT_GE(hits[0].score, hits[4].score);
  EXPECT_NE(error_of([&] { e.embed_manifest((d / "test.jsonl").string(), "video", false); }).find("not video"), std::string::npos);
}

TEST(Towers, FixedTemperatureHasNoParameter) {
  const fs::path d = make_scenes("fixed"), run = d / "run";
  Config c = Config::parse(towers_recipe(d, "{type: contrastive, pairs: [[audio, image]], temperature_fixed: 0.05}", 4),
                           "tiny_towers.yaml");
  Recipe r = Recipe::from(c);
  Trainer t(r, c, run.string(), false);
  for (const auto& [name, _] : t.model().named_parameters()) EXPECT_EQ(name.find("logit_scale"), std::string::npos) << name;
  t.train();
  const auto m = metrics_of(run);
  EXPECT_TRUE(m.front().contains("train/infonce"));  // one pair: the loss keeps its name
  EXPECT_FALSE(m.front().contains("train/logit_scale"));
}

TEST(Towers, RecipeErrorsNameFileLineAndKey) {
  const fs::path d = make_scenes("errors");
  auto error = [&](const std::string& text) {
    return error_of([&] { Recipe::from(Config::parse(text, "tiny_towers.yaml")); });
  };
  std::string e = error(towers_recipe(d, "{type: contrastive, pairs: [[image, video]]}"));
  EXPECT_NE(e.find("tiny_towers.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("task.pairs"), std::string::npos) << e;
  EXPECT_NE(e.find("no video tower"), std::string::npos) << e;
  e = error(towers_recipe(d, "{type: contrastive, pairs: [[image, image]]}"));
  EXPECT_NE(e.find("itself"), std::string::npos) << e;
  e = error(towers_recipe(d, "{type: contrastive, pairs: [[image, text], [text, image]]}"));
  EXPECT_NE(e.find("twice"), std::string::npos) << e;
  e = error(towers_recipe(d, "{type: contrastive}"));  // three towers: which pairs?
  EXPECT_NE(e.find("task.pairs"), std::string::npos) << e;
  std::string text = towers_recipe(d, "{type: contrastive, pairs: [[image, text]]}");
  text.replace(text.find("audio: {type: ast"), 17, "audio: {type: vit");
  e = error(text);
  EXPECT_NE(e.find("model.towers.audio.type"), std::string::npos) << e;
  EXPECT_NE(e.find("reads image"), std::string::npos) << e;
  text = towers_recipe(d, "{type: contrastive, pairs: [[image, text]]}");
  text.replace(text.find("model:\n"), 7, "model:\n  type: clip\n");
  e = error(text);
  EXPECT_NE(e.find("model.towers"), std::string::npos) << e;
  e = error(towers_recipe(d, "{type: contrastive, pairs: [[image, text]], temperature_fixed: 0.05, temperature_init: 0.1}"));
  EXPECT_NE(e.find("not both"), std::string::npos) << e;
  e = error(towers_recipe(d, "{type: mae, input: text}"));
  EXPECT_NE(e.find("task.input"), std::string::npos) << e;
  EXPECT_NE(e.find("image or audio tower"), std::string::npos) << e;
}

// ---------------------------------------------------------------- extending from outside the library
namespace {

// A tower type of its own: an image flattened and put through one Linear (a "pixels" trunk).
class PixelTower : public Encoder {
 public:
  PixelTower(int64_t channels, int64_t size, int64_t width, Generator& gen) : channels_(channels), size_(size), width_(width) {
    fc = std::make_shared<Linear>(channels * size * size, width, true, gen);
    register_module("fc", fc);
  }
  Tensor encode(const Tensor& images, Generator*) const override {
    return ops::gelu(fc->forward(images.reshape({images.size(0), channels_ * size_ * size_})));
  }
  int64_t output_width() const override { return width_; }
  EncoderInput input() const override { return {"image", channels_, size_, size_, 0}; }
  std::shared_ptr<Linear> fc;

 private:
  int64_t channels_, size_, width_;
};

TowerSpec read_pixel_tower(const Config& c, const std::string& k) {
  const int64_t channels = c.i64(k + ".channels", 1), size = c.i64(k + ".image_size"), width = c.i64(k + ".width");
  if (width < 1) c.fail(k + ".width", "must be >= 1");
  TowerSpec s;
  s.input = {"image", channels, size, size, 0};
  s.width = width;
  s.build = [=](Generator& g, const TowerContext&) -> std::shared_ptr<Encoder> {
    return std::make_shared<PixelTower>(channels, size, width, g);
  };
  return s;
}

// A family of its own: the pixel tower and a text tower, CLAP-style MLP heads, one temperature.
ModelSpec read_pixel_clip(const Config& c) {
  ModelSpec m;
  m.towers = {{"image", read_tower(c, "model.image", "pixels")}, {"text", read_tower(c, "model.text", "transformer")}};
  m.embed_dim = read_embed_dim(c);
  m.make = [](const ModelSpec& s, const TowerContext& ctx, Generator& gen) -> std::shared_ptr<MultimodalModel> {
    TowerLayout l;
    l.embed_dim = s.embed_dim;
    for (const auto& [modality, spec] : s.towers)
      l.towers.push_back({modality, modality, [t = spec, ctx](Generator& g) { return t.build(g, ctx); },
                          [](int64_t in, int64_t out, Generator& g) { return projection_head(in, out, true, g); }});
    const PairTemperature p = s.pair("image", "text");
    l.scales.push_back({"image", "text", "logit_scale", p.init});
    return std::make_shared<MultimodalModel>(l, gen);
  };
  return m;
}

}  // namespace

TEST(Towers, ATowerTypeAndAFamilyAddedFromOutsideTrain) {
  register_tower_type("pixels", "image", read_pixel_tower);  // the two registration lines
  register_model_family("pixel_clip", read_pixel_clip);
  EXPECT_THROW(register_tower_type("pixels", "image", read_pixel_tower), Error);
  const fs::path d = loom::testing::make_dataset("towers_extend");
  std::string text = loom::testing::tiny_clip_recipe(d, 20);
  const std::string vision = "  vision: {type: vit, image_size: 8, channels: 1, patch: 4, width: 32, layers: 1, heads: 2}\n";
  ASSERT_NE(text.find(vision), std::string::npos);
  text.replace(text.find(vision), vision.size(), "  type: pixel_clip\n  image: {type: pixels, image_size: 8, channels: 1, width: 32}\n");
  Config c = Config::parse(text, "pixel_clip.yaml");
  Recipe r = Recipe::from(c);
  EXPECT_EQ(r.model.type, "pixel_clip");
  Trainer t(r, c, (d / "run").string(), false);
  EXPECT_TRUE(t.model().state_dict().count("image.fc.weight"));
  EXPECT_TRUE(t.model().state_dict().count("image_proj.fc2.weight"));
  t.train();
  const auto losses = loom::testing::losses_of(d / "run");
  ASSERT_GE(losses.size(), 10u);
  EXPECT_LT(losses.back(), losses.front());
  const Metrics m = t.evaluate();
  EXPECT_GT(m.at("eval/zeroshot_top1"), 0.5);  // chance 0.25
}

// ---------------------------------------------------------------- several data sources in a stage
namespace {

// The binding recipe on two sources: image-text and image-audio pairs from disjoint scenes.
std::string two_source_recipe(const fs::path& d, int64_t steps, const std::string& weights = "{it: 0.5, ia: 0.5}") {
  std::string text = towers_recipe(d, "{type: contrastive, pairs: [[image, text], [image, audio]], temperature_init: 0.1}", steps);
  const std::string a = "audio: {sample_rate: 8000, duration: 0.5, mean: -8.0, std: 5.0, mel_bins: 16}";
  const std::string train = "  train: {manifest: " + d.string() + "/train.jsonl, batch_size: 32, workers: 1, " + a + "}\n";
  text.replace(text.find(train), train.size(),
               train + "  it: {manifest: " + d.string() + "/train_image_text.jsonl, batch_size: 16, workers: 1}\n"
                       "  ia: {manifest: " + d.string() + "/train_image_audio.jsonl, batch_size: 16, workers: 2, " + a + "}\n");
  text.replace(text.find("train: {steps: "), 8, "train: {data: " + weights + ", checkpoint_every: 4, keep: 0, ");
  return text;
}

std::string file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

TEST(Towers, TwoDataSourcesTrainTheirOwnPairsAndResumeBitwise) {
  const fs::path d = make_scenes("sources");
  Config c = Config::parse(two_source_recipe(d, 12), "two_sources.yaml");
  Recipe r = Recipe::from(c);
  ASSERT_EQ(r.stages[0].sources.size(), 2u);
  { Trainer t(r, c, (d / "straight").string(), false); t.train(); }
  {
    Trainer t(r, c, (d / "resumed").string(), false);
    t.train(6);  // mid-stage, between the sources' batches
  }
  { Trainer t(r, c, (d / "resumed").string(), true); t.train(); }
  EXPECT_EQ(file_bytes(d / "straight/checkpoints/step_00000012/model.safetensors"),
            file_bytes(d / "resumed/checkpoints/step_00000012/model.safetensors"));
  EXPECT_EQ(file_bytes(d / "straight/checkpoints/step_00000012/optimizer.safetensors"),
            file_bytes(d / "resumed/checkpoints/step_00000012/optimizer.safetensors"));
  // Each step drew one source: its pair's loss alone, both pairs over the run, at about the weights.
  int64_t it = 0, ia = 0;
  for (const auto& j : metrics_of(d / "straight")) {
    if (!j.contains("train/loss")) continue;
    const bool has_it = j.contains("train/image_text"), has_ia = j.contains("train/image_audio");
    it += has_it, ia += has_ia;
  }
  EXPECT_GT(it, 0);
  EXPECT_GT(ia, 0);
  // A step logged alone (log_every 1 below) holds exactly one pair; the weights decide how often.
  Config c1 = Config::parse(two_source_recipe(d, 40, "{it: 0.8, ia: 0.2}") , "two_sources.yaml");
  c1.apply_override("train.log_every=1");
  c1.apply_override("train.checkpoint_every=0");
  Recipe r1 = Recipe::from(c1);
  { Trainer t(r1, c1, (d / "ratio").string(), false); t.train(); }
  it = ia = 0;
  for (const auto& j : metrics_of(d / "ratio")) {
    if (!j.contains("train/loss")) continue;
    EXPECT_NE(j.contains("train/image_text"), j.contains("train/image_audio")) << j.dump();
    it += j.contains("train/image_text"), ia += j.contains("train/image_audio");
  }
  EXPECT_EQ(it + ia, 40);
  EXPECT_GE(it, 24);  // 32 expected; a binomial(40, 0.8) is below 24 once in ~2000 seeds
  EXPECT_GE(ia, 2);
}

TEST(Towers, DataSourcesATaskCannotUseAreRecipeErrors) {
  const fs::path d = make_scenes("sources_errors");
  auto error = [&](const std::string& text) {
    return error_of([&] { Recipe::from(Config::parse(text, "two_sources.yaml")); });
  };
  std::string e = error(two_source_recipe(d, 4, "{it: 0.0, ia: 0.0}"));
  EXPECT_NE(e.find("two_sources.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("train.data: the weights of the sources must sum to a positive number"), std::string::npos) << e;
  e = error(two_source_recipe(d, 4, "{it: 1.0, nowhere: 1.0}"));
  EXPECT_NE(e.find("train.data.nowhere: no section data.nowhere"), std::string::npos) << e;
  e = error(two_source_recipe(d, 4, "{it: 1.0, ia: -1}"));
  EXPECT_NE(e.find("train.data.ia: a weight must be >= 0"), std::string::npos) << e;
  e = error(two_source_recipe(d, 4, "{it: 1.0, train: 0.0}"));  // train, never drawn, would serve it
  EXPECT_NE(e.find("no source of this stage with a weight above 0 provides image, audio"), std::string::npos) << e;
  // Only image-text sources: nothing serves [image, audio].
  std::string text = two_source_recipe(d, 4, "{it: 0.5, it2: 0.5}");
  text.insert(text.find("  ia: {"), "  it2: {manifest: " + d.string() + "/train_image_text.jsonl}\n");
  e = error(text);
  EXPECT_NE(e.find("no source of this stage with a weight above 0 provides image, audio"), std::string::npos) << e;
  // A source that serves no pair: texts only.
  {
    std::ofstream t(d / "texts.jsonl");
    t << R"({"text": "the top left scene"})" << "\n";
  }
  text = two_source_recipe(d, 4, "{it: 0.5, ia: 0.4, texts: 0.1}");
  text.insert(text.find("  ia: {"), "  texts: {manifest: " + d.string() + "/texts.jsonl}\n");
  e = error(text);
  EXPECT_NE(e.find("train.data.texts: task contrastive cannot use data.texts (it provides text; the task reads "
                   "image, text or image, audio)"), std::string::npos) << e;
  e = error(two_source_recipe(d, 4).replace(two_source_recipe(d, 4).find("steps: 4"), 8, "epochs: 1"));
  EXPECT_NE(e.find("give steps"), std::string::npos) << e;
}

// ---------------------------------------------------------------- several tasks in a stage
TEST(Towers, TwoTasksInAStageAddTheirWeightedLosses) {
  const fs::path d = make_scenes("two_tasks");
  std::string text = towers_recipe(d, "{type: contrastive}", 3);
  text.replace(text.find("task: {type: contrastive}\n"), 26,
               "tasks:\n  - {type: mae, input: image, mask_ratio: 0.5, decoder: {width: 16, layers: 1, heads: 2}}\n"
               "  - {type: contrastive, pairs: [[image, audio]], temperature_fixed: 0.05, weight: 0.01}\n");
  text.replace(text.find("log_every: 5"), 12, "log_every: 1");
  Config c = Config::parse(text, "two_tasks.yaml");
  Recipe r = Recipe::from(c);
  EXPECT_EQ(r.stages[0].task.type, "mae+contrastive");
  { Trainer t(r, c, (d / "run").string(), false); t.train(); }
  const auto m = metrics_of(d / "run");
  ASSERT_FALSE(m.empty());
  const auto& first = m.front();
  ASSERT_TRUE(first.contains("train/mae") && first.contains("train/infonce")) << first.dump();
  // Parts are logged unweighted; the step's loss is their weighted sum.
  EXPECT_NEAR(first["train/loss"].get<double>(), first["train/mae"].get<double>() + 0.01 * first["train/infonce"].get<double>(), 1e-5);
  bool evaluated_both = false;
  for (const auto& j : m) evaluated_both = evaluated_both || (j.contains("eval/mae_loss") && j.contains("eval/a2i_r1"));
  EXPECT_TRUE(evaluated_both);

  auto error = [&](const std::string& tasks) {
    std::string t2 = text;
    t2.replace(t2.find("tasks:\n"), t2.find("data:\n") - t2.find("tasks:\n"), tasks);
    return error_of([&] { Recipe::from(Config::parse(t2, "two_tasks.yaml")); });
  };
  std::string e = error("tasks:\n  - {type: contrastive, pairs: [[image, text]]}\n  - {type: contrastive, pairs: [[image, audio]]}\n");
  EXPECT_NE(e.find("tasks.1.type: the stage already has a task named contrastive"), std::string::npos) << e;
  e = error("tasks:\n  - {type: mae, weight: -1}\n");
  EXPECT_NE(e.find("tasks.0.weight: must be >= 0"), std::string::npos) << e;
  e = error("task: {type: mae}\ntasks:\n  - {type: mae}\n");
  EXPECT_NE(e.find("not both"), std::string::npos) << e;
  e = error("tasks: []\n");
  EXPECT_NE(e.find("tasks: expected a list of tasks"), std::string::npos) << e;
}

// The issue's case: two sources (image-text, image-audio) and two tasks (MAE on every batch's images,
// contrastive on the pair each batch holds), stopped mid-stage and resumed: bitwise the straight run.
TEST(Towers, TwoSourcesAndTwoTasksResumeBitwise) {
  const fs::path d = make_scenes("sources_tasks");
  std::string text = two_source_recipe(d, 10);
  text.replace(text.find("task: {type: contrastive"), 6,
               "tasks:\n  - {type: mae, input: image, mask_ratio: 0.5, decoder: {width: 16, layers: 1, heads: 2}}\n  - ");
  Config c = Config::parse(text, "sources_tasks.yaml");
  Recipe r = Recipe::from(c);
  ASSERT_EQ(r.stages[0].task.type, "mae+contrastive");
  { Trainer t(r, c, (d / "straight").string(), false); t.train(); }
  { Trainer t(r, c, (d / "resumed").string(), false); t.train(5); }
  { Trainer t(r, c, (d / "resumed").string(), true); t.train(); }
  for (const char* f : {"model.safetensors", "optimizer.safetensors"})
    EXPECT_EQ(file_bytes(d / "straight/checkpoints/step_00000010" / f), file_bytes(d / "resumed/checkpoints/step_00000010" / f)) << f;
  int64_t with_mae = 0;
  for (const auto& j : metrics_of(d / "straight")) with_mae += j.contains("train/mae");
  EXPECT_GT(with_mae, 0);
}

// ---------------------------------------------------------------- CAV-MAE: joint layers, joint MAE
namespace {

std::string cavmae_recipe(const fs::path& d, int64_t steps, const std::string& weights = "1.0, 0.01") {
  const auto comma = weights.find(',');
  const std::string a = "audio: {sample_rate: 8000, duration: 0.5, mean: -8.0, std: 5.0, mel_bins: 16}";
  return "name: tiny_cavmae\nseed: 6\n"
         "model:\n  embed_dim: 16\n  towers:\n"
         "    audio: {type: ast, mel_bins: 16, frames: 48, patch: 8, width: 32, layers: 1, heads: 2}\n"
         "    image: {type: vit, image_size: 8, channels: 1, patch: 4, width: 32, layers: 1, heads: 2}\n"
         "  joint: {layers: 1, over: [audio, image], heads: 2}\n"
         "tasks:\n"
         "  - {type: mae, inputs: [audio, image], weight: " + weights.substr(0, comma) +
         ", decoder: {width: 16, layers: 1, heads: 2}}\n"
         "  - {type: contrastive, pairs: [[audio, image]], temperature_fixed: 0.05, weight:" + weights.substr(comma + 1) + "}\n"
         "data:\n"
         "  train: {manifest: " + d.string() + "/train.jsonl, batch_size: 32, workers: 1, " + a + "}\n"
         "  eval: {manifest: " + d.string() + "/test.jsonl, batch_size: 32, workers: 1, " + a + "}\n"
         "optim: {type: adamw, lr: 3.0e-3, weight_decay: 0.01}\n"
         "train: {steps: " + std::to_string(steps) + ", log_every: 1, threads: 2}\n"
         "eval: {every: " + std::to_string(steps) + ", retrieval: true}\n";
}

}  // namespace

TEST(Towers, CavMaeReconstructsBothModalitiesThroughJointLayers) {
  const fs::path d = make_scenes("cavmae");
  Config c = Config::parse(cavmae_recipe(d, 6), "tiny_cavmae.yaml");
  Recipe r = Recipe::from(c);
  EXPECT_EQ(r.model.joint_over, (std::vector<std::string>{"audio", "image"}));
  {
    Trainer t(r, c, (d / "run").string(), false);
    const auto sd = t.model().state_dict();
    for (const char* k : {"joint.blocks.0.attn.qkv.weight", "joint.type_audio", "joint.norm.weight", "joint.norm_image.weight",
                          "mae_decoder.pred_audio.weight", "mae_decoder.pred_image.weight", "mae_decoder.pos_audio",
                          "mae_decoder.type_image", "mae_decoder.mask_token"})
      EXPECT_TRUE(sd.count(k)) << k;
    EXPECT_EQ(sd.at("mae_decoder.pred_audio.weight").size(0), 8 * 8);  // an 8x8 spectrogram patch
    EXPECT_EQ(sd.at("mae_decoder.pred_image.weight").size(0), 4 * 4);
    t.train();
  }
  const auto m = metrics_of(d / "run");
  const auto& first = m.front();
  for (const char* k : {"train/mae_audio", "train/mae_image", "train/infonce"}) EXPECT_TRUE(first.contains(k)) << k;
  EXPECT_NEAR(first["train/loss"].get<double>(),
              first["train/mae_audio"].get<double>() + first["train/mae_image"].get<double>() + 0.01 * first["train/infonce"].get<double>(),
              1e-5);
  nlohmann::json ev;
  for (const auto& j : m) if (j.contains("eval/samples")) ev = j;
  for (const char* k : {"eval/mae_loss_audio", "eval/mae_loss_image", "eval/a2i_r5", "eval/i2a_r5"}) EXPECT_TRUE(ev.contains(k)) << k;
  EXPECT_TRUE(fs::exists(d / "run/eval/recon_audio_step_6.png"));
  EXPECT_TRUE(fs::exists(d / "run/eval/recon_image_step_6.png"));
  // The contrastive loss reads the MAE's masked pass (shared tokens); with the MAE off (weight 0) it
  // encodes the whole inputs, so its first loss differs.
  Config off = Config::parse(cavmae_recipe(d, 1, "0.0, 1.0"), "tiny_cavmae.yaml");
  { Trainer t(Recipe::from(off), off, (d / "off").string(), false); t.train(); }
  const auto m_off = metrics_of(d / "off");
  ASSERT_TRUE(m_off.front().contains("train/infonce"));
  EXPECT_FALSE(m_off.front().contains("train/mae_audio"));
  EXPECT_NE(m_off.front()["train/infonce"].get<double>(), first["train/infonce"].get<double>());
}

TEST(Towers, JointLayerRecipeErrors) {
  const fs::path d = make_scenes("cavmae_errors");
  auto error = [&](std::string text, const std::string& from, const std::string& to) {
    text.replace(text.find(from), from.size(), to);
    return error_of([&] { Recipe::from(Config::parse(text, "tiny_cavmae.yaml")); });
  };
  const std::string base = cavmae_recipe(d, 2);
  std::string e = error(base, "over: [audio, image]", "over: [audio, video]");
  EXPECT_NE(e.find("model.joint.over: the model has no video tower"), std::string::npos) << e;
  e = error(base, "image: {type: vit, image_size: 8, channels: 1, patch: 4, width: 32,",
            "image: {type: vit, image_size: 8, channels: 1, patch: 4, width: 16,");
  EXPECT_NE(e.find("of one width"), std::string::npos) << e;
  e = error(base, "  joint: {layers: 1, over: [audio, image], heads: 2}\n", "");
  EXPECT_NE(e.find("tasks.0.inputs: joint masked autoencoding needs joint layers over its inputs"), std::string::npos) << e;
  e = error(base, "inputs: [audio, image]", "inputs: [audio]");
  EXPECT_NE(e.find("at least two inputs"), std::string::npos) << e;
}

// A pair fixed in one stage and learned in another: the model holds the learnable temperature, from
// the stage that learns it.
TEST(Towers, APairLearnedInAnyStageHasItsTemperature) {
  const fs::path d = make_scenes("stage_temperatures");
  std::string text = towers_recipe(d, "{type: contrastive}", 2);
  text.replace(text.find("task: {type: contrastive}\n"), 26,
               "stages:\n"
               "  - {name: fixed, steps: 1, task: {type: contrastive, pairs: [[image, audio]], temperature_fixed: 0.05}}\n"
               "  - {name: learned, steps: 1, task: {type: contrastive, pairs: [[audio, image]], temperature_init: 0.1}}\n");
  text.replace(text.find("train: {steps: 2, "), 18, "train: {");
  text.erase(text.find("eval:\n"));
  Recipe r = Recipe::from(Config::parse(text, "stages.yaml"));
  ASSERT_EQ(r.model.pairs.size(), 1u);
  EXPECT_TRUE(r.model.pairs[0].learnable);
  EXPECT_DOUBLE_EQ(r.model.pairs[0].init, 0.1);
  Generator g(1);
  EXPECT_TRUE(r.model.build(g)->pair_logit_scale("image", "audio").defined());
}
