// The trainer end to end on a synthetic image-text set made here: a tiny CLIP must learn, resume
// must be bitwise exact, checkpoints must be whole and named by module paths, and broken recipes
// must stop before any work with a message naming file, line and key.
#include <gtest/gtest.h>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include "core/autograd.h"
#include "core/safetensors.h"
#include "data/webdataset.h"
#include "trainers/checkpoint.h"
#include "trainers/trainer.h"
#include "tests/trainers/tiny_data.h"

using namespace loom;
namespace fs = std::filesystem;
using loom::testing::make_dataset;
using loom::testing::losses_of;

namespace {

std::string recipe_text(const fs::path& data, int64_t steps) { return loom::testing::tiny_clip_recipe(data, steps); }

std::string expect_config_error(const std::string& yaml) {
  try {
    Config c = Config::parse(yaml, "bad.yaml");
    Recipe::from(c);
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a ConfigError for:\n" << yaml;
  return "";
}

}  // namespace

TEST(Trainer, TinyClipLearns) {
  fs::path data = make_dataset("learns");
  fs::path run = data / "run";
  Config c = Config::parse(recipe_text(data, 100), "tiny.yaml");
  Recipe r = Recipe::from(c);
  Trainer t(r, c, run.string(), false);
  Metrics before = t.evaluate();
  t.train();
  Metrics after = t.evaluate();
  auto losses = losses_of(run);
  ASSERT_EQ(losses.size(), 100u);
  // Chance is ln 32 = 3.47; each batch holds ~8 indistinguishable pairs per class, so the floor is ~ln 8 = 2.08.
  double first = (losses[0] + losses[1] + losses[2]) / 3, last = (losses[97] + losses[98] + losses[99]) / 3;
  EXPECT_GT(first, 3.0);
  EXPECT_LT(last, 2.5) << "loss did not fall: " << first << " -> " << last;
  EXPECT_GE(after.at("eval/zeroshot_top1"), 0.9) << "before training: " << before.at("eval/zeroshot_top1");
  // Retrieval counts same-class captions of another template as negatives (the image cannot tell the
  // template), so it cannot reach 1 here; it must still improve on the untrained model.
  EXPECT_GT(after.at("eval/i2t_r10"), before.at("eval/i2t_r10"));
  EXPECT_GT(after.at("eval/t2i_r1"), before.at("eval/t2i_r1"));
  // Checkpoints: the last K kept, latest points at the final one, names are module paths.
  EXPECT_TRUE(fs::exists(run / "checkpoints" / "step_00000100" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(run / "checkpoints" / "step_00000090"));
  EXPECT_FALSE(fs::exists(run / "checkpoints" / "step_00000080"));
  EXPECT_EQ(fs::read_symlink(run / "checkpoints" / "latest").string(), "step_00000100");
  auto ck = load_safetensors((run / "checkpoints" / "latest" / "model.safetensors").string());
  EXPECT_TRUE(ck.tensors.count("visual.blocks.0.attn.qkv.weight"));
  EXPECT_TRUE(ck.tensors.count("logit_scale"));
  auto opt = load_safetensors((run / "checkpoints" / "latest" / "optimizer.safetensors").string());
  EXPECT_TRUE(opt.tensors.count("visual.blocks.0.attn.qkv.weight.exp_avg_sq"));
  fs::remove_all(data);
}

// train.precision: bf16 (autocast: GEMMs and attention in bf16, norms, softmax and losses in f32,
// f32 master weights and AdamW state) learns the tiny set as f32 does; here on the CPU, where bf16
// is widened for the arithmetic, so this checks the policy and the trainer's handling of it.
TEST(Trainer, TinyClipLearnsInBf16) {
  fs::path data = make_dataset("bf16");
  fs::path run = data / "run";
  std::string yaml = recipe_text(data, 100);
  yaml.replace(yaml.find("log_every: 1}"), 13, "log_every: 1, precision: bf16}");
  Config c = Config::parse(yaml, "tiny_bf16.yaml");
  Recipe r = Recipe::from(c);
  Trainer t(r, c, run.string(), false);
  t.train();
  Metrics after = t.evaluate();
  auto losses = losses_of(run);
  ASSERT_EQ(losses.size(), 100u);
  const double first = (losses[0] + losses[1] + losses[2]) / 3, last = (losses[97] + losses[98] + losses[99]) / 3;
  EXPECT_GT(first, 3.0);
  EXPECT_LT(last, 2.5) << "loss did not fall: " << first << " -> " << last;
  EXPECT_GE(after.at("eval/zeroshot_top1"), 0.9);
  // The same run in f32: the first step's loss agrees to bf16's precision, and is not bitwise the
  // same (bf16 did the arithmetic).
  Config c32 = Config::parse(recipe_text(data, 1), "tiny.yaml");
  Recipe r32 = Recipe::from(c32);
  r32.eval_every = 0;
  Trainer(r32, c32, (data / "f32").string(), false).train();
  const double f32_first = losses_of(data / "f32").at(0);
  EXPECT_NEAR(losses[0], f32_first, 2e-2 * f32_first);
  EXPECT_NE(losses[0], f32_first);
  // Master weights and optimizer state stay f32 in the checkpoint.
  auto ck = load_safetensors((run / "checkpoints" / "latest" / "model.safetensors").string());
  EXPECT_EQ(ck.tensors.at("visual.blocks.0.attn.qkv.weight").dtype(), DType::f32);
  auto opt = load_safetensors((run / "checkpoints" / "latest" / "optimizer.safetensors").string());
  EXPECT_EQ(opt.tensors.at("visual.blocks.0.attn.qkv.weight.exp_avg").dtype(), DType::f32);
  fs::remove_all(data);
}

// train.device: cuda on a machine (or a build) without a GPU stops before any work, naming the
// recipe's file and key; --check still accepts the recipe (GPU recipes are checked anywhere).
TEST(Trainer, CudaWithoutAGpuIsAClearError) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a GPU is present: tests/gpu covers training on it";
  fs::path data = make_dataset("nogpu");
  std::string yaml = recipe_text(data, 2);
  yaml.replace(yaml.find("log_every: 1}"), 13, "log_every: 1, device: cuda}");
  Config c = Config::parse(yaml, "gpu.yaml");
  Recipe r = Recipe::from(c);  // the recipe itself is fine
  try {
    Trainer t(r, c, (data / "run").string(), false);
    ADD_FAILURE() << "a CUDA run started without a GPU";
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("gpu.yaml"), std::string::npos) << m;
    EXPECT_NE(m.find("train.device"), std::string::npos) << m;
    EXPECT_TRUE(m.find("no GPU is visible") != std::string::npos || m.find("built without CUDA") != std::string::npos) << m;
  }
  fs::remove_all(data);
}

