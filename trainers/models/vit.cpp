// model.type: vit — an image tower model.vision alone, child "visual", no head (MAE, probes).
#include "trainers/models.h"

namespace loom {

// One tower under `name`, no head: the families of a single encoder.
ModelSpec single_tower_model(const std::string& modality, const std::string& name, TowerSpec tower) {
  ModelSpec m;
  tower.key = "model." + std::string(modality == "image" ? "vision" : modality);
  m.towers = {{modality, tower}};
  m.make = [modality, name](const ModelSpec& s, const TowerContext& ctx, Generator& gen) -> std::shared_ptr<MultimodalModel> {
    TowerLayout l;
    const TowerSpec t = s.towers.front().second;
    l.towers.push_back({modality, name, [t, ctx](Generator& g) { return t.build(g, ctx); }, nullptr});
    return std::make_shared<MultimodalModel>(l, gen);
  };
  return m;
}

ModelSpec read_vit_model(const Config& c) {
  c.choice("model.vision.type", {"vit"}, "vit");
  return single_tower_model("image", "visual", vit_tower(read_vit_config(c, "model.vision")));
}

}  // namespace loom
