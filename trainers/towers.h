// The tower registry, keyed on a tower's `type`: how a recipe section (model.towers.image,
// model.vision, ...) becomes an Encoder (layers/transformer.h). One file per type under trainers/towers/
// (its config reader and builder) and one line in the registry (trainers/towers.cpp):
//   vit          ViT over images                       (towers/vit.cpp)
//   ast          AST-style ViT over log-mel spectrograms (towers/ast.cpp)
//   transformer  causal text transformer (CLIP's)      (towers/text.cpp)
//   bert         BERT text encoder                     (towers/text.cpp)
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>
#include "layers/audio.h"
#include "layers/transformer.h"
#include "trainers/config.h"

namespace loom {

// What the tokenizer fixes when the model is built (after the recipe is read).
struct TowerContext {
  int64_t vocab_size = 512, pad_id = 0, eot_id = -1;
};

struct TowerSpec {
  std::string type;     // vit | ast | transformer | bert | ...
  std::string key;      // the recipe section it was read from ("model.towers.audio"), for errors
  EncoderInput input;   // what it reads (input.kind is the batch key), known from the recipe
  int64_t width = 0;    // its pooled output
  bool overlapping_patches = false;  // patch tokens overlap (no per-patch reconstruction)
  int64_t grid_h = 0, grid_w = 0;    // a patch tower's token grid (0: not one)
  double patch_dropout = 0.0;        // model.<tower>.patch_dropout (vit, ast)
  std::function<std::shared_ptr<Encoder>(Generator&, const TowerContext&)> build;
};

// Reads the tower section at `key` (its `type` already chosen) and validates it, naming file, line and key.
using TowerReader = std::function<TowerSpec(const Config& c, const std::string& key)>;

// The section at `key` through its type's reader; without a `type` there, `default_type`. With
// `modality`, a type that reads something else is refused before its keys are read.
TowerSpec read_tower(const Config& c, const std::string& key, const std::string& default_type,
                     const std::string& modality = "");
std::vector<std::string> tower_types();
// Adds a type reading `kind` (image, audio, text, ...) at run time (a plugin, a test); the built-in
// ones are listed in trainers/towers.cpp.
void register_tower_type(const std::string& type, const std::string& kind, TowerReader read);

// The typed readers of the built-in types, for families whose layout needs the typed config (CLIP's
// Hugging Face import reads ViTConfig and TextConfig).
// <key>.checkpoint_activations: true (every block), an integer k (every k-th block) or false (0):
// the blocks whose activations are recomputed in backward instead of kept (autograd::checkpoint).
int64_t read_checkpoint_every(const Config& c, const std::string& key);
ViTConfig read_vit_config(const Config& c, const std::string& key);
AudioTransformerConfig read_ast_config(const Config& c, const std::string& key);
TextConfig read_text_config(const Config& c, const std::string& key);
// The text config with what the tokenizer fixes (vocabulary, padding and end-of-text ids).
TextConfig with_context(TextConfig t, const TowerContext& ctx);

TowerSpec vit_tower(const ViTConfig& v);
TowerSpec ast_tower(const AudioTransformerConfig& a);
TowerSpec text_tower(const TextConfig& t);

}  // namespace loom
