// Hugging Face weights in and out (trainers/pretrained.h) against fixtures made by
// scripts/golden/hf_models.py with transformers: a tiny random BertModel and CLIPModel with their
// tokenizers, and their outputs on fixed inputs.
#include <gtest/gtest.h>
#include "tests/tmp_dir.h"
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include "core/safetensors.h"
#include "layers/bert.h"
#include "layers/clip.h"
#include "trainers/dry_run.h"
#include "trainers/pretrained.h"
#include "trainers/recipe.h"
#include "trainers/trainer.h"
#include "tiny_data.h"

using namespace loom;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const fs::path kFixtures = fs::path(LOOM_SOURCE_DIR) / "tests" / "fixtures";
const fs::path kBert = kFixtures / "hf_bert_tiny";
const fs::path kClip = kFixtures / "hf_clip_tiny";

json read_json(const fs::path& p) {
  std::ifstream f(p);
  return json::parse(f);
}

// The largest |a - b| over all entries (shapes must agree).
double max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  if (!(a.shape() == b.shape())) return INFINITY;
  std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

// A root module holding a text tower "text", as a CLIP or CLAP does.
class TextRoot : public Module {
 public:
  explicit TextRoot(std::shared_ptr<TextEncoder> t) : text(std::move(t)) { register_module("text", text); }
  std::shared_ptr<TextEncoder> text;
};

TextConfig bert_config(const json& c, const std::string& pool) {
  TextConfig t;
  t.type = "bert";
  t.vocab_size = c["vocab_size"];
  t.context = 16;
  t.width = c["hidden_size"];
  t.layers = c["num_hidden_layers"];
  t.heads = c["num_attention_heads"];
  t.mlp_ratio = double(c["intermediate_size"].get<int64_t>()) / double(t.width);
  t.type_vocab_size = c["type_vocab_size"];
  t.norm_eps = c["layer_norm_eps"];
  t.pad_id = c["pad_token_id"];
  t.pool = pool;
  return t;
}

ClipConfig clip_config(const json& c) {
  ClipConfig m;
  const json &t = c["text_config"], &v = c["vision_config"];
  m.embed_dim = c["projection_dim"];
  m.text.vocab_size = t["vocab_size"];
  m.text.context = t["max_position_embeddings"];
  m.text.width = t["hidden_size"];
  m.text.layers = t["num_hidden_layers"];
  m.text.heads = t["num_attention_heads"];
  m.text.mlp_ratio = double(t["intermediate_size"].get<int64_t>()) / double(m.text.width);
  m.text.act = t["hidden_act"];
  m.vision.image_size = v["image_size"];
  m.vision.channels = v["num_channels"];
  m.vision.patch = v["patch_size"];
  m.vision.width = v["hidden_size"];
  m.vision.layers = v["num_hidden_layers"];
  m.vision.heads = v["num_attention_heads"];
  m.vision.mlp_ratio = double(v["intermediate_size"].get<int64_t>()) / double(m.vision.width);
  m.vision.act = v["hidden_act"];
  m.vision.ln_pre = true;
  m.vision.patch_bias = false;
  return m;
}

InitFrom hf(const fs::path& p, const std::string& format) {
  InitFrom f;
  f.path = p.string();
  f.format = format;
  return f;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an error";
  return "";
}

// A copy of a fixture directory to break.
fs::path copy_fixture(const fs::path& from, const std::string& tag) {
  const fs::path to = loom::testing_support::tmp_path("loom_pretrained_" + tag);
  fs::remove_all(to);
  fs::create_directories(to.parent_path());
  fs::copy(from, to);
  return to;
}

std::vector<std::string> sentences_of(const SafetensorsFile& f) {
  return json::parse(f.metadata.at("sentences")).get<std::vector<std::string>>();
}

}  // namespace