// The same samples as WebDataset shards (data.train.shards) train exactly as their JSONL manifest,
// tokenizer included; missing shards are named, and --check lists them instead.
TEST(Trainer, WebDatasetShardsTrainAsTheirManifest) {
  fs::path data = make_dataset("shards");
  const data::PackReport rep =
      data::pack_webdataset(data::Manifest::load((data / "train.jsonl").string()), (data / "shards/train-%02d.tar").string(), 100);
  ASSERT_EQ(rep.shards.size(), 3u);
  const std::string manifest_yaml = recipe_text(data, 6);
  std::string shards_yaml = manifest_yaml;
  const std::string from = "manifest: " + data.string() + "/train.jsonl", to = "shards: \"" + data.string() + "/shards/train-{00..02}.tar\"";  // quoted: braces are YAML too
  shards_yaml.replace(shards_yaml.find(from), from.size(), to);
  for (const auto& [yaml, dir] : {std::pair{manifest_yaml, "from_manifest"}, std::pair{shards_yaml, "from_shards"}}) {
    Config c = Config::parse(yaml, "tiny.yaml");
    Recipe r = Recipe::from(c);
    r.eval_every = 0;
    Trainer(r, c, (data / dir).string(), false).train();
  }
  const std::vector<double> a = losses_of(data / "from_manifest"), b = losses_of(data / "from_shards");
  ASSERT_EQ(a.size(), 6u);
  EXPECT_EQ(a, b);

  std::string missing = shards_yaml;
  missing.replace(missing.find("{00..02}"), 8, "{00..04}");
  const std::string e = expect_config_error(missing);
  EXPECT_NE(e.find("data.train.shards: 2 of its 5 shards are not there"), std::string::npos) << e;
  fs::remove_all(data);
}

