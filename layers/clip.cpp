#include "layers/clip.h"

namespace loom {

Clip::Clip(const ClipConfig& c, Generator& gen) : config(c) {
  LOOM_CHECK(c.embed_dim > 0, "Clip: embed_dim must be positive, got ", c.embed_dim);
  LOOM_CHECK(c.init_temperature > 0, "Clip: init_temperature must be positive, got ", c.init_temperature);
  visual = std::make_shared<ViT>(c.vision, gen);
  register_module("visual", visual);
  text = make_text_encoder(c.text, gen);
  register_module("text", text);
  visual_proj = std::make_shared<Linear>(c.vision.width, c.embed_dim, false, gen, std::pow(double(c.vision.width), -0.5));
  register_module("visual_proj", visual_proj);
  text_proj = std::make_shared<Linear>(c.text.width, c.embed_dim, false, gen, std::pow(double(c.text.width), -0.5));
  register_module("text_proj", text_proj);
  logit_scale = register_parameter("logit_scale", Tensor::scalar(std::log(1.0 / c.init_temperature)));
}

Tensor Clip::encode_image(const Tensor& images, Generator* drop_gen) const {
  return ops::l2_normalize(visual_proj->forward(visual->forward(images, drop_gen)), -1);
}

Tensor Clip::encode_text(const Tensor& tokens, int64_t eot_id) const {
  return ops::l2_normalize(text_proj->forward(text->forward(tokens, eot_id)), -1);
}

}  // namespace loom
