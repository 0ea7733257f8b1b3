#include "layers/clap.h"

namespace loom {

Projection::Projection(int64_t in, int64_t out, bool mlp, Generator& gen) {
  // Linear: CLIP's bias-free map, std in^-0.5. MLP: PyTorch's default Linear init, as LAION-CLAP's.
  fc1 = mlp ? std::make_shared<Linear>(in, out, true, gen) : std::make_shared<Linear>(in, out, false, gen, std::pow(double(in), -0.5));
  register_module("fc1", fc1);
  if (mlp) {
    fc2 = std::make_shared<Linear>(out, out, true, gen);
    register_module("fc2", fc2);
  }
}

Tensor Projection::forward(const Tensor& x) const {
  if (!fc2) return fc1->forward(x);
  return fc2->forward(ops::relu(fc1->forward(x)));
}

Clap::Clap(const ClapConfig& c, Generator& gen) : config(c) {
  LOOM_CHECK(c.embed_dim > 0, "Clap: embed_dim must be positive, got ", c.embed_dim);
  LOOM_CHECK(c.init_temperature > 0, "Clap: init_temperature must be positive, got ", c.init_temperature);
  LOOM_CHECK(c.projection == "mlp" || c.projection == "linear", "Clap: projection must be mlp or linear, got ", c.projection);
  audio = std::make_shared<AudioTransformer>(c.audio, gen);
  register_module("audio", audio);
  text = make_text_encoder(c.text, gen);
  register_module("text", text);
  audio_proj = std::make_shared<Projection>(c.audio.width, c.embed_dim, c.projection == "mlp", gen);
  register_module("audio_proj", audio_proj);
  text_proj = std::make_shared<Projection>(c.text.width, c.embed_dim, c.projection == "mlp", gen);
  register_module("text_proj", text_proj);
  logit_scale = register_parameter("logit_scale", Tensor::scalar(std::log(1.0 / c.init_temperature)));
}

Tensor Clap::encode_audio(const Tensor& spec, Generator* drop_gen) const {
  return ops::l2_normalize(audio_proj->forward(audio->forward(spec, drop_gen)), -1);
}

Tensor Clap::encode_text(const Tensor& tokens, int64_t eot_id) const {
  return ops::l2_normalize(text_proj->forward(text->forward(tokens, eot_id)), -1);
}

}  // namespace loom