TEST(HfBert, HiddenStatesPoolerAndTokenIdsMatchTransformers) {
  const SafetensorsFile want = load_safetensors((kBert / "expected.safetensors").string());
  const Tensor ids = want.tensors.at("input/input_ids");
  // The tokenizer gives the ids the tokenizers package gave.
  auto tok = data::load_tokenizer((kBert / "tokenizer.json").string(), "wordpiece");
  EXPECT_EQ(tok->encode_batch(sentences_of(want), ids.size(1)).to_vector<int64_t>(), ids.to_vector<int64_t>());

  Generator g(1);
  TextRoot root(std::make_shared<Bert>(bert_config(read_json(kBert / "config.json"), "pooler"), g));
  LoadReport rep = load_pretrained(root, hf(kBert, "hf-bert"));
  EXPECT_TRUE(rep.missing.empty());
  EXPECT_TRUE(rep.unexpected.empty());
  const Bert& bert = dynamic_cast<const Bert&>(*root.text);
  Tensor h = bert.forward_tokens(ids);
  EXPECT_LE(max_abs_diff(h, want.tensors.at("out/last_hidden_state")), 1e-4);
  EXPECT_LE(max_abs_diff(bert.forward(ids), want.tensors.at("out/pooler_output")), 1e-4);
  EXPECT_LE(max_abs_diff(bert.mean_pool(h, ids), want.tensors.at("out/mean_pooled")), 1e-4);
}

TEST(HfBert, ExportGivesBackTheCheckpointsTensors) {
  Generator g(1);
  const json cfg = read_json(kBert / "config.json");
  TextRoot root(std::make_shared<Bert>(bert_config(cfg, "pooler"), g));
  load_pretrained(root, hf(kBert, "hf-bert"));
  HfCheckpoint out = to_hf(root, "hf-bert", nullptr);
  const TensorMap orig = load_safetensors((kBert / "model.safetensors").string()).tensors;
  size_t compared = 0;
  for (const auto& [k, t] : orig) {
    if (k.find("position_ids") != std::string::npos) continue;
    ASSERT_TRUE(out.tensors.count(k)) << k;
    std::vector<float> want = t.to_vector<float>();
    if (k == "embeddings.position_embeddings.weight") {
      // loom keeps the positions its context uses (16 of the file's 24), and exports those
      EXPECT_EQ(out.tensors.at(k).shape(), (Shape{16, t.size(1)}));
      want.resize(size_t(16 * t.size(1)));
    } else {
      EXPECT_EQ(out.tensors.at(k).shape(), t.shape()) << k;
    }
    EXPECT_EQ(out.tensors.at(k).to_vector<float>(), want) << k;
    ++compared;
  }
  EXPECT_EQ(compared, out.tensors.size());
  for (const char* k : {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
                        "type_vocab_size", "pad_token_id"})
    EXPECT_EQ(out.config[k], cfg[k]) << k;
  EXPECT_EQ(out.config["max_position_embeddings"], 16);
  EXPECT_EQ(out.config["hidden_act"], "gelu");
}

TEST(HfClip, EmbeddingsAndTokenIdsMatchTransformers) {
  const SafetensorsFile want = load_safetensors((kClip / "expected.safetensors").string());
  const Tensor ids = want.tensors.at("input/input_ids");
  auto tok = data::load_tokenizer((kClip / "tokenizer.json").string(), "clip_bpe");
  EXPECT_EQ(tok->encode_batch(sentences_of(want), ids.size(1)).to_vector<int64_t>(), ids.to_vector<int64_t>());

  Generator g(2);
  Clip clip(clip_config(read_json(kClip / "config.json")), g);
  LoadReport rep = load_pretrained(clip, hf(kClip, "hf-clip"));
  EXPECT_TRUE(rep.missing.empty());
  EXPECT_TRUE(rep.unexpected.empty());
  Tensor text = clip.text->forward(ids, tok->end_token());
  EXPECT_LE(max_abs_diff(text, want.tensors.at("out/text_pooled")), 1e-4);
  EXPECT_LE(max_abs_diff(clip.text_proj->forward(text), want.tensors.at("out/text_embeds")), 1e-4);
  const Tensor pixels = want.tensors.at("input/pixel_values");
  Tensor image = clip.visual->forward(pixels);
  EXPECT_LE(max_abs_diff(image, want.tensors.at("out/image_pooled")), 1e-4);
  EXPECT_LE(max_abs_diff(clip.visual_proj->forward(image), want.tensors.at("out/image_embeds")), 1e-4);
  EXPECT_LE(max_abs_diff(clip.logit_scale, want.tensors.at("out/logit_scale")), 1e-6);
  // encode_* are the L2-normalised projections.
  EXPECT_LE(max_abs_diff(clip.encode_image(pixels), ops::l2_normalize(want.tensors.at("out/image_embeds"), -1)), 1e-5);
}

