// The task layer: a model family is a task plus a model, never a change to the loop. A task declares
// the batch keys it needs, turns a batch into named losses, runs its after-step work, evaluates
// itself and saves its own state; the Trainer (trainers/trainer.h) knows none of that.
//
// Tasks are made in two steps, as tiny-cuda-nn builds objects from JSON with a type field:
// parse_task() reads and validates the recipe section when the recipe is read (before any work),
// and returns a TaskSpec whose `build` makes the task once the model exists.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include "data/loader.h"
#include "data/text_tokenizer.h"
#include "layers/audio.h"
#include "layers/module.h"
#include "trainers/config.h"

namespace loom {
namespace distributed { class Communicator; }

using Metrics = std::map<std::string, double>;

struct DataSpec {
  std::string name;      // the section under data: ("train", "eval", "images", ...)
  std::string manifest;  // the JSONL path, or the shards' pattern (data.NAME.shards)
  bool shards = false;   // WebDataset tar shards (data/webdataset.h) rather than a JSONL manifest
  std::shared_ptr<const data::Manifest> rows;  // read when the recipe is read
  bool present = true;  // false only under loom train --check, for a manifest not on this machine (rows empty)
  int64_t batch_size = 128;
  int workers = 2;
  std::string on_error = "skip";  // skip | fail
  data::ImageTransform transform;
  data::AudioConfig audio;  // data.NAME.audio (defaults when absent)
  // The batch keys this data can fill: "image", "audio", "text" (rows have them), "label"; all of
  // them when the manifest is not present (so --check validates the rest of the recipe).
  std::vector<std::string> provides() const;
};

// One weighted part of a task's loss; the step's loss is the weighted sum, each part is logged
// unweighted as train/<name>.
struct LossPart {
  std::string name;
  Tensor value;
  double weight = 1.0;
};

// What a task is built from.
struct TaskEnv {
  Module& model;                        // the root model; a task may register heads on it
  const data::TextTokenizer* tokenizer;  // null when no task of the recipe needs text
  uint64_t seed;
  std::string stage;                    // the stage's name
  // The processes of a data-parallel run (null: one process). A task whose loss couples the
  // examples of a batch (contrastive negatives) gathers across them; per-example losses need nothing.
  distributed::Communicator* comm = nullptr;
};

// What a task evaluates on.
struct EvalEnv {
  const DataSpec* data = nullptr;  // the stage's evaluation data; null when the recipe has none
  const data::TextTokenizer* tokenizer = nullptr;
  std::string run_dir;             // where pictures go (eval/...); empty: write none
  int64_t step = 0;
  int64_t max_samples = 0;         // 0: all
};

struct ContrastiveTowers;  // trainers/eval/retrieval.h

class Task {
 public:
  virtual ~Task() = default;
  // A two-tower task's encoders (loom embed, loom retrieve); null for other tasks.
  virtual const ContrastiveTowers* towers() const { return nullptr; }
  // A batch smaller than this (on_error: skip can shrink one) is replaced by the next.
  virtual int64_t min_batch() const { return 1; }
  // Loader settings that depend on the model: channels, image size, text context.
  virtual void configure(data::LoaderConfig& c) const = 0;
  virtual std::vector<LossPart> forward(const data::Batch& batch, Generator& drop_gen) = 0;
  virtual void after_step() {}                       // e.g. the logit-scale clamp
  virtual Metrics train_metrics() const { return {}; }  // logged with the loss (train/logit_scale)
  virtual bool evaluates() const { return false; }   // evaluate() has something to report
  virtual Metrics evaluate(const EvalEnv& env) = 0;
  virtual nlohmann::json state() const { return nlohmann::json::object(); }  // e.g. RNG streams
  virtual void load_state(const nlohmann::json& state, const std::string& source) { (void)state, (void)source; }
};

struct TaskSpec {
  std::string type;
  bool needs_text = false;         // the run must have a tokenizer
  bool needs_eval_data = false;    // its evaluation settings ask for data (zero-shot, retrieval)
  double temperature_init = 0.0;   // contrastive: the model's learnable temperature starts here
  std::vector<std::string> needs;  // the batch keys the task reads (checked against the data up front)
  std::function<std::unique_ptr<Task>(TaskEnv&)> build;
};

// Loader settings for `data` (training: shuffled, full batches, endless), before the task's configure().
data::LoaderConfig loader_config(const DataSpec& data, uint64_t seed, bool train);

// Reads the task section at `prefix` ("task", "stages.1.task") through its type's factory.
// Without a type there, `default_type` (empty: the type is required).
TaskSpec parse_task(const Config& c, const std::string& prefix, const std::string& default_type = "");
std::vector<std::string> task_types();

// A tower of the root model by child name, as type M; throws loom::Error naming the task and what the
// model lacks (e.g. "task mae needs an image tower 'visual' (a ViT); model.type text has none").
template <class M>
M& tower(Module& model, const std::string& name, const std::string& task, const char* what) {
  auto m = std::dynamic_pointer_cast<M>(model.child(name));
  if (!m) throw Error(str_cat("task ", task, " needs ", what, " '", name, "', and this model has none"));
  return *m;
}

// The tower a task or a probe reads inputs with: the model's "visual" (a ViT over images, batch key
// "image") or its "audio" (an AudioTransformer over spectrograms, batch key "audio").
struct InputTower {
  ViT* vit = nullptr;
  std::string key;  // "image" | "audio"
  // The loader settings the tower's input shape fixes: channels and image size, or mel bins and frames.
  void configure(data::LoaderConfig& c) const;
};
// Throws loom::Error naming `task` when the model has neither tower.
InputTower input_tower(Module& model, const std::string& task);

}  // namespace loom
