// model.type: ast — an audio tower model.audio alone, child "audio", no head (AudioMAE, probes).
#include "trainers/models.h"

namespace loom {

ModelSpec single_tower_model(const std::string& modality, const std::string& name, TowerSpec tower);  // models/vit.cpp

ModelSpec read_ast_model(const Config& c) {
  c.choice("model.audio.type", {"ast"}, "ast");
  return single_tower_model("audio", "audio", ast_tower(read_ast_config(c, "model.audio")));
}

}  // namespace loom
