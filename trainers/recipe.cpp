#include "trainers/recipe.h"
#include <cmath>

namespace loom {
namespace {

data::ImageTransform read_transform(const Config& c, const std::string& k, int64_t image_size, bool train) {
  data::ImageTransform t;
  t.size = image_size;
  t.random_resized_crop = train && c.boolean(k + ".random_resized_crop", false);
  t.crop_scale_min = c.f64(k + ".crop_scale_min", 0.5);
  t.hflip = train && c.boolean(k + ".hflip", false);
  t.mean = c.f64_list(k + ".mean", {0.5});
  t.std = c.f64_list(k + ".std", {0.5});
  if (!(t.crop_scale_min > 0 && t.crop_scale_min <= 1)) c.fail(k + ".crop_scale_min", "must be in (0, 1]");
  for (double s : t.std) if (!(s > 0)) c.fail(k + ".std", "every std must be > 0");
  return t;
}

DataSpec read_data(const Config& c, const std::string& k, int64_t image_size, bool train) {
  DataSpec d;
  d.manifest = c.existing_path(k + ".manifest");
  d.batch_size = c.i64(k + ".batch_size", train ? 128 : 256);
  const int64_t workers = c.i64(k + ".workers", 2);
  if (workers < 0 || workers > 256) c.fail(k + ".workers", "must be in [0, 256]");
  d.workers = int(workers);
  d.on_error = c.choice(k + ".on_error", {"skip", "fail"}, "skip");
  d.transform = read_transform(c, k + ".transform", image_size, train);
  if (d.batch_size < 1) c.fail(k + ".batch_size", "must be >= 1");
  return d;
}

void check_positive(const Config& c, const std::string& key, double v) {
  if (!(v > 0)) c.fail(key, str_cat("must be > 0, got ", v));
}

}  // namespace

Recipe Recipe::from(const Config& c) {
  Recipe r;
  r.name = c.str("name");
  r.seed = uint64_t(c.i64("seed", 0));

  c.choice("model.type", {"clip"}, "clip");
  ClipConfig& m = r.model;
  m.embed_dim = c.i64("model.embed_dim", 64);
  c.choice("model.vision.type", {"vit"}, "vit");
  m.vision.image_size = c.i64("model.vision.image_size");
  m.vision.channels = c.i64("model.vision.channels", 3);
  m.vision.patch = c.i64("model.vision.patch");
  m.vision.width = c.i64("model.vision.width");
  m.vision.layers = c.i64("model.vision.layers");
  m.vision.heads = c.i64("model.vision.heads");
  m.vision.mlp_ratio = c.f64("model.vision.mlp_ratio", 4.0);
  m.vision.pos_embed = c.choice("model.vision.pos_embed", {"learned", "sincos"}, "learned");
  m.vision.layer_scale_init = c.f64("model.vision.layer_scale_init", 0.0);
  m.vision.drop_path = c.f64("model.vision.drop_path", 0.0);
  if (!(m.vision.drop_path >= 0 && m.vision.drop_path < 1)) c.fail("model.vision.drop_path", "must be in [0, 1)");
  if (!(m.vision.layer_scale_init >= 0)) c.fail("model.vision.layer_scale_init", "must be >= 0");
  check_positive(c, "model.vision.mlp_ratio", m.vision.mlp_ratio);
  c.choice("model.text.type", {"transformer"}, "transformer");
  m.text.context = c.i64("model.text.context");
  m.text.width = c.i64("model.text.width");
  m.text.layers = c.i64("model.text.layers");
  m.text.heads = c.i64("model.text.heads");
  m.text.mlp_ratio = c.f64("model.text.mlp_ratio", 4.0);
  check_positive(c, "model.text.mlp_ratio", m.text.mlp_ratio);
  for (const char* k : {"model.embed_dim", "model.vision.image_size", "model.vision.channels", "model.vision.patch",
                        "model.vision.width", "model.vision.layers", "model.vision.heads", "model.text.context",
                        "model.text.width", "model.text.layers", "model.text.heads"})
    if (c.i64(k) < 1) c.fail(k, "must be >= 1");
  if (m.vision.image_size % m.vision.patch != 0)
    c.fail("model.vision.patch", str_cat("patch ", m.vision.patch, " does not divide image_size ", m.vision.image_size));
  if (m.vision.width % m.vision.heads != 0)
    c.fail("model.vision.heads", str_cat("heads ", m.vision.heads, " does not divide width ", m.vision.width));
  if (m.text.width % m.text.heads != 0)
    c.fail("model.text.heads", str_cat("heads ", m.text.heads, " does not divide width ", m.text.width));
  if (m.vision.pos_embed == "sincos" && m.vision.width % 4 != 0)
    c.fail("model.vision.pos_embed", "sincos needs a width divisible by 4");
  if (m.text.context < 3) c.fail("model.text.context", "must be >= 3 (start, a token, end)");

  c.choice("tokenizer.type", {"bpe"}, "bpe");
  r.vocab_size = c.i64("tokenizer.vocab_size", 512);
  if (r.vocab_size < 64) c.fail("tokenizer.vocab_size", "must be >= 64");
  m.text.vocab_size = r.vocab_size;
  r.tokenizer_train_on = c.has("tokenizer.train_on") ? c.existing_path("tokenizer.train_on") : "";

  c.choice("task.type", {"contrastive"}, "contrastive");
  if (c.has("task.pairs")) {  // only image-text pairs exist today
    YAML::Node p = c.node("task.pairs");
    const bool ok = p.IsSequence() && p.size() == 1 && p[0].IsSequence() && p[0].size() == 2 &&
                    p[0][0].as<std::string>("") == "image" && p[0][1].as<std::string>("") == "text";
    if (!ok) c.fail("task.pairs", "only [[image, text]] is supported today");
  }
  m.init_temperature = c.f64("task.temperature_init", 0.07);
  check_positive(c, "task.temperature_init", m.init_temperature);
  r.loss = c.choice("task.loss", {"infonce", "triplet"}, "infonce");
  r.contrastive.same_label_positives = c.boolean("task.same_label_positives", false);
  const double max_scale = c.f64("task.max_logit_scale", 100.0);
  if (!(max_scale > 1.0)) c.fail("task.max_logit_scale", "must be > 1 (the scale is clamped to [1, max])");
  r.contrastive.max_logit_scale = std::log(max_scale);
  r.triplet_margin = c.f64("task.margin", 0.2);

  r.train_data = read_data(c, "data.train", m.vision.image_size, true);
  if (c.has("data.eval")) {
    r.has_eval_data = true;
    r.eval_data = read_data(c, "data.eval", m.vision.image_size, false);
  }
  if (r.tokenizer_train_on.empty()) r.tokenizer_train_on = r.train_data.manifest;

  if (c.has("init_from")) {
    r.init_from.path = c.existing_path("init_from.path");
    r.init_from.strict = c.boolean("init_from.strict", true);
    if (c.has("init_from.remap")) {
      YAML::Node n = c.node("init_from.remap");  // old key prefix -> new prefix
      if (!n.IsMap()) c.fail("init_from.remap", "expected a mapping of key prefixes");
      for (auto it = n.begin(); it != n.end(); ++it) r.init_from.remap[it->first.as<std::string>()] = it->second.as<std::string>();
    }
  }

  c.choice("optim.type", {"adamw"}, "adamw");
  r.optim.lr = c.f64("optim.lr", 1e-3);
  r.optim.weight_decay = c.f64("optim.weight_decay", 0.05);
  auto betas = c.f64_list("optim.betas", {0.9, 0.999});
  if (betas.size() != 2 || !(betas[0] >= 0 && betas[0] < 1 && betas[1] >= 0 && betas[1] < 1))
    c.fail("optim.betas", "expected two numbers in [0, 1)");
  r.optim.beta1 = betas[0];
  r.optim.beta2 = betas[1];
  r.optim.eps = c.f64("optim.eps", 1e-8);
  check_positive(c, "optim.lr", r.optim.lr);
  check_positive(c, "optim.eps", r.optim.eps);
  if (!(r.optim.weight_decay >= 0)) c.fail("optim.weight_decay", "must be >= 0");

  r.schedule.type = c.choice("schedule.type", {"cosine", "linear", "constant"}, "cosine");
  r.schedule.warmup_steps = c.i64("schedule.warmup_steps", 0);
  r.schedule.min_lr_ratio = c.f64("schedule.min_lr_ratio", 0.0);
  if (r.schedule.warmup_steps < 0) c.fail("schedule.warmup_steps", "must be >= 0");
  if (!(r.schedule.min_lr_ratio >= 0 && r.schedule.min_lr_ratio <= 1)) c.fail("schedule.min_lr_ratio", "must be in [0, 1]");

  if (c.has("train.steps") == c.has("train.epochs")) c.fail("train.steps", "give exactly one of train.steps and train.epochs" + c.near_miss("train.steps"));
  r.steps = c.i64("train.steps", 0);
  r.epochs = c.i64("train.epochs", 0);
  if (c.has("train.steps") && r.steps < 1) c.fail("train.steps", "must be >= 1");
  if (c.has("train.epochs") && r.epochs < 1) c.fail("train.epochs", "must be >= 1");
  r.grad_accum = c.i64("train.grad_accum", 1);
  if (r.grad_accum < 1) c.fail("train.grad_accum", "must be >= 1");
  r.clip_grad_norm = c.f64("train.clip_grad_norm", 0.0);
  if (!(r.clip_grad_norm >= 0)) c.fail("train.clip_grad_norm", "must be >= 0 (0: off)");
  r.device = c.choice("train.device", {"cpu", "cuda"}, "cpu");
  if (r.device == "cuda") c.fail("train.device", "training on CUDA arrives with the CUDA backend; use cpu");
  r.precision = c.choice("train.precision", {"fp32", "bf16"}, "fp32");
  if (r.precision == "bf16") c.fail("train.precision", "bf16 training arrives with the CUDA backend; use fp32 on the CPU");
  r.checkpoint_every = c.i64("train.checkpoint_every", 0);
  r.keep = c.i64("train.keep", 2);
  r.log_every = c.i64("train.log_every", 10);
  const int64_t threads = c.i64("train.threads", 0);
  if (threads < 0 || threads > 4096) c.fail("train.threads", "must be in [0, 4096] (0: OpenMP's default)");
  r.threads = int(threads);
  if (r.keep < 0) c.fail("train.keep", "must be >= 0 (0 keeps every checkpoint)");
  if (r.checkpoint_every < 0) c.fail("train.checkpoint_every", "must be >= 0");

  r.eval_every = c.i64("eval.every", 0);
  if (c.has("eval.zeroshot")) {
    r.zeroshot = true;
    r.zeroshot_labels = c.existing_path("eval.zeroshot.labels_from");
    r.zeroshot_templates = c.str_list("eval.zeroshot.templates", {"a photo of a {}."});
    for (const auto& t : r.zeroshot_templates)
      if (t.find("{}") == std::string::npos) c.fail("eval.zeroshot.templates", str_cat("template '", t, "' has no {}"));
  }
  r.retrieval = c.boolean("eval.retrieval", false);
  r.retrieval_samples = c.i64("eval.retrieval_samples", 1000);
  if (r.retrieval_samples < 1) c.fail("eval.retrieval_samples", "must be >= 1");
  r.eval_max_samples = c.i64("eval.max_samples", 0);
  if ((r.zeroshot || r.retrieval) && !r.has_eval_data) c.fail("eval", "evaluation needs data.eval");

  c.check_unknown();
  return r;
}

}  // namespace loom