TEST(Trainer, ResumeIsBitwiseExact) {
  fs::path data = make_dataset("resume");
  Config c = Config::parse(recipe_text(data, 20), "tiny.yaml");
  // Drop-path and augmentation draw random numbers every step: resume must restore their state.
  c.apply_override("model.vision.drop_path=0.2");
  c.apply_override("data.train.transform={random_resized_crop: true, crop_scale_min: 0.5, hflip: true}");
  Recipe r = Recipe::from(c);
  r.eval_every = 0;
  {
    Trainer straight(r, c, (data / "straight").string(), false);
    straight.train();
  }
  {
    Trainer first_half(r, c, (data / "resumed").string(), false);
    first_half.train(10);
  }
  {
    Trainer second_half(r, c, (data / "resumed").string(), true);
    EXPECT_EQ(second_half.step(), 10);
    second_half.train();
  }
  auto a = load_safetensors((data / "straight/checkpoints/latest/model.safetensors").string());
  auto b = load_safetensors((data / "resumed/checkpoints/latest/model.safetensors").string());
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (auto& [k, t] : a.tensors) EXPECT_EQ(t.to_vector<float>(), b.tensors.at(k).to_vector<float>()) << k;
  EXPECT_EQ(losses_of(data / "straight"), losses_of(data / "resumed"));
  fs::remove_all(data);
}

TEST(Trainer, EpochsBecomeSteps) {
  fs::path data = make_dataset("epochs");
  std::string text = recipe_text(data, 10);
  text.replace(text.find("steps: 10,"), 10, "epochs: 2,");
  Config c = Config::parse(text, "tiny.yaml");
  Recipe r = Recipe::from(c);
  r.eval_every = 0;
  Trainer t(r, c, (data / "run").string(), false);
  t.train();
  EXPECT_EQ(t.step(), 2 * (256 / 32));  // 256 training rows, batch 32, drop_last
  fs::remove_all(data);
}

TEST(Trainer, GradientAccumulationTakesSeveralBatchesPerStep) {
  fs::path data = make_dataset("accum");
  Config c = Config::parse(recipe_text(data, 3), "tiny.yaml");
  c.apply_override("train.grad_accum=3");
  c.apply_override("train.clip_grad_norm=0.5");
  Recipe r = Recipe::from(c);
  r.eval_every = 0;
  { Trainer t(r, c, (data / "run").string(), false); t.train(); }
  std::ifstream f(data / "run/checkpoints/latest/trainer.json");
  auto st = nlohmann::json::parse(f);
  EXPECT_EQ(st["step"].get<int64_t>(), 3);
  EXPECT_EQ(st["optimizer_steps"].get<int64_t>(), 3);
  // 3 steps x 3 micro-batches = 9 batches; an epoch holds 256 / 32 = 8, so the next is epoch 1, batch 1.
  EXPECT_EQ(st["loader"]["epoch"].get<int64_t>(), 1);
  EXPECT_EQ(st["loader"]["batch"].get<int64_t>(), 1);
  fs::remove_all(data);
}

TEST(Trainer, ResumeAfterACrashDropsLostStepsAndContinuesExactly) {
  fs::path data = make_dataset("crash");
  Config c = Config::parse(recipe_text(data, 20), "tiny.yaml");
  Recipe r = Recipe::from(c);
  r.eval_every = 0;
  { Trainer straight(r, c, (data / "straight").string(), false); straight.train(); }
  {
    Trainer crashed(r, c, (data / "crashed").string(), false);
    crashed.train(15);  // checkpoints at 10 and 15; then pretend it died at 15 before the second was written
  }
  const fs::path ck = data / "crashed/checkpoints";
  fs::remove_all(ck / "step_00000015");
  fs::remove(ck / "latest");
  fs::create_directory_symlink("step_00000010", ck / "latest");
  EXPECT_EQ(losses_of(data / "crashed").size(), 15u);
  {
    Trainer resumed(r, c, (data / "crashed").string(), true);
    EXPECT_EQ(resumed.step(), 10);
    EXPECT_EQ(losses_of(data / "crashed").size(), 10u);  // steps 11-15 were lost with the crash
    resumed.train();
  }
  EXPECT_EQ(losses_of(data / "straight"), losses_of(data / "crashed"));
  // keep: 2 keeps the two newest by step number, and latest's target.
  EXPECT_TRUE(fs::exists(ck / "step_00000020"));
  EXPECT_EQ(fs::read_symlink(ck / "latest").string(), "step_00000020");
  fs::remove_all(data);
}

