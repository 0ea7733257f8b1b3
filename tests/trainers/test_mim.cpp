// The visual tokenizer (task vqkd) and masked image modelling on its ids (task mim) through the trainer,
// with frozen models read from other runs' checkpoints: a tiny CLIP is the teacher, its tokenizer the
// target of a tiny BEiT. The frozen models stay bitwise unchanged and out of the checkpoints, resume
// is bitwise (codebook averages and restarts included), and recipes naming what does not fit stop
// before any work naming file, line and key.
#include <gtest/gtest.h>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include "core/safetensors.h"
#include "tests/trainers/tiny_data.h"
#include "trainers/dry_run.h"
#include "trainers/trainer.h"

using namespace loom;
namespace fs = std::filesystem;
using loom::testing::losses_of;
using loom::testing::make_dataset;
using loom::testing::tiny_clip_recipe;

namespace {

std::vector<nlohmann::json> metrics_of(const fs::path& run) {
  std::ifstream f(run / "metrics.jsonl");
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(f, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

void train(const std::string& yaml, const fs::path& run, const std::string& name) {
  Config c = Config::parse(yaml, name);
  Recipe r = Recipe::from(c);
  Trainer t(r, c, run.string(), false);
  t.train();
}

std::string vqkd_recipe(const fs::path& d, const fs::path& teacher, int64_t steps, const std::string& task_extra = "") {
  return "name: tiny_vqkd\nseed: 6\n"
         "frozen:\n  teacher: {checkpoint: " + teacher.string() + "}\n"
         "model:\n  type: vit\n  vision: {type: vit, image_size: 8, channels: 1, patch: 4, width: 32, layers: 1, heads: 2}\n"
         "task: {type: vqkd, teacher: teacher, codebook_size: 16, code_dim: 8, decay: 0.9, restart_below: 2.0, decoder: {width: 32, layers: 1, heads: 2}" +
         task_extra + "}\n"
         "data:\n"
         "  train: {manifest: " + (d / "train.jsonl").string() + ", batch_size: 32, workers: 1}\n"
         "  eval: {manifest: " + (d / "test.jsonl").string() + ", batch_size: 64, workers: 1}\n"
         "optim: {type: adamw, lr: 3.0e-3, weight_decay: 0.01}\n"
         "train: {steps: " + std::to_string(steps) + ", log_every: 1, checkpoint_every: 3}\n"
         "eval: {every: 0}\n";
}

std::string mim_recipe(const fs::path& d, const fs::path& tokenizer, int64_t steps, const std::string& patch = "4",
                       const std::string& task_extra = "") {
  return "name: tiny_beit\nseed: 7\n"
         "frozen:\n  tok: {checkpoint: " + tokenizer.string() + "}\n"
         "model:\n  type: vit\n  vision: {type: vit, image_size: 8, channels: 1, patch: " + patch + ", width: 32, layers: 2, heads: 2}\n"
         "task: {type: mim, tokenizer: tok, mask_ratio: 0.5, min_block: 1, pictures: 2" + task_extra + "}\n"
         "data:\n"
         "  train: {manifest: " + (d / "train.jsonl").string() + ", batch_size: 32, workers: 1}\n"
         "  eval: {manifest: " + (d / "test.jsonl").string() + ", batch_size: 64, workers: 1}\n"
         "optim: {type: adamw, lr: 3.0e-3, weight_decay: 0.01}\n"
         "train: {steps: " + std::to_string(steps) + ", log_every: 1, checkpoint_every: 5}\n"
         "eval: {every: " + std::to_string(steps) + "}\n";
}

std::string error_of(const std::string& yaml) {
  try {
    Config c = Config::parse(yaml, "frozen.yaml");
    Recipe::from(c);
  } catch (const std::exception& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an error for:\n" << yaml;
  return "";
}

// One teacher and one tokenizer for the tests below (trained once per process).
struct Runs {
  fs::path data, teacher, tokenizer;
};
const Runs& runs() {
  static const Runs r = [] {
    Runs x;
    x.data = make_dataset("vqkd_mim");
    train(tiny_clip_recipe(x.data, 10, "checkpoint_every: 10, log_every: 5"), x.data / "clip", "clip.yaml");
    x.teacher = x.data / "clip" / "checkpoints" / "latest";
    train(vqkd_recipe(x.data, x.teacher, 40), x.data / "vqkd", "vqkd.yaml");
    x.tokenizer = x.data / "vqkd" / "checkpoints" / "latest";
    return x;
  }();
  return r;
}

}  // namespace

TEST(VqKd, TokenizerLearnsTheTeachersFeaturesAndUsesItsCodebook) {
  const Runs& r = runs();
  const auto m = metrics_of(r.data / "vqkd");
  std::vector<double> rec;
  for (const auto& j : m)
    if (j.contains("train/vqkd_rec")) rec.push_back(j["train/vqkd_rec"].get<double>());
  ASSERT_EQ(rec.size(), 40u);
  EXPECT_LT(rec.back(), 0.5 * rec.front()) << "1 - cosine to the teacher, first and last step";
  Config c = Config::parse(vqkd_recipe(r.data, r.teacher, 40), "vqkd.yaml");
  const Metrics e = evaluate_recipe(Recipe::from(c), r.tokenizer.string());
  EXPECT_GE(e.at("eval/codebook_usage"), 0.5) << "codes used on held-out images";
  EXPECT_GT(e.at("eval/codebook_perplexity"), 4.0);
  EXPECT_GT(e.at("eval/teacher_cosine"), 0.6);
  // The codebook and its averages are checkpointed buffers, the teacher is not in the checkpoint.
  auto ck = load_safetensors((r.tokenizer / "model.safetensors").string());
  EXPECT_TRUE(ck.tensors.count("vqkd.codebook") && ck.tensors.count("vqkd.ema_sum"));
  for (const auto& [k, _] : ck.tensors) EXPECT_EQ(k.find("teacher"), std::string::npos) << k;
  // The teacher's file is untouched by the run.
  auto before = load_safetensors((r.data / "clip" / "checkpoints" / "latest" / "model.safetensors").string());
  EXPECT_TRUE(before.tensors.count("visual.pos_embed"));
}

TEST(VqKd, ResumeIsBitwiseExact) {
  const Runs& r = runs();
  Config c = Config::parse(vqkd_recipe(r.data, r.teacher, 6), "vqkd.yaml");
  Recipe rec = Recipe::from(c);
  {
    Trainer t(rec, c, (r.data / "vq_straight").string(), false);
    t.train();
  }
  {
    Trainer t(rec, c, (r.data / "vq_resumed").string(), false);
    t.train(3);
  }
  {
    Trainer t(rec, c, (r.data / "vq_resumed").string(), true);
    t.train();
  }
  EXPECT_EQ(losses_of(r.data / "vq_straight"), losses_of(r.data / "vq_resumed"));
  auto a = load_safetensors((r.data / "vq_straight/checkpoints/latest/model.safetensors").string());
  auto b = load_safetensors((r.data / "vq_resumed/checkpoints/latest/model.safetensors").string());
  for (auto& [k, t] : a.tensors) EXPECT_EQ(t.to_vector<float>(), b.tensors.at(k).to_vector<float>()) << k;
}

TEST(Mim, TinyBeitLearnsTheTokenizersIdsAndDrawsItsMasks) {
  const Runs& r = runs();
  const auto tok_before = load_safetensors((r.tokenizer / "model.safetensors").string());
  train(mim_recipe(r.data, r.tokenizer, 40), r.data / "beit", "beit.yaml");
  const auto losses = losses_of(r.data / "beit");
  ASSERT_EQ(losses.size(), 40u);
  EXPECT_LT(losses.back(), 0.75 * losses.front());
  double acc = -1;
  for (const auto& j : metrics_of(r.data / "beit"))
    if (j.contains("eval/mim_acc")) acc = j["eval/mim_acc"].get<double>();
  EXPECT_GT(acc, 1.0 / 16 * 2) << "masked-token accuracy, twice chance";
  EXPECT_TRUE(fs::exists(r.data / "beit" / "eval" / "mim_masks_step_40.png"));
  auto ck = load_safetensors((r.data / "beit/checkpoints/latest/model.safetensors").string());
  EXPECT_TRUE(ck.tensors.count("mim_head.mask_token"));
  for (const auto& [k, _] : ck.tensors) EXPECT_EQ(k.find("vqkd"), std::string::npos) << "the frozen tokenizer was saved: " << k;
  const auto tok_after = load_safetensors((r.tokenizer / "model.safetensors").string());
  for (const auto& [k, t] : tok_before.tensors) EXPECT_EQ(t.to_vector<float>(), tok_after.tensors.at(k).to_vector<float>()) << k;
}

TEST(Mim, RecipesNamingWhatDoesNotFitAreOneClearError) {
  const Runs& r = runs();
  // A teacher without the tower the task names.
  std::string e = error_of(vqkd_recipe(r.data, r.teacher, 2, ", teacher_tower: audio"));
  EXPECT_NE(e.find("frozen.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("task.teacher_tower: the teacher (frozen.teacher) has no image tower 'audio'"), std::string::npos) << e;
  // An encoder that drops patches: no code for the dropped ones.
  std::string dropping = vqkd_recipe(r.data, r.teacher, 2);
  dropping.replace(dropping.find("heads: 2}"), 9, "heads: 2, patch_dropout: 0.5}");
  e = error_of(dropping);
  EXPECT_NE(e.find("model.vision.patch_dropout: task vqkd gives every patch a code"), std::string::npos) << e;
  // A frozen model the recipe does not have.
  std::string bad = vqkd_recipe(r.data, r.teacher, 2);
  bad.replace(bad.find("teacher: teacher"), 16, "teacher: teachr");
  e = error_of(bad);
  EXPECT_NE(e.find("task.teacher: no frozen model 'teachr' (the recipe's frozen: teacher"), std::string::npos) << e;
  // A tokenizer of another shape: the MIM tower cuts 2x2 patches, the tokenizer 4x4.
  e = error_of(mim_recipe(r.data, r.tokenizer, 2, "2"));
  EXPECT_NE(e.find("task.tokenizer: the tokenizer (frozen.tok) reads 1x8x8 images as a 2x2 patch grid"), std::string::npos) << e;
  // A frozen model that is no tokenizer: the CLIP run.
  e = error_of(mim_recipe(r.data, r.teacher, 2));
  EXPECT_NE(e.find("task.tokenizer: frozen.tok is no visual tokenizer"), std::string::npos) << e;
  // A mask ratio outside (0, 1).
  std::string ratio = mim_recipe(r.data, r.tokenizer, 2);
  ratio.replace(ratio.find("mask_ratio: 0.5"), 15, "mask_ratio: 1.2");
  e = error_of(ratio);
  EXPECT_NE(e.find("task.mask_ratio: must be in (0, 1)"), std::string::npos) << e;
  // A checkpoint that is not there.
  e = error_of(vqkd_recipe(r.data, r.data / "nowhere", 2));
  EXPECT_NE(e.find("frozen.teacher.checkpoint"), std::string::npos) << e;
  // The check builds the frozen models and runs one forward pass.
  Config c = Config::parse(mim_recipe(r.data, r.tokenizer, 2), "beit.yaml");
  EXPECT_NE(check_recipe(Recipe::from(c), c).find("check passed"), std::string::npos);
}

namespace {

// VL-BEiT in one stage (Bao et al. 2022): MLM on texts alone, MIM on images alone, and masked
// vision-language modelling on the pairs (the masked text read with its image, the masked image with
// its text), one Multiway model. The monomodal sources are the paired manifest read in part (read:), the pairs are data.train.
std::string vlbeit_recipe(const fs::path& d, const fs::path& tokenizer, int64_t steps, const std::string& model_extra = "") {
  const std::string m = (d / "train.jsonl").string();
  return "name: tiny_vlbeit\nseed: 5\n"
         "frozen:\n  tok: {checkpoint: " + tokenizer.string() + "}\n"
         "model:\n  type: vlmo\n  embed_dim: 16\n  width: 32\n  layers: 2\n  heads: 2\n" + model_extra +
         "  image: {image_size: 8, channels: 1, patch: 4}\n  text: {context: 8}\n"
         "tokenizer: {type: bpe, vocab_size: 64}\n"
         "data:\n"
         "  images: {manifest: " + m + ", batch_size: 32, workers: 1, read: [image]}\n"
         "  texts: {manifest: " + m + ", batch_size: 32, workers: 1, read: [text]}\n"
         "  train: {manifest: " + m + ", batch_size: 32, workers: 1}\n"
         "  eval: {manifest: " + (d / "test.jsonl").string() + ", batch_size: 64, workers: 1}\n"
         "tasks:\n"
         "  - {type: mlm, data: [texts]}\n"
         "  - {type: mim, tokenizer: tok, mask_ratio: 0.5, min_block: 1, pictures: 0, data: [images]}\n"
         "  - {type: mlm, name: mvlm_text, with_image: true, mask_ratio: 0.5, data: [train]}\n"
         "  - {type: mim, name: mvlm_image, with_text: true, tokenizer: tok, mask_ratio: 0.5, min_block: 1, data: [train]}\n"
         "optim: {type: adamw, lr: 3.0e-3, weight_decay: 0.01}\n"
         "train: {data: {images: 1, texts: 1, train: 1}, steps: " + std::to_string(steps) + ", log_every: 1, checkpoint_every: 0}\n"
         "eval: {every: " + std::to_string(steps) + "}\n";
}

double mean(const std::vector<double>& v, size_t from, size_t n) {
  double s = 0;
  for (size_t i = from; i < from + n; ++i) s += v.at(i);
  return s / double(n);
}

}  // namespace

TEST(VlBeit, EachTaskReadsOnlyItsSourceAndEveryMaskedLossFalls) {
  const Runs& r = runs();
  train(vlbeit_recipe(r.data, r.tokenizer, 72), r.data / "vlbeit", "vlbeit.yaml");
  std::map<std::string, std::vector<double>> loss;
  nlohmann::json eval;
  for (const auto& j : metrics_of(r.data / "vlbeit")) {
    if (j.contains("eval/mim_acc")) eval = j;
    if (!j.contains("train/loss")) continue;
    std::set<std::string> parts;
    for (const char* k : {"mlm", "mim", "mvlm_text", "mvlm_image"})
      if (j.contains(std::string("train/") + k)) {
        parts.insert(k);
        loss[k].push_back(j[std::string("train/") + k].get<double>());
      }
    // A step draws one source: the texts serve MLM, the images MIM, a pair both halves of MVLM.
    EXPECT_TRUE(parts == std::set<std::string>{"mlm"} || parts == std::set<std::string>{"mim"} ||
                parts == (std::set<std::string>{"mvlm_text", "mvlm_image"}))
        << j.dump();
  }
  for (const char* k : {"mlm", "mim", "mvlm_text", "mvlm_image"}) {
    ASSERT_GE(loss[k].size(), 12u) << k;
    EXPECT_LT(mean(loss[k], loss[k].size() - 6, 6), 0.8 * mean(loss[k], 0, 6)) << k << ": the last six steps against the first";
  }
  // Each of the four is evaluated on the held-out pairs under its own name.
  for (const char* k : {"eval/mlm_acc", "eval/mim_acc", "eval/mvlm_text_acc", "eval/mvlm_image_acc"})
    EXPECT_TRUE(eval.contains(k)) << k << " in " << eval.dump();
  EXPECT_GT(eval.value("eval/mvlm_image_acc", 0.0), 2.0 / 16) << "twice chance";
  // The two masked-image tasks share one head, as the two masked-text ones do.
  auto ck = load_safetensors((r.data / "vlbeit/checkpoints/latest/model.safetensors").string());
  EXPECT_TRUE(ck.tensors.count("mim_head.mask_token") && ck.tensors.count("mlm_head.transform.weight"));
}

TEST(VlBeit, Beit3HasNoVisionLanguageExpertAndBrokenRecipesAreOneClearError) {
  const Runs& r = runs();
  Config c = Config::parse(vlbeit_recipe(r.data, r.tokenizer, 2, "  vl_expert: false\n"), "beit3.yaml");
  const Recipe beit3 = Recipe::from(c);
  EXPECT_EQ(beit3.data.at("texts").provides(), std::vector<std::string>({"text"}));
  EXPECT_EQ(beit3.data.at("images").provides(), std::vector<std::string>({"image"}));
  EXPECT_NE(check_recipe(beit3, c).find("check passed"), std::string::npos);
  {
    Trainer t(beit3, c, (r.data / "beit3").string(), false);
    t.train();
  }
  auto ck = load_safetensors((r.data / "beit3/checkpoints/latest/model.safetensors").string());
  for (const auto& [k, _] : ck.tensors) EXPECT_EQ(k.find(".vl."), std::string::npos) << k;
  const std::string good = vlbeit_recipe(r.data, r.tokenizer, 2);
  auto error = [&](const std::string& from, const std::string& to) {
    return error_of(loom::testing::replaced(good, from, to));
  };
  std::string e = error("  - {type: mlm, name: mvlm_text,", "  - {type: mlm,");
  EXPECT_NE(e.find("tasks.2.type: the stage already has a task named mlm"), std::string::npos) << e;
  EXPECT_NE(e.find("give this one its own name"), std::string::npos) << e;
  e = error("data: [texts]", "data: [text]");
  EXPECT_NE(e.find("tasks.0.data: 'text' is not a data source of this stage (its sources: images, texts, train)"),
            std::string::npos) << e;
  e = error("read: [image]", "read: [pixels]");
  EXPECT_NE(e.find("data.images.read: unknown column 'pixels'"), std::string::npos) << e;
  e = error("  heads: 2\n", "  heads: 2\n  vl_expert: false\n  vl_from: 1\n");
  EXPECT_NE(e.find("model.vl_from: the model has no vision-language expert"), std::string::npos) << e;
  // A source that only a restricted task could use is named when no task may read it.
  e = error("data: [images]}", "data: [texts]}");
  EXPECT_NE(e.find("train.data.images: task"), std::string::npos) << e;
  // Masked image modelling with the text on a model without a fusion encoder.
  e = error_of(loom::testing::replaced(mim_recipe(r.data, r.tokenizer, 2), "pictures: 2", "pictures: 2, with_text: true"));
  EXPECT_NE(e.find("task.with_text: reading the masked image with its text needs a fusion encoder"), std::string::npos) << e;
}

// VL-BEiT's downstream protocol: the pretrained model fine-tuned for retrieval (ITC + ITM) from its
// checkpoint, with the pretraining run's own BPE file (tokenizer.path), not a tokenizer trained again.
TEST(VlBeit, FineTunesForRetrievalFromItsCheckpointWithItsTokenizer) {
  const Runs& r = runs();
  const fs::path pre = r.data / "vlbeit_pre", tuned = r.data / "vlbeit_tuned";
  train(vlbeit_recipe(r.data, r.tokenizer, 4), pre, "vlbeit.yaml");
  const std::string d = r.data.string();
  const std::string finetune =
      "name: tiny_vlbeit_retrieval\nseed: 5\n"
      "init_from: {path: " + (pre / "checkpoints" / "latest").string() + ", strict: false}\n"
      "model:\n  type: vlmo\n  embed_dim: 16\n  width: 32\n  layers: 2\n  heads: 2\n"
      "  image: {image_size: 8, channels: 1, patch: 4}\n  text: {context: 8}\n"
      "tokenizer: {type: bpe, path: " + (pre / "tokenizer.json").string() + "}\n"
      "data:\n"
      "  train: {manifest: " + d + "/train.jsonl, batch_size: 32, workers: 1}\n"
      "  eval: {manifest: " + d + "/test.jsonl, batch_size: 64, workers: 1}\n"
      "tasks:\n  - {type: contrastive}\n  - {type: itm, eval: {rerank_k: 4, samples: 32}}\n"
      "optim: {type: adamw, lr: 1.0e-3}\n"
      "train: {steps: 3, log_every: 1, checkpoint_every: 0}\n"
      "eval: {every: 3, retrieval: true, retrieval_samples: 32}\n";
  Config c = Config::parse(finetune, "retrieval.yaml");
  const Recipe rec = Recipe::from(c);
  EXPECT_NE(check_recipe(rec, c).find("init_from " + (pre / "checkpoints" / "latest").string() + " (format loom): fits the model"),
            std::string::npos);
  {
    Trainer t(rec, c, tuned.string(), false);
    t.train();
  }
  auto bytes = [](const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  EXPECT_EQ(bytes(tuned / "tokenizer.json"), bytes(pre / "tokenizer.json")) << "the pretraining run's ids";
  bool evaluated = false;
  for (const auto& j : metrics_of(tuned)) evaluated = evaluated || j.contains("eval/t2i_rerank_r1");
  EXPECT_TRUE(evaluated);
  // Under --check on a machine without the pretraining run (CI's): stand-in ids for the tasks that
  // read them (ITM), and the absent file listed.
  Config away = Config::parse(loom::testing::replaced(finetune, (pre / "tokenizer.json").string(), "/nonexistent/tokenizer.json"),
                              "retrieval.yaml");
  away.allow_missing_files();
  const std::string report = check_recipe(Recipe::from(away), away);
  EXPECT_NE(report.find("tokenizer /nonexistent/tokenizer.json is not on this machine"), std::string::npos) << report;
  EXPECT_NE(report.find("check passed"), std::string::npos) << report;
  // A file and a training corpus at once: which vocabulary?
  const std::string e = error_of(loom::testing::replaced(finetune, "{type: bpe, path:", "{type: bpe, vocab_size: 64, path:"));
  EXPECT_NE(e.find("tokenizer.vocab_size: a bpe tokenizer is read from tokenizer.path, not trained"), std::string::npos) << e;
}
