// Run assembly: a recipe made into what both the Trainer and the commands around it start from — its
// model, tokenizer and one task per stage, the device, precision and kernels it computes with, and its
// evaluation. Below the trainer and the Hugging Face import/export, above the recipe.
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include "data/text_tokenizer.h"
#include "trainers/recipe.h"

namespace loom {

// The model of a recipe, its tokenizer (when a task needs text) and one task per stage. Tasks are
// built for every stage up front, so the model is whole (heads included) from the first step and
// every checkpoint holds the same keys.
struct Run {
  std::shared_ptr<MultimodalModel> model;
  std::unique_ptr<data::TextTokenizer> tokenizer;
  std::vector<std::unique_ptr<Task>> tasks;  // one per stage
  // The recipe's frozen models (frozen.NAME), built from their recipes, loaded from their checkpoints
  // (random weights stand in where a checkpoint is absent: --check), every parameter frozen, in eval mode.
  std::map<std::string, std::shared_ptr<MultimodalModel>> frozen;
  // Builds the model from the seed and the tasks; `load_init` (init_from) runs between the model and
  // the tasks for a loom checkpoint (so tasks' new heads are not "missing" keys) and after the tasks
  // for a Hugging Face one (BertForMaskedLM's head then lands in the mlm task's). Without a tokenizer,
  // text towers get the recipe's vocabulary size and loom's BPE ids.
  static Run build(const Recipe& r, std::unique_ptr<data::TextTokenizer> tokenizer,
                   const std::function<void(Module&)>& load_init = {}, distributed::Communicator* comm = nullptr);
};

// The device a recipe trains on (train.device), checked against this build and machine; a failure
// names the recipe key through `fail`. With several processes on a node, local rank r takes GPU r.
Device training_device(const Recipe& r, int local_rank, const std::function<void(const std::string&)>& fail);
// train.precision: bf16 computes GEMMs and attention in bf16 under autocast (core/autocast.h).
std::optional<DType> autocast_of(const Recipe& r);
// kernels.attention and kernels.gemm: which CUDA kernels run bf16 attention and GEMMs (process-wide).
void use_recipe_kernels(const Recipe& r);
// The recipe's tokenizer for a new run: loom's BPE trained on the captions, or the named file.
std::unique_ptr<data::TextTokenizer> make_tokenizer(const Recipe& r);

// Stage `stage`'s evaluation (its task's, then the probe of eval.probe) of the run's model as it is;
// pictures go under run_dir (empty: none), named by step, and are listed (tag, path) in `pictures`.
Metrics evaluate_stage(Run& run, const Recipe& r, size_t stage, const std::string& run_dir, int64_t step,
                       std::vector<std::pair<std::string, std::string>>* pictures = nullptr);
// The linear probe / k-NN of eval.probe on the recipe's patch tower (eval mode, restored after).
Metrics probe_model(MultimodalModel& model, const Recipe& r);
// Evaluation as in training (the last stage's task, then the probe) of a checkpoint directory, or of
// the model initialised from the seed when `checkpoint` is empty (a baseline).
Metrics evaluate_recipe(const Recipe& r, const std::string& checkpoint);

// Every stage's freeze and train_only pattern and every optim.groups pattern matches some parameter
// of `model`, or an error naming the recipe key.
void check_freeze_patterns(const Module& model, const Recipe& r, const Config& c);

}  // namespace loom
