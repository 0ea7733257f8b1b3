// The trainer on a GPU (label gpu; skipped visibly without one): modules and batches move to the
// device, a run in f32 follows the CPU run's losses, a bf16 run learns, and its checkpoint
// evaluates on the CPU. What scripts/gpu-check runs first on a GPU machine.
#include <gtest/gtest.h>
#include <cmath>
#include <filesystem>
#include "core/uploader.h"
#include "layers/transformer.h"
#include "trainers/trainer.h"
#include "tests/trainers/tiny_data.h"

using namespace loom;
namespace fs = std::filesystem;
using loom::testing::losses_of;
using loom::testing::make_dataset;

namespace {

#define REQUIRE_GPU() \
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU"

std::string recipe_text(const fs::path& data, int64_t steps, const std::string& device, const std::string& precision) {
  return loom::testing::tiny_clip_recipe(
      data, steps, "checkpoint_every: 50, keep: 2, log_every: 1, device: " + device + ", precision: " + precision);
}

}  // namespace

TEST(ModuleCuda, ToDeviceMovesEveryTensorAndHandlesFollow) {
  REQUIRE_GPU();
  Generator g(1);
  Linear lin(8, 4, true, g);
  const std::vector<float> w = lin.weight.to_vector<float>();
  lin.to(Device::cuda());
  EXPECT_TRUE(lin.weight.device().is_cuda());  // the member handle follows the registry
  EXPECT_TRUE(lin.device().is_cuda());
  for (auto& [name, p] : lin.named_parameters()) EXPECT_TRUE(p.device().is_cuda()) << name;
  Tensor y = lin.forward(ops::rand({3, 8}, g, DType::f32, Device::cuda()));
  EXPECT_TRUE(y.device().is_cuda());
  lin.to(Device::cpu());
  EXPECT_EQ(lin.weight.to_vector<float>(), w);  // a round trip changes no bit
}

TEST(UploaderCuda, SlotsAlternateAndCopiesArriveWhole) {
  REQUIRE_GPU();
  Uploader up(Device::cuda());
  Generator g(2);
  Uploader::Tensors previous;
  Tensor previous_host;
  for (int i = 0; i < 12; ++i) {  // growing sizes (slots reallocate), two keys, one of them integer
    Tensor host = ops::randn({int64_t(1000 + 997 * i)}, g);
    Tensor ids = Tensor::from(std::vector<int64_t>{i, 2 * i, 3 * i}, {3});
    Uploader::Tensors dev = up.upload({{"x", host}, {"ids", ids}});
    up.taken();
    ASSERT_TRUE(dev.at("x").device().is_cuda());
    Tensor doubled = ops::mul(dev.at("x"), 2.0);  // compute-stream work after the copy
    ASSERT_EQ(doubled.to_vector<float>(), ops::mul(host, 2.0).to_vector<float>()) << "batch " << i;
    ASSERT_EQ(dev.at("ids").to_vector<int64_t>(), ids.to_vector<int64_t>()) << "batch " << i;
    if (previous.count("x")) {  // the other slot still holds the previous batch, untouched
      ASSERT_EQ(previous.at("x").to_vector<float>(), previous_host.to_vector<float>()) << "batch " << i - 1;
      ASSERT_FALSE(previous.at("x").same_storage(dev.at("x")));
    }
    previous = dev;
    previous_host = host;
  }
}

TEST(TrainerCuda, F32FollowsTheCpuRun) {
  REQUIRE_GPU();
  fs::path data = make_dataset("cuda_f32");
  auto losses = [&](const std::string& device) {
    Config c = Config::parse(recipe_text(data, 20, device, "fp32"), device + ".yaml");
    Recipe r = Recipe::from(c);
    r.eval_every = 0;
    Trainer t(r, c, (data / device).string(), false);
    EXPECT_EQ(t.device().is_cuda(), device == "cuda");
    t.train();
    return losses_of(data / device);
  };
  const auto cpu = losses("cpu"), gpu = losses("cuda");
  ASSERT_EQ(cpu.size(), 20u);
  ASSERT_EQ(gpu.size(), 20u);
  EXPECT_NEAR(gpu[0], cpu[0], 1e-4 * std::abs(cpu[0]));  // the same weights and batch: sums in another order only
  for (size_t i = 0; i < cpu.size(); ++i) EXPECT_NEAR(gpu[i], cpu[i], 2e-2 * std::abs(cpu[i])) << "step " << i + 1;
  fs::remove_all(data);
}

TEST(TrainerCuda, Bf16LearnsAndItsCheckpointEvaluatesOnTheCpu) {
  REQUIRE_GPU();
  fs::path data = make_dataset("cuda_bf16");
  Config c = Config::parse(recipe_text(data, 100, "cuda", "bf16"), "bf16.yaml");
  Recipe r = Recipe::from(c);
  Trainer t(r, c, (data / "run").string(), false);
  t.train();
  Metrics m = t.evaluate();
  EXPECT_GE(m.at("eval/zeroshot_top1"), 0.9);
  const auto l = losses_of(data / "run");
  ASSERT_EQ(l.size(), 100u);
  EXPECT_LT((l[97] + l[98] + l[99]) / 3, 2.5);
  // The checkpoint is device-free: evaluated on the CPU in f32 it gives about the same zero-shot,
  // and `loom eval` of the GPU recipe (on the GPU, in bf16) what the trainer's evaluation gave.
  Config cc = Config::parse(recipe_text(data, 100, "cpu", "fp32"), "cpu.yaml");
  Metrics on_cpu = evaluate_recipe(Recipe::from(cc), (data / "run" / "checkpoints" / "latest").string());
  EXPECT_NEAR(on_cpu.at("eval/zeroshot_top1"), m.at("eval/zeroshot_top1"), 0.1);
  Metrics on_gpu = evaluate_recipe(r, (data / "run" / "checkpoints" / "latest").string());
  EXPECT_NEAR(on_gpu.at("eval/zeroshot_top1"), m.at("eval/zeroshot_top1"), 1e-9);
  fs::remove_all(data);
}

// A checkpoint taken while the next batch is already prefetched to the GPU saves the position before
// it: 10 steps, resume, 10 more follow the 20 uninterrupted steps (up to the order of GPU sums; a
// skipped or repeated batch would show as a different loss at once).
TEST(TrainerCuda, ResumeWithAPrefetchedBatchSeesTheSameBatches) {
  REQUIRE_GPU();
  fs::path data = make_dataset("cuda_resume");
  auto run = [&](const std::string& dir, int64_t stop_at, bool resume) {
    Config c = Config::parse(recipe_text(data, 20, "cuda", "fp32"), "resume.yaml");
    Recipe r = Recipe::from(c);
    r.eval_every = 0;
    Trainer t(r, c, (data / dir).string(), resume);
    t.train(stop_at);
  };
  run("straight", -1, false);
  run("resumed", 10, false);
  run("resumed", -1, true);
  const auto a = losses_of(data / "straight"), b = losses_of(data / "resumed");
  ASSERT_EQ(a.size(), 20u);
  ASSERT_EQ(b.size(), 20u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 1e-5 * std::abs(a[i])) << "step " << i + 1;
  fs::remove_all(data);
}

