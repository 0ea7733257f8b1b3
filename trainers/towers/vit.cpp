// Tower type vit: a ViT over images (layers/transformer.h).
#include <cmath>
#include "trainers/towers.h"

namespace loom {

ViTConfig read_vit_config(const Config& c, const std::string& k) {
  ViTConfig v;
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
  v.patch_dropout = c.f64(k + ".patch_dropout", 0.0);
  if (!(v.patch_dropout >= 0 && v.patch_dropout < 1)) c.fail(k + ".patch_dropout", "must be in [0, 1)");
  if (!(v.layer_scale_init >= 0)) c.fail(k + ".layer_scale_init", "must be >= 0");
  if (!(v.mlp_ratio > 0)) c.fail(k + ".mlp_ratio", str_cat("must be > 0, got ", v.mlp_ratio));
  v.ln_pre = c.boolean(k + ".ln_pre", false);
  v.checkpoint_every = read_checkpoint_every(c, k);
  v.patch_bias = c.boolean(k + ".patch_bias", true);
  v.act = c.choice(k + ".act", {"gelu", "quick_gelu"}, "gelu");
  if (v.height() % v.patch != 0 || v.width_px() % v.patch != 0)
    c.fail(k + ".patch", str_cat("patch ", v.patch, " does not divide image_size ", v.height(), "x", v.width_px()));
  if (v.width % v.heads != 0) c.fail(k + ".heads", str_cat("heads ", v.heads, " does not divide width ", v.width));
  if (v.pos_embed == "sincos" && v.width % 4 != 0) c.fail(k + ".pos_embed", "sincos needs a width divisible by 4");
  return v;
}

TowerSpec vit_tower(const ViTConfig& v) {
  TowerSpec s;
  s.type = "vit";
  s.input = {"image", v.channels, v.height(), v.width_px(), 0};
  s.width = v.width;
  s.overlapping_patches = v.overlapping();
  s.grid_h = v.grid_h();
  s.grid_w = v.grid_w();
  s.patch_dropout = v.patch_dropout;
  s.build = [v](Generator& g, const TowerContext&) -> std::shared_ptr<Encoder> { return std::make_shared<ViT>(v, g); };
  return s;
}

TowerSpec read_vit(const Config& c, const std::string& key) { return vit_tower(read_vit_config(c, key)); }

}  // namespace loom
