// Data parallelism, run as `mpiexec -np 2 test_distributed` (tests/CMakeLists.txt). Every rank runs
// every test; a test that needs one process's reference computes it on each rank (cheap) or on
// rank 0 while the others wait.
#include <gtest/gtest.h>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include "core/autograd.h"
#include "core/rng.h"
#include "losses/contrastive.h"
#include "trainers/distributed/communicator.h"
#include "trainers/distributed/gather.h"
#include "trainers/distributed/reducer.h"
#include "trainers/tasks/itm.h"
#include "trainers/recipe.h"
#include "trainers/trainer.h"
#include "../trainers/tiny_data.h"

namespace {
using namespace loom;
namespace fs = std::filesystem;
using distributed::Communicator;

Communicator& world() { return *distributed::mpi(); }

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();
  EXPECT_EQ(x.size(), y.size());
  double d = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) d = std::max(d, double(std::abs(x[i] - y[i])));
  return d;
}

TEST(Distributed, RunsOnTwoRanks) {
  ASSERT_EQ(world().world(), 2) << "run this binary under mpiexec -np 2";
  EXPECT_EQ(world().backend(), "mpi");
  const distributed::LaunchEnv e = distributed::launch_env();
  EXPECT_EQ(e.world, 2);
  EXPECT_EQ(e.rank, world().rank());
}

TEST(Distributed, Collectives) {
  Communicator& c = world();
  const int r = c.rank();
  Tensor t = Tensor::from(std::vector<float>{float(r + 1), float(10 * (r + 1))}, {2});
  c.all_reduce_sum(t);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{3, 30}));
  Tensor u = Tensor::from(std::vector<double>{double(r), 0.5}, {2});
  c.all_reduce_sum_async(u)->wait();
  EXPECT_EQ(u.to_vector<double>(), (std::vector<double>{1, 1}));

  // Uneven rows: rank 0 holds one row of [r, r], rank 1 two.
  std::vector<float> mine;
  for (int i = 0; i <= r; ++i) mine.insert(mine.end(), {float(r), float(i)});
  std::vector<int64_t> counts;
  Tensor all = c.all_gather_rows(Tensor::from(mine, {int64_t(r + 1), 2}), &counts);
  EXPECT_EQ(counts, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(all.shape(), (Shape{3, 2}));
  EXPECT_EQ(all.to_vector<float>(), (std::vector<float>{0, 0, 1, 0, 1, 1}));
  Tensor back = c.reduce_scatter_rows(all, counts);  // both ranks hold `all`: each gets twice its rows
  std::vector<float> twice;
  for (float v : mine) twice.push_back(2 * v);
  EXPECT_EQ(back.to_vector<float>(), twice);

  Tensor b = Tensor::from(std::vector<int64_t>{r == 0 ? 7 : -1, r == 0 ? 8 : -1}, {2});
  c.broadcast(b, 0);
  EXPECT_EQ(b.to_vector<int64_t>(), (std::vector<int64_t>{7, 8}));
  c.barrier();
}