TEST(Trainer, ResumeRefusesAChangedRecipe) {
  fs::path data = make_dataset("changed");
  Config c = Config::parse(recipe_text(data, 10), "tiny.yaml");
  { Trainer t(Recipe::from(c), c, (data / "run").string(), false); t.train(5); }
  Config other = Config::parse(recipe_text(data, 10), "tiny.yaml");
  other.apply_override("optim.lr=1e-2");
  EXPECT_THROW(Trainer(Recipe::from(other), other, (data / "run").string(), true), Error);
  Config longer = Config::parse(recipe_text(data, 10), "tiny.yaml");
  longer.apply_override("train.steps=12");  // the length may change
  Trainer t(Recipe::from(longer), longer, (data / "run").string(), true);
  EXPECT_EQ(t.step(), 5);
  fs::remove_all(data);
}

TEST(Trainer, RefusesToOverwriteARun) {
  fs::path data = make_dataset("overwrite");
  Config c = Config::parse(recipe_text(data, 10), "tiny.yaml");
  Recipe r = Recipe::from(c);
  { Trainer t(r, c, (data / "run").string(), false); t.train(); }
  EXPECT_THROW(Trainer(r, c, (data / "run").string(), false), Error);
  EXPECT_THROW(Trainer(r, c, (data / "nothing_here").string(), true), Error);
  fs::remove_all(data);
}

TEST(Trainer, InitFromWithRemapAndReport) {
  fs::path data = make_dataset("init_from");
  Config c = Config::parse(recipe_text(data, 10), "tiny.yaml");
  Recipe r = Recipe::from(c);
  { Trainer t(r, c, (data / "run").string(), false); t.train(); }
  const std::string ck = (data / "run/checkpoints/latest").string();
  Generator g(99);
  TowerContext ctx;
  ctx.vocab_size = data::BpeTokenizer::load(ck + "/tokenizer.json").vocab_size();
  std::shared_ptr<MultimodalModel> model = r.model.build(g, ctx);
  MultimodalModel& fresh = *model;
  LoadReport rep = load_weights(fresh, {ck, {}, true});
  EXPECT_TRUE(rep.missing.empty());
  auto saved = load_safetensors(ck + "/model.safetensors").tensors;
  EXPECT_EQ(fresh.state_dict().at("text.ln_final.weight").to_vector<float>(), saved.at("text.ln_final.weight").to_vector<float>());
  // Renaming "text." away leaves the text tower missing: strict fails, non-strict reports.
  EXPECT_THROW(load_weights(fresh, {ck, {{"text.", "old_text."}}, true}), Error);
  LoadReport loose = load_weights(fresh, {ck, {{"text.", "old_text."}}, false});
  EXPECT_FALSE(loose.missing.empty());
  EXPECT_FALSE(loose.unexpected.empty());
  fs::remove_all(data);
}

