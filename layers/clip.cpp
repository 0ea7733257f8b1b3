#include "layers/clip.h"

namespace loom {
namespace {

TowerLayout clip_layout(const ClipConfig& c) {
  LOOM_CHECK(c.embed_dim > 0, "Clip: embed_dim must be positive, got ", c.embed_dim);
  LOOM_CHECK(c.init_temperature > 0, "Clip: init_temperature must be positive, got ", c.init_temperature);
  TowerLayout l;
  l.embed_dim = c.embed_dim;
  l.towers.push_back({"image", "visual", [c](Generator& g) { return std::make_shared<ViT>(c.vision, g); }, linear_head});
  l.towers.push_back({"text", "text", [c](Generator& g) { return make_text_encoder(c.text, g); }, linear_head});
  l.scales.push_back({"image", "text", "logit_scale", c.init_temperature});
  return l;
}

}  // namespace

Clip::Clip(const ClipConfig& c, Generator& gen) : MultimodalModel(clip_layout(c), gen), config(c) {
  visual = std::dynamic_pointer_cast<ViT>(tower_ptr("image"));
  text = std::dynamic_pointer_cast<TextEncoder>(tower_ptr("text"));
  visual_proj = std::dynamic_pointer_cast<Linear>(head_ptr("image"));
  text_proj = std::dynamic_pointer_cast<Linear>(head_ptr("text"));
  logit_scale = pair_logit_scale("image", "text");
}

Tensor Clip::encode_image(const Tensor& images, Generator* drop_gen) const {
  return ops::l2_normalize(visual_proj->forward(visual->forward(images, drop_gen)), -1);
}

Tensor Clip::encode_text(const Tensor& tokens, int64_t eot_id) const {
  return ops::l2_normalize(text_proj->forward(text->forward(tokens, eot_id)), -1);
}

}  // namespace loom
