// The model family registry (trainers/models.h): one line per built-in family.
#include "trainers/models.h"

namespace loom {

ModelSpec read_clip_model(const Config& c);    // models/clip.cpp
ModelSpec read_clap_model(const Config& c);    // models/clap.cpp
ModelSpec read_vit_model(const Config& c);     // models/vit.cpp
ModelSpec read_ast_model(const Config& c);     // models/ast.cpp
ModelSpec read_towers_model(const Config& c);  // models/towers.cpp
ModelSpec read_vlmo_model(const Config& c);    // models/vlmo.cpp

namespace {
std::vector<std::pair<std::string, ModelReader>>& registry() {
  static std::vector<std::pair<std::string, ModelReader>> r = {
      {"clip", read_clip_model}, {"clap", read_clap_model}, {"vit", read_vit_model},
      {"ast", read_ast_model},   {"towers", read_towers_model}, {"vlmo", read_vlmo_model},
  };
  return r;
}
}  // namespace

std::vector<std::string> model_types() {
  std::vector<std::string> out;
  for (const auto& [name, _] : registry()) out.push_back(name);
  return out;
}

void register_model_family(const std::string& type, ModelReader read) {
  for (const auto& [name, _] : registry())
    LOOM_CHECK(name != type, "model family '", type, "' is registered twice");
  registry().emplace_back(type, std::move(read));
}

ModelSpec parse_model(const Config& c) {
  const std::string type = c.choice("model.type", model_types(), c.has("model.towers") ? "towers" : "clip");
  if (c.has("model.towers") && type != "towers")
    c.fail("model.towers", str_cat("model.type ", type, " lays out its own towers; model.towers is the general form "
                                   "(drop model.type, or use type towers)"));
  for (const auto& [name, read] : registry())
    if (name == type) {
      ModelSpec m = read(c);
      m.type = type;
      return m;
    }
  c.fail("model.type", "unknown model type");  // unreachable: choice() checked it
}

int64_t read_embed_dim(const Config& c) {
  const int64_t e = c.i64("model.embed_dim", 64);
  if (e < 1) c.fail("model.embed_dim", "must be >= 1");
  return e;
}

const TowerSpec* ModelSpec::tower(const std::string& m) const {
  for (const auto& [modality, t] : towers)
    if (modality == m) return &t;
  return nullptr;
}

std::vector<std::string> ModelSpec::modalities() const {
  std::vector<std::string> out;
  for (const auto& [m, _] : towers) out.push_back(m);
  return out;
}

std::string ModelSpec::describe_towers() const {
  std::string o;
  for (const auto& [m, t] : towers) o += str_cat(o.empty() ? "" : ", ", m, " (", t.type, ")");
  return o.empty() ? std::string("none") : o;
}

PairTemperature ModelSpec::pair(const std::string& a, const std::string& b) const {
  for (const PairTemperature& p : pairs)
    if ((p.a == a && p.b == b) || (p.a == b && p.b == a)) return p;
  return {a, b, 0.07, true};
}

}  // namespace loom