// The contrastive loss with gathered features, summed over ranks with each rank's share, is the
// one-process loss, and each rank's feature gradients are the one-process gradients of its rows.
TEST(Distributed, GatheredContrastiveLossAndGradientsEqualOneProcess) {
  Communicator& c = world();
  const int64_t n = 12, e = 8, local = n / 2;
  Generator g(11);
  Tensor img = ops::l2_normalize(ops::randn({n, e}, g)), txt = ops::l2_normalize(ops::randn({n, e}, g));
  Tensor labels = Tensor::from(std::vector<int64_t>{0, 1, 2, 0, 1, 2, 3, 3, 0, 1, 2, 3}, {n});
  for (bool same_label : {false, true}) {
    ContrastiveOptions opt;
    opt.same_label_positives = same_label;
    // One process, all rows.
    Tensor img1 = img.clone().set_requires_grad(true), txt1 = txt.clone().set_requires_grad(true);
    Tensor scale1 = Tensor::scalar(std::log(10.0)).set_requires_grad(true);
    Tensor loss1 = clip_loss(img1, txt1, scale1, same_label ? labels : Tensor(), opt);
    loss1.backward();
    // This rank's rows.
    const int64_t off = c.rank() * local;
    Tensor img2 = img.narrow(0, off, local).contiguous().set_requires_grad(true);
    Tensor txt2 = txt.narrow(0, off, local).contiguous().set_requires_grad(true);
    Tensor scale2 = Tensor::scalar(std::log(10.0)).set_requires_grad(true);
    const distributed::GatheredRows gi = distributed::gather_rows_with_grad(c, img2);
    const distributed::GatheredRows gt = distributed::gather_rows_with_grad(c, txt2);
    EXPECT_EQ(gi.offset, off);
    Tensor lab_local = labels.narrow(0, off, local).contiguous();
    Tensor lab_all = same_label ? c.all_gather_rows(lab_local) : Tensor();
    Tensor loss2 = ops::mul(clip_loss(img2, txt2, gi.all, gt.all, gi.offset, scale2, same_label ? lab_local : Tensor(),
                                      lab_all, opt),
                            double(local) / double(n));
    loss2.backward();
    Tensor total = Tensor::from(std::vector<double>{loss2.item<double>()}, {1});
    c.all_reduce_sum(total);
    EXPECT_NEAR(total.to_vector<double>()[0], loss1.item<double>(), 1e-6) << "same_label " << same_label;
    EXPECT_LE(max_abs_diff(img2.grad(), img1.grad().narrow(0, off, local).contiguous()), 1e-6);
    EXPECT_LE(max_abs_diff(txt2.grad(), txt1.grad().narrow(0, off, local).contiguous()), 1e-6);
    Tensor sg = scale2.grad().clone().reshape({1});
    c.all_reduce_sum(sg);
    EXPECT_NEAR(sg.to_vector<float>()[0], scale1.grad().item<float>(), 1e-6);
  }
}

// The reducer sums gradients over ranks whichever buckets they fall in, and leaves gradients
// alone on backwards it was not armed for (gradient accumulation).
TEST(Distributed, ReducerSumsGradientsInBuckets) {
  Communicator& c = world();
  std::vector<std::pair<std::string, Tensor>> params;
  for (int i = 0; i < 5; ++i)
    params.push_back({str_cat("p", i), Tensor::full({int64_t(3 + i)}, 1.0).set_requires_grad(true)});
  distributed::GradReducer red(distributed::mpi(), params, 20);  // 20 bytes: several buckets
  auto loss = [&](double k) {
    Tensor l;
    for (auto& [_, p] : params) {
      Tensor s = ops::sum(ops::mul(p, k * double(c.rank() + 1)));
      l = l.defined() ? ops::add(l, s) : s;
    }
    return l;
  };
  loss(1.0).backward();  // disarmed: only accumulates
  red.arm();
  loss(2.0).backward();
  red.finish();
  EXPECT_GT(red.buckets(), 1u);
  for (auto& [name, p] : params)  // (1 + 2) * (1 + 2) summed over the ranks' factors 1 and 2
    for (float v : p.grad().to_vector<float>()) EXPECT_FLOAT_EQ(v, 9.0f) << name;
}

