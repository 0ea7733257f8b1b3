// model.type: vlmo — VLMo's Multiway Transformer (layers/multiway.h): an image tower and a text tower
// that share every block's attention, each with its own feed-forward expert, and a vision-language
// expert from block vl_from on for the fused image-text sequence (the model's fusion()). Linear heads
// into embed_dim ("image_proj", "text_proj") and the pair's temperature for ITC.
//   model:
//     type: vlmo
//     embed_dim: 64
//     width: 96, layers: 4, heads: 4, vl_from: 3      # blocks 3.. have the vision-language expert
//     vl_expert: true                                 # false: none (BEiT-3), each span through its own expert
//     mlp_ratio: 4, drop_path: 0.1, layer_scale_init: 0, rel_pos_bias: false
//     image: {image_size: 32, channels: 3, patch: 4, pos_embed: learned}
//     text:  {context: 24, pool: cls}
#include "layers/multiway.h"
#include "trainers/models.h"

namespace loom {

ModelSpec read_vlmo_model(const Config& c) {
  MultiwayConfig mw;
  mw.width = c.i64("model.width");
  mw.layers = c.i64("model.layers");
  mw.heads = c.i64("model.heads");
  for (const char* key : {"model.width", "model.layers", "model.heads"})
    if (c.i64(key) < 1) c.fail(key, "must be >= 1");
  if (mw.width % mw.heads != 0) c.fail("model.heads", str_cat("heads ", mw.heads, " does not divide width ", mw.width));
  // vl_expert: false is BEiT-3 as released (torchscale's Multiway network): no vision-language
  // expert, the fused sequence's text through the language expert and its image through the vision one.
  const bool vl_expert = c.boolean("model.vl_expert", true);
  if (!vl_expert && c.has("model.vl_from"))
    c.fail("model.vl_from", "the model has no vision-language expert (model.vl_expert: false): drop vl_from");
  mw.vl_from = vl_expert ? c.i64("model.vl_from", mw.layers - 1) : mw.layers;
  if (vl_expert && (mw.vl_from < 0 || mw.vl_from >= mw.layers))
    c.fail("model.vl_from", str_cat("the vision-language expert must start at a block in [0, ", mw.layers - 1,
                                    "] of the ", mw.layers, " layers, got ", mw.vl_from,
                                    " (VLMo-Base: 12 layers, vl_from 10); without one the fusion path has no VL expert"));
  mw.mlp_ratio = c.f64("model.mlp_ratio", 4.0);
  if (!(mw.mlp_ratio > 0)) c.fail("model.mlp_ratio", "must be > 0");
  mw.drop_path = c.f64("model.drop_path", 0.0);
  if (!(mw.drop_path >= 0 && mw.drop_path < 1)) c.fail("model.drop_path", "must be in [0, 1)");
  mw.layer_scale_init = c.f64("model.layer_scale_init", 0.0);
  if (!(mw.layer_scale_init >= 0)) c.fail("model.layer_scale_init", "must be >= 0");
  mw.rel_pos_bias = c.boolean("model.rel_pos_bias", false);

  ViTConfig v;
  v.image_size = c.i64("model.image.image_size");
  v.channels = c.i64("model.image.channels", 3);
  v.patch = c.i64("model.image.patch");
  for (const char* key : {"model.image.image_size", "model.image.channels", "model.image.patch"})
    if (c.i64(key) < 1) c.fail(key, "must be >= 1");
  if (v.image_size % v.patch != 0)
    c.fail("model.image.patch", str_cat("patch ", v.patch, " does not divide image_size ", v.image_size));
  v.pos_embed = c.choice("model.image.pos_embed", {"learned", "sincos"}, "learned");
  if (v.pos_embed == "sincos" && mw.width % 4 != 0) c.fail("model.image.pos_embed", "sincos needs a width divisible by 4");
  v.width = mw.width;
  v.heads = mw.heads;
  v.layers = 0;
  v.ln_post = false;
  mw.grid_h = v.grid_h();
  mw.grid_w = v.grid_w();

  TextConfig t;
  t.type = "bert";
  t.context = c.i64("model.text.context");
  if (t.context < 3) c.fail("model.text.context", "must be >= 3 (start, a token, end)");
  t.pool = c.choice("model.text.pool", {"cls", "mean"}, "cls");
  t.norm_eps = 1e-5;
  t.width = mw.width;
  t.heads = mw.heads;
  t.layers = 0;

  ModelSpec m;
  TowerSpec image = vit_tower(v);
  image.type = "multiway";
  image.key = "model.image";
  TowerSpec text = text_tower(t);
  text.type = "multiway";
  text.key = "model.text";
  m.towers = {{"image", image}, {"text", text}};
  m.embed_dim = read_embed_dim(c);
  m.fusion_over = {"text", "image"};
  m.make = [mw, v, t](const ModelSpec& s, const TowerContext& ctx, Generator& gen) -> std::shared_ptr<MultimodalModel> {
    // The shared blocks first, so a seed gives the same weights whatever the towers' order.
    auto shared = std::make_shared<MultiwayTransformer>(mw, gen);
    TowerLayout l;
    l.embed_dim = s.embed_dim;
    l.towers.push_back({"image", "image",
                        [shared, v](Generator& g) { return std::make_shared<MultiwayImageTower>(v, shared, g); },
                        linear_head});
    const TextConfig tc = with_context(t, ctx);
    l.towers.push_back({"text", "text",
                        [shared, tc](Generator& g) { return std::make_shared<MultiwayTextTower>(tc, shared, g); },
                        linear_head});
    l.shared = {{"multiway", shared}};
    for (const PairTemperature& p : s.pairs)
      if (p.learnable) l.scales.push_back({p.a, p.b, "logit_scale", p.init});
    return std::make_shared<MultimodalModel>(l, gen);
  };
  return m;
}

}  // namespace loom
