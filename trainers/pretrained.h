// Pretrained weights in and out in Hugging Face's layout: a BertModel onto loom's Bert text tower
// (hf-bert) and a CLIPModel onto a whole loom CLIP (hf-clip), and back. One table of rules per format
// (trainers/pretrained.cpp) serves both directions: Hugging Face's split query/key/value become
// loom's fused qkv, the patch convolution becomes the patch projection, and the rest is renaming.
#pragma once
#include <string>
#include <nlohmann/json.hpp>
#include "core/safetensors.h"
#include "data/text_tokenizer.h"
#include "layers/module.h"
#include "trainers/recipe.h"

namespace loom {

// init_from as its format says. loom: load_weights (own names). hf-bert / hf-clip: `from.path` is a
// directory with config.json and model.safetensors (or the .safetensors file, config.json beside it).
// Before anything is copied it checks config.json against the weights (a loom::Error naming
// config.json, the setting and the tensor), config.json against the recipe's model (heads, activation,
// norm epsilon, sizes: naming both), and every tensor's shape (naming the first mismatched Hugging
// Face key, the loom parameter and both shapes). Strict: a missing or unexpected key stops the load;
// keys a task does not use (BERT's MLM head "cls.*", an unused pooler, position_ids) are only listed.
LoadReport load_pretrained(Module& model, const InitFrom& from);

struct HfCheckpoint {
  TensorMap tensors;      // Hugging Face names
  nlohmann::json config;  // config.json as transformers reads it
};
// The model's weights under Hugging Face's names, with the config.json that builds the same
// architecture in transformers. hf-bert: the model's text tower (text.type bert); hf-clip: a CLIP
// in OpenAI's layout (ln_pre, no patch bias, learned positions, no LayerScale). loom::Error naming
// what cannot be expressed otherwise.
// `tok` (may be null) gives the special token ids config.json records.
HfCheckpoint to_hf(const Module& model, const std::string& format, const data::TextTokenizer* tok);
// Writes OUT_DIR/model.safetensors and OUT_DIR/config.json (creating the directory), and the
// tokenizer as OUT_DIR/tokenizer.json when it is a Hugging Face one.
void export_hf(const Module& model, const std::string& format, const data::TextTokenizer* tok, const std::string& out_dir);

// `loom export`: the model of a loom checkpoint directory (its recipe: `recipe`, or the run's
// recipe.yaml two levels up, as runs/NAME/checkpoints/step_N sits) written by export_hf.
void export_checkpoint(const std::string& checkpoint, const std::string& recipe, const std::string& format,
                       const std::string& out_dir);

}  // namespace loom