// Graphs may differ per rank (another task, data source or pair on each): a parameter only one rank's
// graph reaches must still get the sum on both, or the replicas drift apart; one no rank reaches keeps
// no gradient, as in one process.
TEST(Distributed, ReducerSumsParametersOnlySomeRanksReach) {
  Communicator& c = world();
  std::vector<std::pair<std::string, Tensor>> params;
  for (const char* n : {"a", "b", "unused"}) {
    Tensor p = Tensor::ones({3});
    p.set_requires_grad(true);
    params.emplace_back(n, p);
  }
  for (bool overlap : {true, false}) {
    for (auto& [_, p] : params) p.set_grad(Tensor());
    distributed::GradReducer red(distributed::mpi(), params, 12, overlap);  // a bucket per parameter
    red.arm();
    // rank 0 reaches only a (gradient 2 per element), rank 1 only b (gradient 3)
    const Tensor& reached = params[size_t(c.rank())].second;
    ops::sum(ops::mul(reached, double(c.rank() + 2))).backward();
    red.finish();
    ASSERT_TRUE(params[0].second.grad().defined()) << "rank " << c.rank();
    ASSERT_TRUE(params[1].second.grad().defined()) << "rank " << c.rank();
    for (float v : params[0].second.grad().to_vector<float>()) EXPECT_FLOAT_EQ(v, 2.0f);
    for (float v : params[1].second.grad().to_vector<float>()) EXPECT_FLOAT_EQ(v, 3.0f);
    EXPECT_FALSE(params[2].second.grad().defined()) << "no rank reached it";
  }
}

std::string recipe_text(const fs::path& data, int64_t steps, const std::string& task = "contrastive") {
  const std::string d = data.string();
  std::string r = "name: tiny_dp\nseed: 3\n"
                  "model:\n  embed_dim: 16\n"
                  "  vision: {type: vit, image_size: 8, channels: 1, patch: 4, width: 32, layers: 1, heads: 2}\n"
                  "  text: {type: transformer, context: 8, width: 32, layers: 1, heads: 2}\n"
                  "tokenizer: {type: bpe, vocab_size: 64}\n";
  // "sources": two tasks (MAE and CLIP) on two sources, captioned images and images alone: a step
  // drawn from the images trains MAE only, and leaves the text tower without gradients on every rank.
  const bool sources = task == "sources";
  if (task == "mae") r += "task: {type: mae, mask_ratio: 0.5, decoder: {width: 16, layers: 1, heads: 2}}\n";
  else if (sources)
    r += "tasks:\n  - {type: mae, mask_ratio: 0.5, decoder: {width: 16, layers: 1, heads: 2}}\n"
         "  - {type: contrastive, temperature_init: 0.1, weight: 0.5}\n";
  else r += "task: {type: contrastive, temperature_init: 0.1}\n";
  r += "data:\n  train: {manifest: " + d + "/train.jsonl, batch_size: 32, workers: 1}\n";
  if (sources) r += "  images: {manifest: " + d + "/images.jsonl, batch_size: 16, workers: 1}\n";
  r += "optim: {type: adamw, lr: 3.0e-3, weight_decay: 0.01, betas: [0.9, 0.98]}\n"
       "schedule: {type: cosine, warmup_steps: 5}\n"
       "train: {steps: " + std::to_string(steps) + ", checkpoint_every: 10, keep: 3, log_every: 1, threads: 1, "
       "clip_grad_norm: 1.0, grad_accum: 2, bucket_mb: 0.01" + (sources ? ", data: {train: 0.5, images: 0.5}" : "") +
       (task == "grad_cache" ? ", grad_cache: true" : "") + "}\n";
  return r;
}

fs::path shared_dataset() {
  static fs::path dir;
  if (dir.empty()) {
    // One directory both ranks know (each rank's own scratch root has its pid in it).
    const fs::path shared = fs::temp_directory_path() / "loom_trainer_dp";
    if (world().rank() == 0) {
      loom::testing::make_dataset_in(shared);
      std::ifstream in(shared / "train.jsonl");
      std::ofstream out(shared / "images.jsonl");  // the same images without captions
      for (std::string line; std::getline(in, line);) {
        nlohmann::json j = nlohmann::json::parse(line);
        j.erase("text");
        out << j.dump() << "\n";
      }
    }
    world().barrier();
    dir = shared;
  }
  return dir;
}

