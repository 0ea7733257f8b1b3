// model.type: towers (the general form; a recipe with model.towers) — one tower per modality, each of
// any registered type, named by its modality ("image", "audio", "text"), a head each into
// model.embed_dim ("<modality>_proj"; model.projection linear as CLIP's or mlp as LAION-CLAP's), and a
// learnable temperature "logit_scale_<a>_<b>" per pair the contrastive tasks train with one.
//   model:
//     embed_dim: 64
//     towers:
//       image: {type: vit, image_size: 32, patch: 4, width: 128, layers: 4, heads: 4}
//       text:  {type: transformer, context: 24, width: 128, layers: 2, heads: 4}
//       audio: {type: ast, mel_bins: 64, frames: 240, patch: 16, width: 128, layers: 4, heads: 4}
//     joint: {layers: 1, over: [audio, image], heads: 4}   # CAV-MAE's shared layers (optional)
#include <algorithm>
#include "trainers/models.h"

namespace loom {

ModelSpec read_towers_model(const Config& c) {
  ModelSpec m;
  const std::vector<std::string> names = c.keys("model.towers");
  if (names.empty()) c.fail("model.towers", "expected a mapping of modality: {type: ..., ...} (e.g. image: {type: vit, ...})");
  for (const std::string& modality : names) {
    const std::string k = "model.towers." + modality;
    const std::string fallback = modality == "image" ? "vit" : modality == "audio" ? "ast" : modality == "text" ? "transformer" : "";
    m.towers.emplace_back(modality, read_tower(c, k, fallback, modality));
  }
  m.embed_dim = read_embed_dim(c);
  const bool mlp = c.choice("model.projection", {"linear", "mlp"}, "linear") == "mlp";
  TowerLayout::Joint joint;
  if (c.has("model.joint")) {
    joint.layers = c.i64("model.joint.layers", 1);
    if (joint.layers < 1) c.fail("model.joint.layers", "must be >= 1");
    joint.over = c.str_list("model.joint.over", {});
    if (joint.over.size() < 2) c.fail("model.joint.over", "name at least two towers, e.g. [audio, image]");
    int64_t width = 0;
    for (const std::string& o : joint.over) {
      const TowerSpec* t = m.tower(o);
      if (!t) c.fail("model.joint.over", str_cat("the model has no ", o, " tower (its towers: ", m.describe_towers(), ")"));
      if (t->input.kind != "image" && t->input.kind != "audio")
        c.fail("model.joint.over", str_cat("joint layers read patch tokens; the ", o, " tower reads ", t->input.kind));
      if (width != 0 && t->width != width)
        c.fail("model.joint.over", str_cat("the towers under joint layers must be of one width; ", o, " is ", t->width,
                                           " wide, the first ", width));
      width = t->width;
      if (std::count(joint.over.begin(), joint.over.end(), o) > 1) c.fail("model.joint.over", str_cat(o, " is named twice"));
    }
    joint.heads = c.i64("model.joint.heads", 4);
    if (joint.heads < 1 || width % joint.heads != 0)
      c.fail("model.joint.heads", str_cat("heads ", joint.heads, " does not divide the towers' width ", width));
    joint.mlp_ratio = c.f64("model.joint.mlp_ratio", 4.0);
    if (!(joint.mlp_ratio > 0)) c.fail("model.joint.mlp_ratio", "must be > 0");
    m.joint_over = joint.over;
  }
  m.make = [mlp, joint](const ModelSpec& s, const TowerContext& ctx, Generator& gen) -> std::shared_ptr<MultimodalModel> {
    TowerLayout l;
    l.embed_dim = s.embed_dim;
    l.joint = joint;
    for (const auto& [modality, spec] : s.towers) {
      const TowerSpec t = spec;  // a named copy: clang before 16 cannot capture a structured binding
      auto head = mlp ? std::function<TowerHead(int64_t, int64_t, Generator&)>(
                            [](int64_t in, int64_t out, Generator& g) { return projection_head(in, out, true, g); })
                      : linear_head;
      l.towers.push_back({modality, modality, [t, ctx](Generator& g) { return t.build(g, ctx); }, head});
    }
    for (const PairTemperature& p : s.pairs)
      if (p.learnable) l.scales.push_back({p.a, p.b, str_cat("logit_scale_", p.a, "_", p.b), p.init});
    return std::make_shared<MultimodalModel>(l, gen);
  };
  return m;
}

}  // namespace loom
