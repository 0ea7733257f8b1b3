// model.type: clap — audio tower model.audio (ast), text tower model.text, MLP (or linear) heads
// into model.embed_dim, one learnable temperature (layers/clap.h).
#include "layers/clap.h"
#include "trainers/models.h"

namespace loom {

ModelSpec read_clap_model(const Config& c) {
  ClapConfig clap;
  c.choice("model.audio.type", {"ast"}, "ast");
  clap.audio = read_ast_config(c, "model.audio");
  clap.text = read_text_config(c, "model.text");
  clap.embed_dim = read_embed_dim(c);
  clap.projection = c.choice("model.projection", {"mlp", "linear"}, "mlp");
  ModelSpec m;
  m.towers = {{"audio", ast_tower(clap.audio)}, {"text", text_tower(clap.text)}};
  m.towers[0].second.key = "model.audio";
  m.towers[1].second.key = "model.text";
  m.embed_dim = clap.embed_dim;
  m.make = [clap](const ModelSpec& s, const TowerContext& ctx, Generator& gen) -> std::shared_ptr<MultimodalModel> {
    ClapConfig k = clap;
    k.text = with_context(k.text, ctx);
    k.init_temperature = s.pair("audio", "text").init;
    return std::make_shared<Clap>(k, gen);
  };
  return m;
}

}  // namespace loom