std::map<std::string, Tensor> train_run(const std::string& yaml, const fs::path& run, std::shared_ptr<Communicator> comm,
                                        int64_t stop_at = -1, bool resume = false) {
  Config c = Config::parse(yaml, "tiny_dp.yaml");
  Trainer t(Recipe::from(c), c, run.string(), resume, comm);
  t.train(stop_at);
  std::map<std::string, Tensor> out;
  for (auto& [k, v] : t.model().state_dict()) out[k] = v.clone();
  return out;
}

// 20 steps of the tiny CLIP (batch 32 over two ranks, gradient accumulation, clipping, gathered
// negatives) against one process with the same global batch; resume under two ranks is exact.
void check_against_one_process(const std::string& task, double tolerance) {
  Communicator& c = world();
  const fs::path data = shared_dataset();
  const fs::path two = data / ("run_two_" + task), one = data / ("run_one_" + task), resumed = data / ("run_resumed_" + task);
  if (c.rank() == 0) fs::remove_all(two), fs::remove_all(one), fs::remove_all(resumed), fs::remove_all(data / ("run_regrown_" + task));
  c.barrier();
  const std::string yaml = recipe_text(data, 20, task);
  const auto dp = train_run(yaml, two, distributed::mpi());

  // One process, on rank 0 (the other waits).
  if (c.rank() == 0) {
    const auto single = train_run(yaml, one, distributed::single_process());
    double worst = 0, key_bias = 0;
    std::string where;
    for (auto& [k, v] : single) {
      const Tensor& w = dp.at(k);
      if (k.size() > 13 && k.compare(k.size() - 13, 13, "attn.qkv.bias") == 0) {
        // The key third of the qkv bias has a gradient of exactly zero in exact arithmetic (softmax
        // ignores a constant added to every key), so both runs see only rounding noise there, which
        // Adam's normalisation turns into steps of up to lr either way: bounded by lr x steps only.
        const int64_t third = v.numel() / 3;
        for (int part : {0, 2}) {
          const double d = max_abs_diff(v.narrow(0, part * third, third).contiguous(), w.narrow(0, part * third, third).contiguous());
          if (d > worst) worst = d, where = k;
        }
        key_bias = std::max(key_bias, max_abs_diff(v.narrow(0, third, third).contiguous(), w.narrow(0, third, third).contiguous()));
        continue;
      }
      const double d = max_abs_diff(v, w);
      if (d > worst) worst = d, where = k;
    }
    EXPECT_LE(key_bias, 3e-3 * 20);
    std::cerr << "[ " << task << " ] two ranks vs one process after 20 steps: largest parameter difference " << worst
              << " (" << where << "); the attention key biases (zero gradient, rounding only) " << key_bias << "\n";
    EXPECT_LE(worst, tolerance) << where;
    // The loss log is the global batch's, as one process logs it.
    const std::vector<double> l1 = loom::testing::losses_of(one), l2 = loom::testing::losses_of(two);
    ASSERT_EQ(l1.size(), l2.size());
    for (size_t i = 0; i < l1.size(); ++i) EXPECT_NEAR(l1[i], l2[i], 1e-4) << "step " << i + 1;
  }
  c.barrier();

  // Interrupted at step 10 and resumed, both on two ranks: bitwise the uninterrupted run.
  train_run(yaml, resumed, distributed::mpi(), 10);
  if (c.rank() == 0) fs::copy(resumed, data / ("run_regrown_" + task), fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  c.barrier();
  const auto cont = train_run(yaml, resumed, distributed::mpi(), -1, true);
  for (auto& [k, v] : dp) EXPECT_EQ(v.to_vector<float>(), cont.at(k).to_vector<float>()) << k;

  // The same step-10 checkpoint resumed by one process: the same batches, so the two-rank result
  // again up to the order of sums.
  if (c.rank() == 0) {
    const auto single = train_run(yaml, data / ("run_regrown_" + task), distributed::single_process(), -1, true);
    for (auto& [k, v] : single)
      if (k.find("qkv.bias") == std::string::npos) {
        EXPECT_LE(max_abs_diff(v, dp.at(k)), tolerance) << k;
      }
    fs::remove_all(data / ("run_regrown_" + task));
  }
  c.barrier();
}

TEST(Distributed, TinyClipOnTwoRanksEqualsOneProcessAndResumesExactly) { check_against_one_process("contrastive", 5e-6); }

// MAE draws each example's mask from the global batch's noise, so two ranks mask as one process does.
TEST(Distributed, TinyMaeOnTwoRanksEqualsOneProcessAndResumesExactly) { check_against_one_process("mae", 5e-6); }

// GradCache: every rank's micro-batches in one loss, the features gathered over ranks: as one process.
TEST(Distributed, GradCacheOnTwoRanksEqualsOneProcessAndResumesExactly) { check_against_one_process("grad_cache", 5e-6); }

// Two tasks on two sources (steps of MAE alone and of MAE + CLIP): the same within the tolerance.
TEST(Distributed, TwoTasksOnTwoSourcesOnTwoRanksEqualOneProcessAndResumeExactly) { check_against_one_process("sources", 5e-6); }

TEST(Distributed, GlobalBatchMustSplitEvenly) {
  const fs::path data = shared_dataset();
  std::string yaml = recipe_text(data, 2);
  yaml.replace(yaml.find("batch_size: 32"), 14, "batch_size: 31");
  Config c = Config::parse(yaml, "odd.yaml");
  try {
    Trainer t(Recipe::from(c), c, (data / "run_odd").string(), false, distributed::mpi());
    ADD_FAILURE() << "a batch of 31 over 2 ranks was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.train.batch_size: 31 is the global batch"), std::string::npos) << e.what();
  }
  world().barrier();
}

}  // namespace

