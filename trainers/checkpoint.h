// Checkpoints: a directory step_NNNNNNNN/ holding model.safetensors (named by module path),
// optimizer.safetensors, tokenizer.json (when the run has one) and trainer.json (step, data position,
// RNG and task state, the recipe). Written to a temporary directory, synced and renamed, so a crash
// never leaves a torn one; `latest` is a symlink replaced atomically.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include "core/safetensors.h"
#include "data/text_tokenizer.h"
#include "layers/module.h"
#include "trainers/recipe.h"

namespace loom {

std::string checkpoint_dir(const std::string& run_dir, int64_t step);  // run_dir/checkpoints/step_NNNNNNNN
int64_t step_of_dir(const std::string& path);                          // "step_00000600" -> 600, else -1

// Writes the checkpoint of `step` and points checkpoints/latest at it.
void write_checkpoint(const std::string& run_dir, int64_t step, const TensorMap& model, const TensorMap& optimizer,
                      const data::TextTokenizer* tokenizer, const nlohmann::json& state);
// Keeps the newest `keep` step directories (and whatever latest points at); keep 0 keeps all.
void prune_checkpoints(const std::string& run_dir, int64_t keep);
// Removes step directories after `step` (lost with an interruption).
void remove_checkpoints_after(const std::string& run_dir, int64_t step);

// Model weights from a checkpoint directory or .safetensors file, with key remapping; prints what
// was loaded, missing and unexpected.
LoadReport load_weights(Module& model, const InitFrom& from);

}  // namespace loom