TEST(Recipe, BrokenRecipesNameFileLineAndKey) {
  fs::path data = make_dataset("recipes");
  const std::string good = recipe_text(data, 10);
  Recipe::from(Config::parse(good, "good.yaml"));  // the base is valid

  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
  };
  std::string e = expect_config_error(replace("train: {steps: 10,", "train: {stpes: 10,"));
  EXPECT_NE(e.find("bad.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("train.steps"), std::string::npos) << e;  // the required key that is now missing
  EXPECT_NE(e.find("(is 'stpes' on line 14 a typo?)"), std::string::npos) << e;
  e = expect_config_error(replace("log_every: 1}", "log_every: 1, chekpoint_every: 3}"));
  EXPECT_NE(e.find("bad.yaml:14: train.chekpoint_every: unknown key (did you mean 'checkpoint_every'?)"), std::string::npos) << e;
  e = expect_config_error(replace("lr: 3.0e-3", "lr: fast"));
  EXPECT_NE(e.find("bad.yaml:12: optim.lr: expected a number, got 'fast'"), std::string::npos) << e;
  e = expect_config_error(replace("train.jsonl", "missing.jsonl"));
  EXPECT_NE(e.find("data.train.manifest: file not found"), std::string::npos) << e;
  e = expect_config_error(replace("patch: 4", "patch: 3"));
  EXPECT_NE(e.find("model.vision.patch"), std::string::npos) << e;
  e = expect_config_error(replace("type: cosine", "type: cosine_with_typo"));
  EXPECT_NE(e.find("schedule.type: 'cosine_with_typo' is not one of: cosine, linear, constant"), std::string::npos) << e;
  e = expect_config_error(replace("seed: 3", "seed: 3\nmodle: {}"));
  EXPECT_NE(e.find("modle: unknown key (did you mean 'model'?)"), std::string::npos) << e;
  e = expect_config_error(replace("train: {steps: 10,", "train: {steps: 10, epochs: 2,"));
  EXPECT_NE(e.find("exactly one of train.steps and train.epochs"), std::string::npos) << e;
  e = expect_config_error(replace("betas: [0.9, 0.98]}", "betas: [0.9, 0.98], eps: 0}"));
  EXPECT_NE(e.find("optim.eps: must be > 0"), std::string::npos) << e;
  e = expect_config_error(replace("seed: 3", "seed: 3\nkernels: {attention: flsh}"));
  EXPECT_NE(e.find("kernels.attention: 'flsh' is not one of: composed, flash"), std::string::npos) << e;
  e = expect_config_error(replace("log_every: 1}", "log_every: 1, precision: fp16}"));
  EXPECT_NE(e.find("train.precision: 'fp16' is not one of: fp32, bf16"), std::string::npos) << e;
  e = expect_config_error(replace("temperature_init: 0.1}", "temperature_init: 0.1, max_logit_scale: 0.5}"));
  EXPECT_NE(e.find("task.max_logit_scale: must be > 1"), std::string::npos) << e;
  e = expect_config_error("name: [unclosed\n");
  EXPECT_NE(e.find("YAML syntax error"), std::string::npos) << e;

  Config c = Config::parse(good, "good.yaml");
  c.apply_override("optim.lr=5e-4");
  c.apply_override("train.steps=7");
  Recipe r = Recipe::from(c);
  EXPECT_DOUBLE_EQ(r.stages[0].optim.lr, 5e-4);
  EXPECT_EQ(r.stages[0].steps, 7);
  Config bad = Config::parse(good, "good.yaml");
  bad.apply_override("optim.lrr=1");
  try {
    Recipe::from(bad);
    ADD_FAILURE() << "an unknown key given as an override must be rejected";
  } catch (const ConfigError& err) {
    EXPECT_NE(std::string(err.what()).find("override 'optim.lrr=1': optim.lrr: unknown key (did you mean 'lr'?)"),
              std::string::npos) << err.what();
  }
  Config bad_value = Config::parse(good, "good.yaml");
  bad_value.apply_override("optim.lr=fast");
  try {
    Recipe::from(bad_value);
    ADD_FAILURE() << "a wrong type given as an override must be rejected";
  } catch (const ConfigError& err) {
    EXPECT_NE(std::string(err.what()).find("override 'optim.lr=fast': optim.lr: expected a number, got 'fast'"), std::string::npos)
        << err.what();
  }
  EXPECT_THROW(bad.apply_override("no_equals_sign"), ConfigError);
  fs::remove_all(data);
}

TEST(Schedule, WarmupThenCosineAndLinear) {
  ScheduleConfig s{"cosine", 10, 0.0};
  EXPECT_DOUBLE_EQ(scheduled_lr(s, 1.0, 0, 110), 0.1);
  EXPECT_DOUBLE_EQ(scheduled_lr(s, 1.0, 9, 110), 1.0);
  EXPECT_NEAR(scheduled_lr(s, 1.0, 60, 110), 0.5, 1e-12);
  EXPECT_NEAR(scheduled_lr(s, 1.0, 110, 110), 0.0, 1e-12);
  s.type = "linear";
  EXPECT_NEAR(scheduled_lr(s, 2.0, 35, 110), 1.5, 1e-12);
  s.type = "constant";
  EXPECT_DOUBLE_EQ(scheduled_lr(s, 2.0, 100, 110), 2.0);
}

TEST(AdamW, MatchesTheUpdateRuleByHand) {
  Tensor w = Tensor::from(std::vector<double>{1.0, -2.0, 0.5, 3.0}, {2, 2}).set_requires_grad();
  Tensor b = Tensor::from(std::vector<double>{0.1, 0.2}, {2}).set_requires_grad();
  AdamW opt({{"fc.weight", w}, {"fc.bias", b}}, {0.1, 0.5, 0.9, 0.99, 1e-8, {}, 1.0});
  std::vector<double> g = {0.3, -0.1, 0.2, 0.4};
  w.set_grad(Tensor::from(g, {2, 2}));
  b.set_grad(Tensor::from(std::vector<double>{1.0, -1.0}, {2}));
  opt.step(0.1);
  // step 1: m̂ = g, v̂ = g², so the Adam step is lr·g/(|g|+eps); decay only on the 2-D weight.
  auto wv = w.to_vector<double>();
  const double w0[] = {1.0, -2.0, 0.5, 3.0};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(wv[size_t(i)], w0[i] * (1 - 0.1 * 0.5) - 0.1 * g[size_t(i)] / (std::abs(g[size_t(i)]) + 1e-8), 1e-9);
  auto bv = b.to_vector<double>();
  EXPECT_NEAR(bv[0], 0.1 - 0.1 / (1 + 1e-8), 1e-12);
  EXPECT_NEAR(bv[1], 0.2 + 0.1 / (1 + 1e-8), 1e-12);
  EXPECT_EQ(opt.steps(), 1);
}

TEST(AdamW, BiasCorrectionCountsEachParametersOwnSteps) {
  // b is frozen (no gradient) for two steps, then trained: its first update is the step-1 Adam update.
  Tensor a = Tensor::from(std::vector<double>{1.0}, {1}).set_requires_grad();
  Tensor b = Tensor::from(std::vector<double>{1.0}, {1}).set_requires_grad();
  AdamW opt({{"a", a}, {"b", b}}, {0.1, 0.0, 0.9, 0.99, 1e-8, {}, 1.0});
  for (int i = 0; i < 2; ++i) {
    a.set_grad(Tensor::from(std::vector<double>{0.5}, {1}));
    opt.step(0.1);
  }
  a.set_grad(Tensor::from(std::vector<double>{0.5}, {1}));
  b.set_grad(Tensor::from(std::vector<double>{0.5}, {1}));
  opt.step(0.1);
  EXPECT_NEAR(b.item<double>(), 1.0 - 0.1 * 0.5 / (0.5 + 1e-8), 1e-12);
  auto state = opt.state_dict();
  EXPECT_EQ(state.at("a.step").item<int64_t>(), 3);
  EXPECT_EQ(state.at("b.step").item<int64_t>(), 1);
}

TEST(ClipGradNorm, ScalesToTheBound) {
  Tensor a = Tensor::zeros({2}, DType::f64).set_requires_grad();
  a.set_grad(Tensor::from(std::vector<double>{3.0, 4.0}, {2}));
  EXPECT_NEAR(clip_grad_norm({a}, 1.0), 5.0, 1e-12);
  auto g = a.grad().to_vector<double>();
  EXPECT_NEAR(g[0], 0.6, 1e-6);
  EXPECT_NEAR(g[1], 0.8, 1e-6);
}

TEST(Checkpoint, LoadsWithPythonSafetensors) {
  if (std::system("python3 -c 'import safetensors.numpy' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "the Python safetensors package is not installed (scripts/setup installs it)";
  fs::path data = make_dataset("python");
  Config c = Config::parse(recipe_text(data, 2), "tiny.yaml");
  { Trainer t(Recipe::from(c), c, (data / "run").string(), false); t.train(); }
  const std::string model = (data / "run/checkpoints/latest/model.safetensors").string();
  const std::string opt = (data / "run/checkpoints/latest/optimizer.safetensors").string();
  const std::string script = std::string(LOOM_SOURCE_DIR) + "/scripts/check-safetensors.py";
  EXPECT_EQ(std::system((script + " " + model + " visual.blocks.0.attn.qkv.weight=96x32 logit_scale=scalar"
                         " text.ln_final.weight=32 > /dev/null").c_str()), 0);
  EXPECT_EQ(std::system((script + " " + opt + " visual.blocks.0.attn.qkv.weight.exp_avg=96x32 > /dev/null").c_str()), 0);
  EXPECT_NE(std::system((script + " " + model + " no.such.tensor=1 > /dev/null 2>&1").c_str()), 0);  // the check can fail
  fs::remove_all(data);
}

// A run that diverges (lr 1e4, no clipping): stop names the step and the loss part; skip_step
// changes no parameter and no optimizer state on the skipped steps, counts them, and goes on.
TEST(Trainer, NonFiniteLossStopsOrSkipsTheStep) {
  fs::path data = make_dataset("nonfinite");
  std::string yaml = recipe_text(data, 12);
  yaml.replace(yaml.find("lr: 3.0e-3"), 10, "lr: 1.0e+4");
  yaml.replace(yaml.find("warmup_steps: 5"), 15, "warmup_steps: 0");
  yaml.replace(yaml.find("checkpoint_every: 10"), 20, "checkpoint_every: 1");
  yaml.replace(yaml.find("keep: 2"), 7, "keep: 20");
  // The error a run of the recipe (with `override`, if any) stops with, or "" if it finishes.
  auto training_error = [&](const std::string& run, const std::string& override) {
    Config c = Config::parse(yaml, "diverge.yaml");
    if (!override.empty()) c.apply_override(override);
    Recipe r = Recipe::from(c);
    r.eval_every = 0;
    try {
      Trainer(r, c, (data / run).string(), false).train();
    } catch (const Error& err) {
      return std::string(err.what());
    }
    return std::string();
  };
  {
    const std::string e = training_error("stop", "");
    ASSERT_NE(e.find("step "), std::string::npos) << "the run did not diverge: " << e;
    EXPECT_TRUE(e.find("the loss infonce of task contrastive is nan") != std::string::npos ||
                e.find("is not finite") != std::string::npos) << e;
  }
  {  // train.detect_anomaly names the op where the first NaN or infinity appeared, forward or backward
    const std::string e = training_error("anomaly", "train.detect_anomaly=true");
    autograd::set_detect_anomaly(false);
    EXPECT_EQ(e.rfind("detect_anomaly: the ", 0), 0u) << e;
    std::cerr << "anomaly mode: " << e << "\n";
  }
  Config c = Config::parse(yaml, "diverge.yaml");
  c.apply_override("train.on_nonfinite=skip_step");
  Recipe r = Recipe::from(c);
  r.eval_every = 0;
  Trainer(r, c, (data / "skip").string(), false).train();
  // Find the first skipped step: the checkpoint after it equals the one before, optimizer included.
  std::ifstream f(data / "skip/metrics.jsonl");
  int64_t first_skip = -1, skipped = 0;
  for (std::string line; std::getline(f, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("train/skipped_steps") && first_skip < 0) first_skip = j["step"].get<int64_t>();
    if (j.contains("train/skipped_steps")) skipped = j["train/skipped_steps"].get<int64_t>();
  }
  ASSERT_GT(first_skip, 1) << "no step was skipped";
  EXPECT_GE(skipped, 1);
  auto dir = [&](int64_t s) { return checkpoint_dir((data / "skip").string(), s); };
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    auto before = load_safetensors((fs::path(dir(first_skip - 1)) / file).string());
    auto after = load_safetensors((fs::path(dir(first_skip)) / file).string());
    for (auto& [k, t] : before.tensors) EXPECT_EQ(t.to_vector<float>(), after.tensors.at(k).to_vector<float>()) << file << " " << k;
  }
  fs::remove_all(data);
}

// A GPU step leaves its numbers on the device and reads them back at log points only (no
// synchronisation in between). Forced on the CPU here: the same run gives the same metrics line for
// line, bitwise (gradient accumulation and clipping included, the clipping done on the device), and
// a divergence still stops, naming the first non-finite step, before any checkpoint holds its
// weights; the Trainer then refuses to evaluate or checkpoint them.
TEST(Trainer, StepNumbersReadBackAtLogPointsOnly) {
  fs::path data = make_dataset("deferred");
  auto run = [&](const std::string& dir, bool deferred, const std::string& yaml) {
    Config c = Config::parse(yaml, "deferred.yaml");
    Recipe r = Recipe::from(c);
    r.eval_every = 0;
    Trainer t(r, c, (data / dir).string(), false);
    t.set_defer_step_scalars(deferred);
    t.train();
  };
  std::string yaml = recipe_text(data, 24);
  yaml.replace(yaml.find("log_every: 1}"), 13, "log_every: 5, clip_grad_norm: 0.5, grad_accum: 3}");
  run("now", false, yaml);
  run("later", true, yaml);
  auto lines = [&](const std::string& dir) {
    std::vector<nlohmann::json> out;
    std::ifstream f(data / dir / "metrics.jsonl");
    for (std::string line; std::getline(f, line);) {
      auto j = nlohmann::json::parse(line);
      j.erase("train/samples_per_s");
      j.erase("time");
      out.push_back(j);
    }
    return out;
  };
  const auto now = lines("now"), later = lines("later");
  ASSERT_EQ(now.size(), 5u);  // steps 5, 10, 15, 20, 24
  ASSERT_EQ(later.size(), now.size());
  for (size_t i = 0; i < now.size(); ++i) {
    // Bitwise: the same sums in the same order (grad_accum 3 divides inexactly), the same clipping.
    for (const char* k : {"train/loss", "train/grad_norm", "train/infonce"})
      EXPECT_EQ(later[i].at(k).get<double>(), now[i].at(k).get<double>()) << k << " at line " << i;
  }
  // Divergence: found at the first read-back after it, named by its step; the checkpoint written at
  // each earlier step is whole, and none exists for the bad step or after it.
  std::string bad = recipe_text(data, 12);
  bad.replace(bad.find("lr: 3.0e-3"), 10, "lr: 1.0e+4");
  bad.replace(bad.find("warmup_steps: 5"), 15, "warmup_steps: 0");
  bad.replace(bad.find("checkpoint_every: 10"), 20, "checkpoint_every: 1");
  bad.replace(bad.find("keep: 2"), 7, "keep: 20");
  bad.replace(bad.find("log_every: 1}"), 13, "log_every: 6}");
  std::string err;
  try {
    run("diverges", true, bad);
  } catch (const Error& e) {
    err = e.what();
  }
  ASSERT_NE(err.find("step "), std::string::npos) << "the run did not diverge: " << err;
  EXPECT_NE(err.find("stopping before it spoils the weights"), std::string::npos) << err;
  const int64_t bad_step = std::stoll(err.substr(err.find("step ") + 5));
  EXPECT_FALSE(fs::exists(checkpoint_dir((data / "diverges").string(), bad_step))) << err;
  if (bad_step > 1) {
    EXPECT_TRUE(fs::exists(checkpoint_dir((data / "diverges").string(), bad_step - 1))) << err;
  }
  {  // a caller that catches the error cannot go on to use the spoiled weights
    Config c = Config::parse(bad, "deferred.yaml");
    Recipe r = Recipe::from(c);
    r.eval_every = 0;
    Trainer t(r, c, (data / "caught").string(), false);
    t.set_defer_step_scalars(true);
    EXPECT_THROW(t.train(), Error);
    EXPECT_THROW(t.save_checkpoint(), Error);
    EXPECT_THROW(t.evaluate(), Error);
  }
  fs::remove_all(data);
}

// Found by fuzz_recipe: YAML lets a list or a mapping be a key; a recipe says so instead of letting
// yaml-cpp's conversion error escape.
TEST(Trainer, ComplexYamlKeysAreConfigErrors) {
  fs::path data = make_dataset("yamlkeys");
  const std::string base = recipe_text(data, 2);
  const std::string e = expect_config_error(base + "? [a, b]\n: 1\n");
  EXPECT_NE(e.find("bad.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("a key must be a plain name, not a list or a mapping"), std::string::npos) << e;
  const std::string f = expect_config_error(base + "init_from: {path: " + data.string() + "/train.jsonl, remap: {a: [b]}}\n");
  EXPECT_NE(f.find("init_from.remap"), std::string::npos) << f;
  fs::remove_all(data);
}

// loom bench with and without --in-memory: both time real steps (the parameters move), and the
// in-memory run stops its loader (its worker threads joined) without hanging or crashing.
TEST(Trainer, BenchFromTheLoaderAndInMemory) {
  fs::path data = make_dataset("bench");
  for (bool in_memory : {false, true}) {
    Config c = Config::parse(recipe_text(data, 10), "tiny.yaml");
    Recipe r = Recipe::from(c);
    r.eval_every = 0;
    Trainer t(r, c, (data / (in_memory ? "run_mem" : "run_loader")).string(), false);
    const std::vector<float> before = t.model().named_parameters().front().second.detach().clone().to_vector<float>();
    Trainer::BenchTimes times;
    const double sps = t.bench(3, 1, nullptr, &times, in_memory);
    EXPECT_TRUE(std::isfinite(sps) && sps > 0) << (in_memory ? "in memory" : "loader");
    EXPECT_GT(times.step_ms, 0);
    EXPECT_NE(t.model().named_parameters().front().second.to_vector<float>(), before);
  }
  fs::remove_all(data);
}