// ITM's hard negatives over the data-parallel batch (trainers/tasks/itm.h): each rank's images are
// most similar to the other rank's texts, so with a large scale the negatives come from there; never
// the positive nor a text equal to it.
TEST(Distributed, ItmHardNegativesComeFromTheOtherRank) {
  Communicator& c = world();
  const int r = c.rank();
  const int64_t B = 4, E = 8, S = 3;
  // Text embeddings: one direction per rank; image embeddings point at the other rank's.
  std::vector<float> img(size_t(B * E), 0.f), txt(size_t(B * E), 0.f);
  std::vector<int64_t> tokens;
  for (int64_t b = 0; b < B; ++b) {
    txt[size_t(b * E + r)] = 1.f;
    img[size_t(b * E + (1 - r))] = 1.f;
    tokens.insert(tokens.end(), {1, 10 + r * B + b, 2});  // every text distinct
  }
  const Tensor images = ops::randn({B, 1, 2, 2});
  Generator gen(11);
  const ItmNegatives n = itm_hard_negatives(Tensor::from(img, {B, E}), Tensor::from(txt, {B, E}), images,
                                            Tensor::from(tokens, {B, S}), 50.0, &c, gen);
  EXPECT_EQ(n.offset, r * B);
  EXPECT_EQ(n.all_texts.size(0), 2 * B);
  EXPECT_EQ(n.all_images.size(0), 2 * B);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t j = n.text_for_image[size_t(b)];
    EXPECT_TRUE(j >= (1 - r) * B && j < (2 - r) * B) << "rank " << r << " image " << b << " got text " << j;
    EXPECT_NE(n.image_for_text[size_t(b)], r * B + b);  // never its own image
  }
  // The generator advanced alike on both ranks (one draw per global row and direction).
  Tensor off = Tensor::from(std::vector<double>{double(gen.offset())}, {1});
  Tensor sum = off;
  c.all_reduce_sum(sum);
  EXPECT_EQ(sum.to_vector<double>()[0], 2 * double(gen.offset()));
}