TEST(HfClip, ExportGivesBackTheCheckpointsTensors) {
  Generator g(2);
  const json cfg = read_json(kClip / "config.json");
  Clip clip(clip_config(cfg), g);
  load_pretrained(clip, hf(kClip, "hf-clip"));
  auto tok = data::load_tokenizer(kClip.string());
  HfCheckpoint out = to_hf(clip, "hf-clip", tok.get());
  const TensorMap orig = load_safetensors((kClip / "model.safetensors").string()).tensors;
  size_t compared = 0;
  for (const auto& [k, t] : orig) {
    if (k.find("position_ids") != std::string::npos) continue;
    ASSERT_TRUE(out.tensors.count(k)) << k;
    EXPECT_EQ(out.tensors.at(k).to_vector<float>(), t.to_vector<float>()) << k;
    ++compared;
  }
  EXPECT_EQ(compared, out.tensors.size());
  EXPECT_EQ(out.config["text_config"]["eos_token_id"], tok->end_token());
  EXPECT_EQ(out.config["vision_config"]["patch_size"], cfg["vision_config"]["patch_size"]);
}

TEST(HfImport, ShapeMismatchNamesTheKeyAndBothShapes) {
  Generator g(3);
  TextConfig c = bert_config(read_json(kBert / "config.json"), "pooler");
  c.mlp_ratio *= 2;  // intermediate 2x the checkpoint's
  TextRoot root(std::make_shared<Bert>(c, g));
  const std::string e = error_of([&] { load_pretrained(root, hf(kBert, "hf-bert")); });
  EXPECT_NE(e.find("encoder.layer.0.intermediate.dense.weight is [64, 32]"), std::string::npos) << e;
  EXPECT_NE(e.find("text.layers.0.mlp.fc1.weight [128, 32]"), std::string::npos) << e;
  // Heads are not in any shape: config.json says.
  c = bert_config(read_json(kBert / "config.json"), "pooler");
  c.heads = 2;
  TextRoot two_heads(std::make_shared<Bert>(c, g));
  const std::string h = error_of([&] { load_pretrained(two_heads, hf(kBert, "hf-bert")); });
  EXPECT_NE(h.find("num_attention_heads' is 4 but the recipe's model.text.heads is 2"), std::string::npos) << h;
  // A causal tower cannot take BERT's weights.
  TextConfig causal = c;
  causal.type = "transformer";
  TextRoot wrong(std::make_shared<TextTransformer>(causal, g));
  EXPECT_NE(error_of([&] { load_pretrained(wrong, hf(kBert, "hf-bert")); }).find("set model.text.type: bert"), std::string::npos);
}

