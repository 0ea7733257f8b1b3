// Curves: the TensorBoard event files a run writes are read by TensorBoard's own reader (scalars,
// the MAE reconstructions as images, a resumed run without repeated steps), and loom plot draws runs
// overlaid into a PNG.
#include <gtest/gtest.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include "data/image.h"
#include "tests/trainers/tiny_data.h"
#include "trainers/plot.h"
#include "trainers/tensorboard.h"
#include "trainers/trainer.h"

using namespace loom;
namespace fs = std::filesystem;

namespace {

std::string mae_then_clip(const fs::path& data, const std::string& train_keys) {
  const std::string d = data.string();
  return "name: curves\nseed: 5\n"
         "model:\n  type: clip\n  embed_dim: 16\n"
         "  vision: {type: vit, image_size: 8, channels: 1, patch: 2, width: 32, layers: 1, heads: 2}\n"
         "  text: {type: transformer, context: 8, width: 32, layers: 1, heads: 2}\n"
         "tokenizer: {type: bpe, vocab_size: 64}\n"
         "data:\n"
         "  train: {manifest: " + d + "/train.jsonl, batch_size: 32, workers: 1}\n"
         "  eval: {manifest: " + d + "/test.jsonl, batch_size: 64, workers: 1}\n"
         "optim: {type: adamw, lr: 3.0e-3}\n"
         "stages:\n"
         "  - {name: mae, task: {type: mae, decoder: {width: 16, layers: 1, heads: 2}, reconstructions: 2}, steps: 4}\n"
         "  - {name: clip, task: {type: contrastive}, steps: 4}\n"
         "train: {log_every: 1, checkpoint_every: 2" + train_keys + "}\n"
         "eval:\n  every: 4\n  retrieval: true\n";
}

// TensorBoard's Python, from the virtual environment scripts/setup makes; empty when it is not there.
std::string tensorboard_python() {
  const std::string py = std::string(LOOM_SOURCE_DIR) + "/.venv-tensorboard/bin/python";
  if (!fs::exists(py) || std::system((py + " -c 'import tensorboard' >/dev/null 2>&1").c_str()) != 0) return "";
  return py;
}

}  // namespace

TEST(TensorBoard, Crc32cOfTheStandardCheckString) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);  // the CRC-32C check value
  EXPECT_EQ(crc32c("", 0), 0u);
}

TEST(TensorBoard, ItsReaderListsAResumedRunsScalarsAndImages) {
  const std::string py = tensorboard_python();
  if (py.empty()) GTEST_SKIP() << "TensorBoard is not installed in .venv-tensorboard (scripts/setup makes it)";
  fs::path data = loom::testing::make_dataset("tensorboard");
  Config c = Config::parse(mae_then_clip(data, ""), "curves.yaml");
  const fs::path run = data / "run";
  { Trainer t(Recipe::from(c), c, run.string(), false); t.train(6); }  // interrupted after step 6 ...
  { Trainer t(Recipe::from(c), c, run.string(), true); t.train(); }    // ... and resumed from its checkpoint
  EXPECT_EQ(std::distance(fs::directory_iterator(run / "tensorboard"), fs::directory_iterator()), 2);
  const std::string script = std::string(LOOM_SOURCE_DIR) + "/scripts/check-tensorboard";
  const std::string args = " --scalars train/loss,train/lr,train/mae,train/infonce,eval/mae_loss,eval/i2t_r1"
                           " --images eval/reconstruction --steps train/loss=8,train/lr=8";
  const std::string out = (data / "tb.txt").string();
  EXPECT_EQ(std::system((py + " " + script + " " + run.string() + args + " >" + out + " 2>&1").c_str()), 0)
      << std::ifstream(out).rdbuf();
  // The check can fail: a tag no run wrote.
  EXPECT_NE(std::system((py + " " + script + " " + run.string() + " --scalars eval/nothing >/dev/null 2>&1").c_str()), 0);
  fs::remove_all(data);
}

TEST(TensorBoard, OffWritesNoEventFiles) {
  fs::path data = loom::testing::make_dataset("tensorboard_off");
  Config c = Config::parse(mae_then_clip(data, ", tensorboard: false"), "curves.yaml");
  { Trainer t(Recipe::from(c), c, (data / "run").string(), false); t.train(2); }
  EXPECT_TRUE(fs::exists(data / "run" / "metrics.jsonl"));
  EXPECT_FALSE(fs::exists(data / "run" / "tensorboard"));
  fs::remove_all(data);
}

TEST(Plot, DrawsTwoRunsOverlaidIntoAPng) {
  const fs::path dir = loom::testing_support::tmp_path("loom_plot");
  fs::remove_all(dir);
  for (const char* name : {"run", "baseline"}) {
    fs::create_directories(dir / name);
    std::ofstream f(dir / name / "metrics.jsonl");
    const double scale = std::string(name) == "run" ? 1.0 : 2.0;
    for (int s = 1; s <= 20; ++s)
      f << "{\"step\":" << s << ",\"train/loss\":" << scale * 3.0 / s << ",\"train/lr\":" << 1e-3 * s / 20
        << ",\"train/samples_per_s\":100}\n";
    f << "{\"step\":20,\"eval/zeroshot_top1\":" << 0.4 * scale << ",\"eval/samples\":64}\n";
    f << "{\"step\":3,\"train/loss\":";  // a torn last line (a run killed while writing) is left out
  }
  std::vector<RunCurves> runs = {read_curves((dir / "run").string()), read_curves((dir / "baseline").string())};
  EXPECT_EQ(runs[0].name, "run");
  EXPECT_EQ(runs[0].series.at("train/loss").size(), 20u);
  const std::vector<std::string> metrics = choose_metrics(runs, {});
  EXPECT_EQ(metrics, (std::vector<std::string>{"train/loss", "train/lr", "eval/zeroshot_top1"}));  // counts left out
  EXPECT_EQ(choose_metrics(runs, {"eval/*"}), (std::vector<std::string>{"eval/samples", "eval/zeroshot_top1"}));
  EXPECT_THROW(choose_metrics(runs, {"eval/nothing*"}), Error);
  const std::string png = (dir / "curves.png").string();
  plot_curves(runs, metrics, png);
  const Tensor img = data::decode_image(png, 3);  // [3, H, W]: three panels in a row, under the legend
  EXPECT_EQ(img.size(2), 3 * 420);
  EXPECT_EQ(img.size(1), 300 + 34);
  // Both runs' colours are drawn: the first's blue and the second's orange.
  const std::vector<float> v = img.to_vector<float>();
  const size_t plane = size_t(img.size(1) * img.size(2));
  int64_t blue = 0, orange = 0;
  for (size_t i = 0; i < plane; ++i) {
    const float r = v[i], g = v[plane + i], b = v[2 * plane + i];
    blue += r < 0.2f && b > 0.6f;
    orange += r > 0.9f && g > 0.4f && g < 0.6f && b < 0.15f;
  }
  EXPECT_GT(blue, 200);
  EXPECT_GT(orange, 200);
  EXPECT_THROW(read_curves((dir / "missing").string()), Error);
  fs::create_directories(dir / "empty");
  std::ofstream(dir / "empty" / "metrics.jsonl") << "\n";
  EXPECT_THROW(read_curves((dir / "empty").string()), Error);
  fs::remove_all(dir);
}
