#include "layers/clap.h"

namespace loom {
namespace {

TowerLayout clap_layout(const ClapConfig& c) {
  LOOM_CHECK(c.embed_dim > 0, "Clap: embed_dim must be positive, got ", c.embed_dim);
  LOOM_CHECK(c.init_temperature > 0, "Clap: init_temperature must be positive, got ", c.init_temperature);
  LOOM_CHECK(c.projection == "mlp" || c.projection == "linear", "Clap: projection must be mlp or linear, got ", c.projection);
  const bool mlp = c.projection == "mlp";
  auto head = [mlp](int64_t in, int64_t out, Generator& g) { return projection_head(in, out, mlp, g); };
  TowerLayout l;
  l.embed_dim = c.embed_dim;
  l.towers.push_back({"audio", "audio", [c](Generator& g) { return std::make_shared<AudioTransformer>(c.audio, g); }, head});
  l.towers.push_back({"text", "text", [c](Generator& g) { return make_text_encoder(c.text, g); }, head});
  l.scales.push_back({"audio", "text", "logit_scale", c.init_temperature});
  return l;
}

}  // namespace

Clap::Clap(const ClapConfig& c, Generator& gen) : MultimodalModel(clap_layout(c), gen), config(c) {
  audio = std::dynamic_pointer_cast<AudioTransformer>(tower_ptr("audio"));
  text = std::dynamic_pointer_cast<TextEncoder>(tower_ptr("text"));
  audio_proj = std::dynamic_pointer_cast<Projection>(head_ptr("audio"));
  text_proj = std::dynamic_pointer_cast<Projection>(head_ptr("text"));
  logit_scale = pair_logit_scale("audio", "text");
}

Tensor Clap::encode_audio(const Tensor& spec, Generator* drop_gen) const {
  return ops::l2_normalize(audio_proj->forward(audio->forward(spec, drop_gen)), -1);
}

Tensor Clap::encode_text(const Tensor& tokens, int64_t eot_id) const {
  return ops::l2_normalize(text_proj->forward(text->forward(tokens, eot_id)), -1);
}

}  // namespace loom
