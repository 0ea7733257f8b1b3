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
#include "trainers/data_spec.h"
#include "data/text_tokenizer.h"
#include "layers/audio.h"
#include "layers/towers.h"
#include "trainers/config.h"
#include "trainers/models.h"

namespace loom {
namespace distributed { class Communicator; }

// One weighted part of a task's loss; the step's loss is the weighted sum, each part is logged
// unweighted as train/<name>.
struct LossPart {
  std::string name;
  Tensor value;
  double weight = 1.0;
};

// What a task is built from.
struct TaskEnv {
  MultimodalModel& model;               // the root model (towers by modality); a task may register heads on it
  const data::TextTokenizer* tokenizer;  // null when no task of the recipe needs text
  uint64_t seed;
  std::string stage;                    // the stage's name
  // The processes of a data-parallel run (null: one process). A task whose loss couples the
  // examples of a batch (contrastive negatives) gathers across them; per-example losses need nothing.
  distributed::Communicator* comm = nullptr;
  // The recipe's frozen models by name (frozen.NAME), built and loaded, on the model's device once
  // training starts; a task reads them, never trains them.
  const std::map<std::string, std::shared_ptr<MultimodalModel>>* frozen = nullptr;
};

// What a task evaluates on.
struct EvalEnv {
  const DataSpec* data = nullptr;  // the stage's evaluation data; null when the recipe has none
  const data::TextTokenizer* tokenizer = nullptr;
  std::string run_dir;             // where pictures go (eval/...); empty: write none
  int64_t step = 0;
  int64_t max_samples = 0;         // 0: all
  // Where a task lists the pictures it wrote (tag, PNG path), for TensorBoard; null: nobody asks.
  std::vector<std::pair<std::string, std::string>>* pictures = nullptr;
};

struct ContrastiveTowers;  // trainers/eval/retrieval.h

// What a task knows of the step it computes (for schedules, EMA teachers, ratios), and what the tasks
// of one stage share within a micro-batch: a task that computes something another may reuse (encoded
// tokens) puts it in `shared` under a name both agree on.
struct StepContext {
  int64_t step = 0;         // the global step, from 0
  int64_t stage_step = 0;   // the step within the stage, from 0
  int64_t stage_steps = 1;  // the stage's length
  double progress() const { return double(stage_step) / double(std::max<int64_t>(1, stage_steps)); }  // in [0, 1)
  std::map<std::string, Tensor> shared;  // cleared before every micro-batch
};

class Task {
 public:
  virtual ~Task() = default;
  // A contrastive task's towers (loom embed, loom retrieve); null for other tasks.
  virtual const ContrastiveTowers* towers() const { return nullptr; }
  // A batch smaller than this (on_error: skip can shrink one) is replaced by the next.
  virtual int64_t min_batch() const { return 1; }
  // Loader settings that depend on the model: channels, image size, text context.
  virtual void configure(data::LoaderConfig& c) const = 0;
  virtual std::vector<LossPart> forward(const data::Batch& batch, Generator& drop_gen, StepContext& step) = 0;
  // GradCache (train.grad_cache; TaskSpec::caches_features): forward in two halves, so that the loss
  // can see every micro-batch of an accumulated step. features() encodes one micro-batch (with its
  // graph when grad mode is on); loss_of_features() is forward's loss over the micro-batches' features
  // (in order, each a leaf the trainer made) and their batches.
  using Features = std::map<std::string, Tensor>;
  virtual Features features(const data::Batch& batch, Generator& drop_gen) {
    (void)batch, (void)drop_gen;
    throw Error("this task cannot cache features (train.grad_cache)");
  }
  virtual std::vector<LossPart> loss_of_features(const std::vector<Features>& feats, const std::vector<data::Batch>& batches) {
    (void)feats, (void)batches;
    throw Error("this task cannot cache features (train.grad_cache)");
  }
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
  bool needs_mask_token = false;   // ... whose vocabulary holds a mask token (masked language modelling)
  bool needs_eval_data = false;    // its evaluation settings ask for data (zero-shot, retrieval)
  bool caches_features = false;    // implements Task::features / loss_of_features (train.grad_cache)
  std::vector<PairTemperature> pairs;  // contrastive: the pairs whose temperatures the model holds
  std::vector<std::string> needs;  // the batch keys the task reads (checked against the data up front)
  // With several data sources in a stage: the sets of keys any one of which lets a batch serve the
  // task (contrastive: each pair's two modalities); empty: `needs`, all of them.
  std::vector<std::vector<std::string>> serves;
  // Beside serves (same length, or empty): the stage's sources each entry is limited to (a task's
  // `data:` in a tasks list); an empty entry: any source.
  std::vector<std::vector<std::string>> serves_from;
  std::map<std::string, int64_t> sizes;  // what the task fixes that another recipe may read (vqkd: codebook_size)
  std::function<std::unique_ptr<Task>(TaskEnv&)> build;
};

// A generator's place in a task's checkpoint state, {key: {"seed", "offset"}}, so that a resumed task
// draws what it would have drawn; loading a malformed entry is a loom::Error "<source>: <task> task
// state: ...".
nlohmann::json generator_state(const std::string& key, const Generator& g);
void load_generator_state(Generator& g, const nlohmann::json& state, const std::string& key, const std::string& source,
                          const std::string& task);

// The frozen model a task names at `key` (frozen.NAME of the recipe): a ConfigError naming the key and
// the recipe's frozen models when there is none of that name.
const FrozenModel& named_frozen(const Config& c, const std::string& key, const ModelSpec& model);
// At run time: the built frozen model of that name (loom::Error naming `who` when absent).
MultimodalModel& frozen_model(const TaskEnv& env, const std::string& name, const std::string& who);

// Reads the task section at `prefix` ("task", "stages.1.task") through its type's factory, checked
// against the model's towers. Without a type there, `default_type` (empty: the type is required).
TaskSpec parse_task(const Config& c, const std::string& prefix, const ModelSpec& model, const std::string& default_type = "");
// Several weighted tasks in one stage (`tasks: [{type: mae, ...}, {type: contrastive, weight: 0.01, ...}]`
// at `prefix`): one task whose losses are every task's parts, each times its task's `weight`, for the
// tasks the batch serves (a stage's sources may each serve some); they share the step's StepContext.
// Type "mae+contrastive" (tasks/multi.cpp).
TaskSpec parse_tasks(const Config& c, const std::string& prefix, const ModelSpec& model);
std::vector<std::string> task_types();

// The one line a task's build prints when it registered `module` (`parameters` > 0) on the model:
// "stage S: task T added M to the model (N parameters, newly initialised)"; nothing otherwise.
void report_added(const TaskEnv& env, const std::string& task, const std::string& module, int64_t parameters);

// The modality a masked-patch task or a probe reads by default: the first image or audio tower of
// the model ("image" for clip and vit, "audio" for clap and ast); empty when it has neither.
std::string default_patch_modality(const ModelSpec& model);
// The modality's tower as a ViT (image and audio towers are; AudioTransformer is a ViT); throws
// loom::Error naming `who`, the modality and the model's towers otherwise.
ViT& patch_tower(MultimodalModel& model, const std::string& modality, const std::string& who);

}  // namespace loom
