// model.type: clip — image tower model.vision (vit), text tower model.text, linear heads into
// model.embed_dim, one learnable temperature (layers/clip.h; hf-clip imports into it).
#include "layers/clip.h"
#include "trainers/models.h"

namespace loom {

ModelSpec read_clip_model(const Config& c) {
  ClipConfig clip;
  c.choice("model.vision.type", {"vit"}, "vit");
  clip.vision = read_vit_config(c, "model.vision");
  clip.text = read_text_config(c, "model.text");
  clip.embed_dim = read_embed_dim(c);
  ModelSpec m;
  m.towers = {{"image", vit_tower(clip.vision)}, {"text", text_tower(clip.text)}};
  m.towers[0].second.key = "model.vision";
  m.towers[1].second.key = "model.text";
  m.embed_dim = clip.embed_dim;
  m.make = [clip](const ModelSpec& s, const TowerContext& ctx, Generator& gen) -> std::shared_ptr<MultimodalModel> {
    ClipConfig k = clip;
    k.text = with_context(k.text, ctx);
    k.init_temperature = s.pair("image", "text").init;
    return std::make_shared<Clip>(k, gen);
  };
  return m;
}

}  // namespace loom
