// Tower type ast: an AST-style transformer over log-mel spectrograms (layers/audio.h).
#include "trainers/towers.h"

namespace loom {

AudioTransformerConfig read_ast_config(const Config& c, const std::string& k) {
  AudioTransformerConfig a;
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
  a.patch_dropout = c.f64(k + ".patch_dropout", 0.0);
  if (!(a.patch_dropout >= 0 && a.patch_dropout < 1)) c.fail(k + ".patch_dropout", "must be in [0, 1)");
  if (!(a.layer_scale_init >= 0)) c.fail(k + ".layer_scale_init", "must be >= 0");
  a.checkpoint_every = read_checkpoint_every(c, k);
  if (!(a.mlp_ratio > 0)) c.fail(k + ".mlp_ratio", str_cat("must be > 0, got ", a.mlp_ratio));
  if (a.mel_bins < 4 || a.mel_bins > 1024) c.fail(k + ".mel_bins", "must be in [4, 1024]");
  if (a.stride == a.patch && (a.mel_bins % a.patch != 0 || a.frames % a.patch != 0))
    c.fail(k + ".patch", str_cat("patch ", a.patch, " does not divide mel_bins ", a.mel_bins, " and frames ", a.frames));
  if (a.patch > a.mel_bins || a.patch > a.frames)
    c.fail(k + ".patch", str_cat("patch ", a.patch, " is larger than the ", a.mel_bins, " x ", a.frames, " grid"));
  if (a.width % a.heads != 0) c.fail(k + ".heads", str_cat("heads ", a.heads, " does not divide width ", a.width));
  if (a.pos_embed == "sincos" && a.width % 4 != 0) c.fail(k + ".pos_embed", "sincos needs a width divisible by 4");
  return a;
}

TowerSpec ast_tower(const AudioTransformerConfig& a) {
  TowerSpec s;
  s.type = "ast";
  s.input = {"audio", 1, a.mel_bins, a.frames, 0};
  s.width = a.width;
  s.overlapping_patches = a.stride != 0 && a.stride != a.patch;
  s.patch_dropout = a.patch_dropout;
  s.build = [a](Generator& g, const TowerContext&) -> std::shared_ptr<Encoder> {
    return std::make_shared<AudioTransformer>(a, g);
  };
  return s;
}

TowerSpec read_ast(const Config& c, const std::string& key) { return ast_tower(read_ast_config(c, key)); }

}  // namespace loom