TEST(HfImport, BrokenFilesAreClearErrorsNamingTheFile) {
  Generator g(4);
  const TextConfig c = bert_config(read_json(kBert / "config.json"), "pooler");
  TextRoot root(std::make_shared<Bert>(c, g));
  const TensorMap before = root.state_dict();
  // config.json that disagrees with the weights
  fs::path d = copy_fixture(kBert, "config");
  json cfg = read_json(d / "config.json");
  cfg["hidden_size"] = 64;
  std::ofstream(d / "config.json") << cfg.dump();
  std::string e = error_of([&] { load_pretrained(root, hf(d, "hf-bert")); });
  EXPECT_NE(e.find((d / "config.json").string() + " disagrees with"), std::string::npos) << e;
  EXPECT_NE(e.find("'hidden_size' is 64 but embeddings.word_embeddings.weight is [318, 32]"), std::string::npos) << e;
  // a config.json of another model
  cfg = read_json(kClip / "config.json");
  std::ofstream(d / "config.json") << cfg.dump();
  e = error_of([&] { load_pretrained(root, hf(d, "hf-bert")); });
  EXPECT_NE(e.find("model_type 'clip'"), std::string::npos) << e;
  // a truncated safetensors file
  fs::copy_file(kBert / "config.json", d / "config.json", fs::copy_options::overwrite_existing);
  fs::resize_file(d / "model.safetensors", fs::file_size(d / "model.safetensors") / 2);
  e = error_of([&] { load_pretrained(root, hf(d, "hf-bert")); });
  EXPECT_NE(e.find((d / "model.safetensors").string()), std::string::npos) << e;
  // no config.json at all
  fs::remove(d / "config.json");
  e = error_of([&] { load_pretrained(root, hf(d, "hf-bert")); });
  EXPECT_NE(e.find("config.json does not exist"), std::string::npos) << e;
  // Nothing was copied by any failed load.
  for (const auto& [k, t] : root.state_dict()) EXPECT_EQ(t.to_vector<float>(), before.at(k).to_vector<float>()) << k;
  fs::remove_all(d);
  // a tokenizer file of another kind
  e = error_of([&] { data::load_tokenizer((kClip / "tokenizer.json").string(), "wordpiece"); });
  EXPECT_NE(e.find("a clip_bpe tokenizer, but the recipe asks for tokenizer.type wordpiece"), std::string::npos) << e;
}

// A CLIP recipe whose text tower starts from the tiny BERT (its tokenizer, its weights) trains, and a
// recipe whose text tower disagrees with the checkpoint stops before any step.
TEST(HfImport, ClipRecipeWithBertTextTowerTrains) {
  using loom::testing::make_dataset;
  fs::path data = make_dataset("hf_bert");
  const json cfg = read_json(kBert / "config.json");
  auto recipe = [&](int64_t width, const std::string& format) {
    return str_cat("name: bert_clip\nseed: 5\nmodel:\n  embed_dim: 16\n"
                   "  vision: {type: vit, image_size: 8, channels: 1, patch: 4, width: 32, layers: 1, heads: 2}\n"
                   "  text: {type: bert, context: 16, width: ", width, ", layers: 2, heads: 4, mlp_ratio: 2, pool: pooler}\n"
                   "tokenizer: {type: wordpiece, path: ", (kBert / "tokenizer.json").string(), "}\n"
                   "init_from: {path: ", kBert.string(), ", format: ", format, "}\n"
                   "task: {type: contrastive, temperature_init: 0.1}\n"
                   "data:\n  train: {manifest: ", (data / "train.jsonl").string(), ", batch_size: 32, workers: 1}\n"
                   "optim: {type: adamw, lr: 1.0e-3, weight_decay: 0.01, betas: [0.9, 0.98]}\n"
                   "schedule: {type: constant, warmup_steps: 0}\n"
                   "train: {steps: 12, checkpoint_every: 12, keep: 1, log_every: 1}\n");
  };
  Config c = Config::parse(recipe(32, "hf-bert"), "bert_clip.yaml");
  Recipe r = Recipe::from(c);
  EXPECT_EQ(r.vocab_size, cfg["vocab_size"].get<int64_t>());
  const fs::path run = data / "run";
  {
    Trainer t(r, c, run.string(), false);
    // Before any step the text tower holds the checkpoint's weights.
    const TensorMap orig = load_safetensors((kBert / "model.safetensors").string()).tensors;
    EXPECT_EQ(t.model().state_dict().at("text.token_embedding").to_vector<float>(),
              orig.at("embeddings.word_embeddings.weight").to_vector<float>());
    t.train();
  }
  std::vector<double> losses = loom::testing::losses_of(run);
  ASSERT_EQ(losses.size(), 12u);
  for (double l : losses) EXPECT_TRUE(std::isfinite(l));
  EXPECT_LT(losses.back(), losses.front());
  // The run keeps the Hugging Face tokenizer beside its checkpoint and resumes with it.
  EXPECT_EQ(data::load_tokenizer((run / "checkpoints/latest/tokenizer.json").string())->kind(), "wordpiece");

  Config wide = Config::parse(recipe(64, "hf-bert"), "wide.yaml");
  const std::string e = error_of([&] { Trainer(Recipe::from(wide), wide, (data / "run_wide").string(), false); });
  EXPECT_NE(e.find("embeddings.word_embeddings.weight is [318, 32], but the recipe's model has text.token_embedding [318, 64]"),
            std::string::npos) << e;
  const std::string f = error_of([&] { Recipe::from(Config::parse(recipe(32, "hf-gpt"), "fmt.yaml")); });
  EXPECT_NE(f.find("init_from.format"), std::string::npos) << f;
  fs::remove_all(data);
}

