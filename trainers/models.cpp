#include "trainers/models.h"

namespace loom {

VisionModel::VisionModel(const ViTConfig& c, Generator& gen) {
  visual = std::make_shared<ViT>(c, gen);
  register_module("visual", visual);
}

AudioModel::AudioModel(const AudioTransformerConfig& c, Generator& gen) {
  audio = std::make_shared<AudioTransformer>(c, gen);
  register_module("audio", audio);
}

std::shared_ptr<Module> ModelSpec::build(Generator& gen) const {
  if (type == "clip") return std::make_shared<Clip>(clip, gen);
  if (type == "clap") return std::make_shared<Clap>(clap, gen);
  if (type == "ast") return std::make_shared<AudioModel>(clap.audio, gen);
  return std::make_shared<VisionModel>(clip.vision, gen);
}

namespace {

void check_positive(const Config& c, const std::string& key, double v) {
  if (!(v > 0)) c.fail(key, str_cat("must be > 0, got ", v));
}

ViTConfig read_vit(const Config& c, const std::string& k) {
  ViTConfig v;
  c.choice(k + ".type", {"vit"}, "vit");
  // image_size: N (square) or [H, W]
  if (c.has(k + ".image_size") && c.node(k + ".image_size").IsSequence()) {
    std::vector<double> hw = c.f64_list(k + ".image_size", {});
    if (hw.size() != 2 || hw[0] < 1 || hw[1] < 1 || hw[0] != std::floor(hw[0]) || hw[1] != std::floor(hw[1]))
      c.fail(k + ".image_size", "expected a size N or [height, width] of positive integers");
    v.image_height = int64_t(hw[0]);
    v.image_width = int64_t(hw[1]);
    v.image_size = v.image_height;
  } else {
    v.image_size = c.i64(k + ".image_size");
    if (v.image_size < 1) c.fail(k + ".image_size", "must be >= 1");
  }
  v.channels = c.i64(k + ".channels", 3);
  v.patch = c.i64(k + ".patch");
  v.width = c.i64(k + ".width");
  v.layers = c.i64(k + ".layers");
  v.heads = c.i64(k + ".heads");
  for (const char* key : {".channels", ".patch", ".width", ".layers", ".heads"})
    if (c.i64(k + key) < 1) c.fail(k + key, "must be >= 1");
  v.mlp_ratio = c.f64(k + ".mlp_ratio", 4.0);
  v.pos_embed = c.choice(k + ".pos_embed", {"learned", "sincos"}, "learned");
  v.layer_scale_init = c.f64(k + ".layer_scale_init", 0.0);
  v.drop_path = c.f64(k + ".drop_path", 0.0);
  if (!(v.drop_path >= 0 && v.drop_path < 1)) c.fail(k + ".drop_path", "must be in [0, 1)");
  if (!(v.layer_scale_init >= 0)) c.fail(k + ".layer_scale_init", "must be >= 0");
  check_positive(c, k + ".mlp_ratio", v.mlp_ratio);
  v.ln_pre = c.boolean(k + ".ln_pre", false);
  v.patch_bias = c.boolean(k + ".patch_bias", true);
  v.act = c.choice(k + ".act", {"gelu", "quick_gelu"}, "gelu");
  if (v.height() % v.patch != 0 || v.width_px() % v.patch != 0)
    c.fail(k + ".patch", str_cat("patch ", v.patch, " does not divide image_size ", v.height(), "x", v.width_px()));
  if (v.width % v.heads != 0) c.fail(k + ".heads", str_cat("heads ", v.heads, " does not divide width ", v.width));
  if (v.pos_embed == "sincos" && v.width % 4 != 0) c.fail(k + ".pos_embed", "sincos needs a width divisible by 4");
  return v;
}

AudioTransformerConfig read_audio_tower(const Config& c, const std::string& k) {
  AudioTransformerConfig a;
  c.choice(k + ".type", {"ast"}, "ast");
  for (const char* key : {".mel_bins", ".frames", ".patch", ".width", ".layers", ".heads"})
    if (c.i64(k + key) < 1) c.fail(k + key, "must be >= 1");
  a.mel_bins = c.i64(k + ".mel_bins");
  a.frames = c.i64(k + ".frames");
  a.patch = c.i64(k + ".patch");
  a.width = c.i64(k + ".width");
  a.layers = c.i64(k + ".layers");
  a.heads = c.i64(k + ".heads");
  a.stride = c.i64(k + ".stride", a.patch);
  if (a.stride < 1 || a.stride > a.patch)
    c.fail(k + ".stride", str_cat("must be in [1, patch ", a.patch, "] (below the patch, patches overlap, as AST's 10 of 16)"));
  a.mlp_ratio = c.f64(k + ".mlp_ratio", 4.0);
  a.pos_embed = c.choice(k + ".pos_embed", {"learned", "sincos"}, "learned");
  a.layer_scale_init = c.f64(k + ".layer_scale_init", 0.0);
  a.drop_path = c.f64(k + ".drop_path", 0.0);
  if (!(a.drop_path >= 0 && a.drop_path < 1)) c.fail(k + ".drop_path", "must be in [0, 1)");
  if (!(a.layer_scale_init >= 0)) c.fail(k + ".layer_scale_init", "must be >= 0");
  check_positive(c, k + ".mlp_ratio", a.mlp_ratio);
  if (a.mel_bins < 4 || a.mel_bins > 1024) c.fail(k + ".mel_bins", "must be in [4, 1024]");
  if (a.stride == a.patch && (a.mel_bins % a.patch != 0 || a.frames % a.patch != 0))
    c.fail(k + ".patch", str_cat("patch ", a.patch, " does not divide mel_bins ", a.mel_bins, " and frames ", a.frames));
  if (a.patch > a.mel_bins || a.patch > a.frames)
    c.fail(k + ".patch", str_cat("patch ", a.patch, " is larger than the ", a.mel_bins, " x ", a.frames, " grid"));
  if (a.width % a.heads != 0) c.fail(k + ".heads", str_cat("heads ", a.heads, " does not divide width ", a.width));
  if (a.pos_embed == "sincos" && a.width % 4 != 0) c.fail(k + ".pos_embed", "sincos needs a width divisible by 4");
  return a;
}

TextConfig read_text(const Config& c, const std::string& k) {
  TextConfig t;
  t.type = c.choice(k + ".type", {"transformer", "bert"}, "transformer");
  t.act = c.choice(k + ".act", {"gelu", "quick_gelu"}, "gelu");
  if (t.type == "bert") {
    t.pool = c.choice(k + ".pool", {"cls", "pooler", "mean"}, "cls");
    t.type_vocab_size = c.i64(k + ".type_vocab_size", 2);
    if (t.type_vocab_size < 1) c.fail(k + ".type_vocab_size", "must be >= 1");
    t.norm_eps = c.f64(k + ".norm_eps", 1e-12);
    check_positive(c, k + ".norm_eps", t.norm_eps);
  }
  t.context = c.i64(k + ".context");
  t.width = c.i64(k + ".width");
  t.layers = c.i64(k + ".layers");
  t.heads = c.i64(k + ".heads");
  for (const char* key : {".context", ".width", ".layers", ".heads"})
    if (c.i64(k + key) < 1) c.fail(k + key, "must be >= 1");
  t.mlp_ratio = c.f64(k + ".mlp_ratio", 4.0);
  check_positive(c, k + ".mlp_ratio", t.mlp_ratio);
  if (t.width % t.heads != 0) c.fail(k + ".heads", str_cat("heads ", t.heads, " does not divide width ", t.width));
  if (t.context < 3) c.fail(k + ".context", "must be >= 3 (start, a token, end)");
  return t;
}

}  // namespace

ModelSpec parse_model(const Config& c) {
  ModelSpec m;
  m.type = c.choice("model.type", {"clip", "vit", "clap", "ast"}, "clip");
  if (m.type == "clap" || m.type == "ast") {
    m.clap.audio = read_audio_tower(c, "model.audio");
    if (m.type == "clap") {
      m.clap.embed_dim = c.i64("model.embed_dim", 64);
      if (m.clap.embed_dim < 1) c.fail("model.embed_dim", "must be >= 1");
      m.clap.projection = c.choice("model.projection", {"mlp", "linear"}, "mlp");
      m.clap.text = read_text(c, "model.text");
    }
    return m;
  }
  m.clip.vision = read_vit(c, "model.vision");
  if (m.type == "clip") {
    m.clip.embed_dim = c.i64("model.embed_dim", 64);
    if (m.clip.embed_dim < 1) c.fail("model.embed_dim", "must be >= 1");
    m.clip.text = read_text(c, "model.text");
  }
  return m;
}

}  // namespace loom
