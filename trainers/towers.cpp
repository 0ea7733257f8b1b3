// The tower registry (trainers/towers.h): one line per built-in type.
#include "trainers/towers.h"

namespace loom {

TowerSpec read_vit(const Config& c, const std::string& key);          // towers/vit.cpp
TowerSpec read_ast(const Config& c, const std::string& key);          // towers/ast.cpp
TowerSpec read_transformer(const Config& c, const std::string& key);  // towers/text.cpp
TowerSpec read_bert(const Config& c, const std::string& key);         // towers/text.cpp

namespace {
struct Entry {
  std::string type, kind;  // kind: what it reads
  TowerReader read;
};
std::vector<Entry>& registry() {
  static std::vector<Entry> r = {
      {"vit", "image", read_vit},
      {"ast", "audio", read_ast},
      {"transformer", "text", read_transformer},
      {"bert", "text", read_bert},
  };
  return r;
}
}  // namespace

int64_t read_checkpoint_every(const Config& c, const std::string& key) {
  const std::string k = key + ".checkpoint_activations";
  if (!c.has(k)) return 0;
  const std::string v = c.str(k);
  if (v.empty() || v.find_first_not_of("+-0123456789") != std::string::npos) return c.boolean(k, false) ? 1 : 0;
  const int64_t every = c.i64(k, 0);
  if (every < 1) c.fail(k, str_cat("expected true, false or every how many blocks (>= 1), got ", v));
  return every;
}

std::vector<std::string> tower_types() {
  std::vector<std::string> out;
  for (const Entry& e : registry()) out.push_back(e.type);
  return out;
}

void register_tower_type(const std::string& type, const std::string& kind, TowerReader read) {
  for (const Entry& e : registry())
    LOOM_CHECK(e.type != type, "tower type '", type, "' is registered twice");
  registry().push_back({type, kind, std::move(read)});
}

TowerSpec read_tower(const Config& c, const std::string& key, const std::string& default_type, const std::string& modality) {
  if (default_type.empty() && !c.has(key + ".type"))
    c.fail(key + ".type", "required key is missing (a tower type)" + c.near_miss(key + ".type"));
  const std::string type = c.choice(key + ".type", tower_types(), default_type);
  for (const Entry& e : registry())
    if (e.type == type) {
      if (!modality.empty() && e.kind != modality)
        c.fail(key + ".type", str_cat("a ", type, " tower reads ", e.kind, ", and it is given as the ", modality,
                                      " tower (the key under model.towers names what the tower reads)"));
      TowerSpec s = e.read(c, key);
      s.type = type;
      s.key = key;
      LOOM_CHECK(s.input.kind == e.kind, "tower type ", type, " is registered as reading ", e.kind, ", and its reader says ",
                 s.input.kind);
      return s;
    }
  c.fail(key + ".type", "unknown tower type");  // unreachable: choice() checked it
}

}  // namespace loom