// `loom train --check` loads init_from as the run will: a CLAP with a BERT text tower from the
// checkpoint passes, and the same recipe one size too wide fails there, before any data is read.
TEST(HfImport, CheckLoadsInitFromIntoAClap) {
  auto recipe = [&](int64_t width) {
    return str_cat("name: bert_clap\nmodel:\n  type: clap\n  embed_dim: 16\n"
                   "  audio: {type: ast, mel_bins: 16, frames: 32, patch: 8, width: 32, layers: 1, heads: 2}\n"
                   "  text: {type: bert, context: 16, width: ", width, ", layers: 2, heads: 4, mlp_ratio: 2, pool: mean}\n"
                   "tokenizer: {type: wordpiece, path: ", (kBert / "tokenizer.json").string(), "}\n"
                   "init_from: {path: ", kBert.string(), ", format: hf-bert}\n"
                   "task: {type: contrastive, pairs: [[audio, text]]}\n"
                   "data:\n  train: {manifest: not_here/train.jsonl, batch_size: 4,\n"
                   "          audio: {sample_rate: 16000, duration: 0.35, mel_bins: 16}}\n"
                   "optim: {type: adamw, lr: 1.0e-3}\ntrain: {steps: 2}\n");
  };
  Config c = Config::parse(recipe(32), "bert_clap.yaml");
  c.allow_missing_files();
  const std::string report = check_recipe(Recipe::from(c), c);
  EXPECT_NE(report.find(str_cat("init_from ", kBert.string(), " (format hf-bert): fits the model")), std::string::npos) << report;
  EXPECT_NE(report.find("forward: infonce"), std::string::npos) << report;
  EXPECT_NE(report.find("not_here/train.jsonl"), std::string::npos) << report;

  Config wide = Config::parse(recipe(64), "bert_clap_wide.yaml");
  wide.allow_missing_files();
  const std::string e = error_of([&] { check_recipe(Recipe::from(wide), wide); });
  EXPECT_NE(e.find("embeddings.word_embeddings.weight is [318, 32], but the recipe's model has text.token_embedding [318, 64]"),
            std::string::npos) << e;
}

// ---------------------------------------------------------------- BertForMaskedLM's head

namespace {
const fs::path kBertMlm = kFixtures / "hf_bert_mlm_tiny";

// A text tower and the mlm task's head, as a model with task mlm holds them.
struct MlmRoot : TextRoot {
  MlmRoot(std::shared_ptr<TextEncoder> t, const MlmHeadConfig& hc, Generator& g) : TextRoot(std::move(t)) {
    head = std::make_shared<MlmHead>(hc, g);
    register_module("mlm_head", head);
  }
  std::shared_ptr<MlmHead> head;
};

MlmRoot mlm_root(const json& cfg, bool tied = true) {
  Generator g(5);
  const TextConfig t = bert_config(cfg, "cls");
  return MlmRoot(std::make_shared<Bert>(t, g), MlmHeadConfig{t.width, t.vocab_size, t.act, t.norm_eps, tied}, g);
}
}  // namespace

