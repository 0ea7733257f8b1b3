// CLAP and AudioMAE through the trainer on a tiny generated audio set: tones at four pitches in mixed
// containers and rates. A tiny CLAP must learn (its loss falls, audio->text retrieval beats chance) and
// report audio-text metrics; AudioMAE (the mae task on model type ast) trains and draws a spectrogram
// reconstruction.
#include <gtest/gtest.h>
#include "tests/tmp_dir.h"
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include "data/audio.h"
#include "tests/trainers/tiny_data.h"
#include "trainers/trainer.h"

using namespace loom;
namespace fs = std::filesystem;
using loom::testing::losses_of;

namespace {

const char* kPitches[] = {"very low", "low", "high", "very high"};

// Each test gets its own directory: ctest runs them in parallel processes.
fs::path make_audio_dataset(const std::string& tag) {
  fs::path dir = loom::testing_support::tmp_path("loom_trainer_audio_" + tag);
  fs::remove_all(dir);
  fs::create_directories(dir / "clips");
  const double freqs[] = {200, 500, 1300, 3000};
  const char* exts[] = {".wav", ".flac", ".ogg"};
  const int rates[] = {16000, 8000, 22050};
  for (const char* split : {"train", "test"}) {
    std::ofstream m(dir / (std::string(split) + ".jsonl"));
    const int n = std::string(split) == "train" ? 128 : 32;
    for (int i = 0; i < n; ++i) {
      const int k = i % 4, rate = rates[i % 3];
      std::vector<float> x(static_cast<size_t>(rate / 2));
      for (size_t j = 0; j < x.size(); ++j)
        x[j] = float((0.2 + 0.02 * (i % 5)) * std::sin(2 * M_PI * freqs[k] * (1 + 0.01 * (i % 7)) * double(j) / rate));
      const std::string name = std::string(split) + "_" + std::to_string(i) + exts[i % 3];
      data::write_audio((dir / "clips" / name).string(), x, 1, rate);
      m << R"({"audio": "clips/)" << name << R"(", "text": "a )" << kPitches[k] << R"( tone", "label": )" << k << "}\n";
    }
  }
  std::ofstream c(dir / "classes.txt");
  for (const char* p : kPitches) c << p << " tone\n";
  return dir;
}

std::string audio_data(const fs::path& d) {
  const std::string a = "audio: {sample_rate: 16000, duration: 0.5, mean: -8.0, std: 5.0}";
  return "data:\n"
         "  train: {manifest: " + d.string() + "/train.jsonl, batch_size: 32, workers: 2, " + a + "}\n"
         "  eval: {manifest: " + d.string() + "/test.jsonl, batch_size: 32, workers: 1, " + a + "}\n";
}

nlohmann::json last_eval(const fs::path& run) {
  std::ifstream f(run / "metrics.jsonl");
  nlohmann::json last;
  for (std::string line; std::getline(f, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("eval/samples")) last = j;
  }
  return last;
}

TEST(Clap, TinyClapLearnsAndReportsAudioTextMetrics) {
  const fs::path data = make_audio_dataset("clap"), run = loom::testing_support::tmp_path("loom_trainer_clap_run");
  fs::remove_all(run);
  const std::string yaml =
      "name: tiny_clap\nseed: 1\n"
      "model:\n  type: clap\n  embed_dim: 16\n  projection: mlp\n"
      "  audio: {type: ast, mel_bins: 32, frames: 48, patch: 16, width: 32, layers: 2, heads: 2}\n"
      "  text: {type: transformer, context: 8, width: 32, layers: 1, heads: 2}\n"
      "tokenizer: {type: bpe, vocab_size: 64}\n"
      "task: {type: contrastive, pairs: [[audio, text]], temperature_init: 0.1}\n" + audio_data(data) +
      "optim: {type: adamw, lr: 3.0e-3, weight_decay: 0.01}\n"
      "schedule: {type: cosine, warmup_steps: 3}\n"
      "train: {steps: 40, checkpoint_every: 0, keep: 0, log_every: 1}\n"
      "eval: {every: 40, retrieval: true, zeroshot: {labels_from: " + (data / "classes.txt").string() +
      ", templates: ['a {}']}}\n";
  Config c = Config::parse(yaml, "tiny_clap.yaml");
  Trainer t(Recipe::from(c), c, run.string(), false);
  t.train();
  const std::vector<double> losses = losses_of(run);
  ASSERT_EQ(losses.size(), 40u);
  EXPECT_LT(losses.back(), 0.7 * losses.front());
  const nlohmann::json e = last_eval(run);
  for (const char* k : {"eval/a2t_r1", "eval/a2t_r5", "eval/t2a_r1", "eval/a2t_map10", "eval/t2a_map10", "eval/zeroshot_top1"})
    EXPECT_TRUE(e.contains(k)) << k << " missing from " << e.dump();
  // The zero-shot prompt is the training caption itself: this checks the mechanism, not generalisation.
  // Four captions, so chance for a2t R@1 (any copy of the right caption) is ~0.25.
  EXPECT_GT(e.value("eval/a2t_r1", 0.0), 0.5) << e.dump();
  EXPECT_GT(e.value("eval/zeroshot_top1", 0.0), 0.5) << e.dump();
}

TEST(Clap, AudioMaeTrainsAndDrawsASpectrogram) {
  const fs::path data = make_audio_dataset("audiomae"), run = loom::testing_support::tmp_path("loom_trainer_audiomae_run");
  fs::remove_all(run);
  const std::string yaml =
      "name: tiny_audiomae\nseed: 2\n"
      "model:\n  type: ast\n  audio: {type: ast, mel_bins: 32, frames: 48, patch: 8, width: 32, layers: 2, heads: 2, pos_embed: sincos}\n"
      "task: {type: mae, decoder: {width: 16, layers: 1, heads: 2}}\n" + audio_data(data) +
      "optim: {type: adamw, lr: 3.0e-3, weight_decay: 0.01}\n"
      "train: {steps: 12, checkpoint_every: 0, keep: 0, log_every: 1}\n"
      "eval: {every: 12}\n";
  Config c = Config::parse(yaml, "tiny_audiomae.yaml");
  Trainer t(Recipe::from(c), c, run.string(), false);
  t.train();
  const std::vector<double> losses = losses_of(run);
  ASSERT_EQ(losses.size(), 12u);
  EXPECT_LT(losses.back(), losses.front());
  EXPECT_TRUE(fs::exists(run / "eval" / "recon_step_12.png"));
  EXPECT_TRUE(last_eval(run).contains("eval/mae_loss"));
}

TEST(Clap, MismatchedPairsAndModelsAreClearErrors) {
  const fs::path data = make_audio_dataset("errors");
  const std::string base =
      "name: bad\nmodel:\n  type: clap\n"
      "  audio: {type: ast, mel_bins: 32, frames: 48, patch: 16, width: 32, layers: 1, heads: 2}\n"
      "  text: {type: transformer, context: 8, width: 32, layers: 1, heads: 2}\n" + audio_data(data) +
      "train: {steps: 1}\n";
  auto error_of = [](const std::string& yaml) {
    try {
      Config c = Config::parse(yaml, "bad.yaml");
      Recipe r = Recipe::from(c);
      Trainer t(r, c, (loom::testing_support::tmp_path("loom_trainer_bad_clap")).string(), false);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  std::string e = error_of(base + "task: {type: contrastive, pairs: [[image, text]]}\n");
  EXPECT_NE(e.find("bad.yaml:10: task.pairs: pair [image, text]: the model has no image tower"), std::string::npos) << e;
  e = error_of(base + "task: {type: contrastive, pairs: [[audio, image]]}\n");
  EXPECT_NE(e.find("task.pairs: pair [audio, image]: the model has no image tower (its towers: audio (ast), text "
                   "(transformer))"), std::string::npos) << e;
  std::string bins = base + "task: {type: contrastive}\n";
  bins.replace(bins.find("duration: 0.5"), 13, "duration: 0.5, mel_bins: 64");
  e = error_of(bins);
  EXPECT_NE(e.find("data.train.audio.mel_bins: 64 mel bins, but the model's audio tower reads 32"), std::string::npos) << e;
  // Overlapping patches (AST's stride 10 of 16) serve CLAP, not MAE, which reconstructs patch by patch.
  std::string strided = base + "task: {type: contrastive}\n";
  strided.replace(strided.find("patch: 16"), 9, "patch: 16, stride: 10");
  EXPECT_EQ(error_of(strided), "");
  strided.replace(strided.find("stride: 10"), 10, "stride: 17");
  e = error_of(strided);
  EXPECT_NE(e.find("model.audio.stride: must be in [1, patch 16]"), std::string::npos) << e;
  std::string mae = base + "task: {type: mae}\n";
  mae.replace(mae.find("type: clap"), 10, "type: ast");
  mae.replace(mae.find("patch: 16"), 9, "patch: 16, stride: 8");
  mae.erase(mae.find("  text: {"), mae.find("data:") - mae.find("  text: {"));
  e = error_of(mae);
  EXPECT_NE(e.find("non-overlapping patches"), std::string::npos) << e;
  EXPECT_NE(e.find("model.audio.stride"), std::string::npos) << e;
}

}  // namespace
