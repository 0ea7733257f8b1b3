// The model families, keyed on model.type: the root every task of a recipe works on is a
// MultimodalModel (layers/towers.h), towers keyed by modality. One file per family under
// trainers/models/ (its config, its recipe reader) and one line in the registry (trainers/models.cpp):
//   clip    image tower "visual" (ViT) + text tower "text", linear heads, logit_scale  (models/clip.cpp)
//   clap    audio tower "audio" (AST) + text tower "text", MLP heads, logit_scale     (models/clap.cpp)
//   vit     an image tower "visual" alone (MAE pretraining, linear probes)           (models/vit.cpp)
//   ast     an audio tower "audio" alone (AudioMAE)                                  (models/ast.cpp)
//   towers  the general form: model.towers.<modality> of any tower type, a head each into
//           model.embed_dim, a temperature per contrastive pair (ImageBind-style binding), optional
//           joint layers over several towers' tokens (model.joint, CAV-MAE) (models/towers.cpp)
// A recipe with model.towers and no model.type is of type towers. Tasks may add heads of their own.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>
#include "layers/towers.h"
#include "trainers/config.h"
#include "trainers/towers.h"

namespace loom {

// A pair of modalities a contrastive task contrasts, and its temperature.
struct PairTemperature {
  std::string a, b;
  double init = 0.07;     // the learnable temperature starts here (or stays, when fixed)
  bool learnable = true;  // false: temperature_fixed (no parameter)
};

struct ModelSpec;
// A frozen model a task may name (recipe section frozen.NAME: a loom checkpoint and the recipe that
// trained it), as tasks see it when the recipe is read: its towers and what its tasks were. It is
// built and loaded with the run (trainers/run.h), never trained, and kept out of the run's checkpoints.
struct FrozenModel {
  std::string key;         // "frozen.teacher", for errors
  std::string checkpoint;  // its directory (under --check it may be absent)
  std::shared_ptr<const ModelSpec> model;
  std::vector<std::string> task_types;    // of its recipe's stages
  std::map<std::string, int64_t> sizes;   // what its tasks fixed (vqkd: codebook_size, code_dim)
};

struct ModelSpec {
  std::string type;
  std::vector<std::pair<std::string, TowerSpec>> towers;  // by modality, in build order
  int64_t embed_dim = 0;                                   // the shared space the heads map to; 0: none
  // Set when the recipe is read, from its contrastive tasks: the pairs the model needs temperatures for.
  std::vector<PairTemperature> pairs;
  std::vector<std::string> joint_over;  // the towers under joint layers (model.joint.over); empty: none
  std::vector<std::string> fusion_over;  // what the model's fusion encoder reads (vlmo: text, image); empty: none
  std::map<std::string, FrozenModel> frozen;  // the recipe's frozen models by name (frozen.NAME)
  // The family's builder (the same seed gives the same weights).
  std::function<std::shared_ptr<MultimodalModel>(const ModelSpec&, const TowerContext&, Generator&)> make;

  std::shared_ptr<MultimodalModel> build(Generator& gen, const TowerContext& ctx = {}) const { return make(*this, ctx, gen); }
  bool has(const std::string& modality) const { return tower(modality) != nullptr; }
  const TowerSpec* tower(const std::string& modality) const;
  std::vector<std::string> modalities() const;
  bool has_text() const { return has("text"); }
  std::string describe_towers() const;  // "image (vit), text (transformer)"
  // The pair's temperature as the tasks set it (a, b in either order); the default when none did.
  PairTemperature pair(const std::string& a, const std::string& b) const;
};

// Reads model.* through the family's reader (vocab size, padding and end-of-text ids come from the
// tokenizer later, through TowerContext; temperatures from the contrastive tasks).
using ModelReader = std::function<ModelSpec(const Config& c)>;
ModelSpec parse_model(const Config& c);
std::vector<std::string> model_types();
// Adds a family at run time (a plugin, a test); the built-in ones are listed in trainers/models.cpp.
void register_model_family(const std::string& type, ModelReader read);

// The model.embed_dim a family with heads reads (default 64).
int64_t read_embed_dim(const Config& c);

}  // namespace loom