TEST(HfBertMlm, LogitsAndLossMatchTransformers) {
  const SafetensorsFile want = load_safetensors((kBertMlm / "expected.safetensors").string());
  MlmRoot root = mlm_root(read_json(kBertMlm / "config.json"));
  const std::vector<float> bias_before = root.head->bias.to_vector<float>();
  LoadReport rep = load_pretrained(root, hf(kBertMlm, "hf-bert"));
  EXPECT_TRUE(rep.missing.empty());
  EXPECT_TRUE(rep.unexpected.empty());
  EXPECT_NE(root.head->bias.to_vector<float>(), bias_before) << "the head was not loaded";
  const Bert& bert = dynamic_cast<const Bert&>(*root.text);
  const Tensor ids = want.tensors.at("input/input_ids"), labels = want.tensors.at("input/labels");
  Tensor logits = root.head->forward(bert.forward_tokens(ids), bert.token_embedding);
  EXPECT_LE(max_abs_diff(logits, want.tensors.at("out/logits")), 1e-4);
  const int64_t V = logits.size(2);
  Tensor loss = ops::cross_entropy(logits.reshape({-1, V}), labels.reshape({-1}), -100);
  EXPECT_LE(std::abs(loss.item<double>() - want.tensors.at("out/loss").item<double>()), 1e-4)
      << loss.item<double>() << " vs " << want.tensors.at("out/loss").item<double>();
}

TEST(HfBertMlm, ExportIsABertForMaskedLMWithEveryKey) {
  MlmRoot root = mlm_root(read_json(kBertMlm / "config.json"));
  load_pretrained(root, hf(kBertMlm, "hf-bert"));
  HfCheckpoint out = to_hf(root, "hf-bert", nullptr);
  const TensorMap orig = load_safetensors((kBertMlm / "model.safetensors").string()).tensors;
  for (const auto& [k, t] : orig) {
    ASSERT_TRUE(out.tensors.count(k)) << "the export lacks " << k;
    if (k == "bert.embeddings.position_embeddings.weight") continue;  // loom keeps the 16 positions it uses
    EXPECT_EQ(out.tensors.at(k).to_vector<float>(), t.to_vector<float>()) << k;
  }
  EXPECT_EQ(out.tensors.size(), orig.size()) << "keys the checkpoint does not have";
  EXPECT_EQ(out.config["architectures"][0], "BertForMaskedLM");
  EXPECT_EQ(out.config["tie_word_embeddings"], true);
  // Written and read back into a fresh model: the same logits.
  const fs::path dir = loom::testing_support::tmp_path("loom_pretrained_mlm_export");
  export_hf(root, "hf-bert", nullptr, dir.string());
  MlmRoot back = mlm_root(read_json(kBertMlm / "config.json"));
  LoadReport rep = load_pretrained(back, hf(dir, "hf-bert"));
  EXPECT_TRUE(rep.missing.empty() && rep.unexpected.empty());
  EXPECT_EQ(back.head->state_dict().at("transform.weight").to_vector<float>(),
            root.head->state_dict().at("transform.weight").to_vector<float>());
}

TEST(HfBertMlm, UntiedHeadCarriesItsDecoderAndABertModelLeavesTheHeadFresh) {
  // An untied head reads cls.predictions.decoder.weight; the tied fixture has none, so the load is
  // strict about it and names it.
  MlmRoot untied = mlm_root(read_json(kBertMlm / "config.json"), false);
  const std::string e = error_of([&] { load_pretrained(untied, hf(kBertMlm, "hf-bert")); });
  EXPECT_NE(e.find("cls.predictions.decoder.weight"), std::string::npos) << e;
  // A BertModel (no cls.predictions.*) into a model with an mlm head: the encoder loads, the head stays.
  MlmRoot root = mlm_root(read_json(kBert / "config.json"));
  const std::vector<float> before = root.head->transform->weight.to_vector<float>();
  LoadReport rep = load_pretrained(root, hf(kBert, "hf-bert"));
  EXPECT_TRUE(rep.missing.empty() && rep.unexpected.empty());
  EXPECT_EQ(root.head->transform->weight.to_vector<float>(), before);
}
