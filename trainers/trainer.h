// The training loop for a recipe: model, tokenizer, loaders, AdamW, schedule, gradient accumulation
// and clipping, periodic evaluation, metrics.jsonl, atomic checkpoints and exact resume.
#pragma once
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include "data/loader.h"
#include "data/tokenizer.h"
#include "layers/clip.h"
#include "trainers/optim.h"
#include "trainers/recipe.h"

namespace loom {

using Metrics = std::map<std::string, double>;

// Appends one JSON object per line ({"step": N, "name": value, ...}) to run_dir/metrics.jsonl.
class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path);
  ~MetricsLog();
  void write(int64_t step, const Metrics& m);
 private:
  std::FILE* f_ = nullptr;
};

// Zero-shot classification and retrieval for a CLIP model over a manifest. Names as in metrics.jsonl:
// eval/zeroshot_top1, eval/zeroshot_top5, eval/i2t_r{1,5,10}, eval/t2i_r{1,5,10}.
Metrics evaluate_clip(Clip& model, const data::BpeTokenizer& tok, const Recipe& r);

class Trainer {
 public:
  // A new run in run_dir (created), or, with resume, the run continued from its latest checkpoint.
  Trainer(Recipe recipe, const Config& resolved, std::string run_dir, bool resume);
  // Trains to the recipe's train.steps, or only until step `stop_at` (then checkpoints, as if interrupted).
  void train(int64_t stop_at = -1);
  Metrics evaluate() { return evaluate_clip(*model_, *tokenizer_, recipe_); }
  // Training samples per second over `steps` steps after `warmup` steps (no checkpoints, no eval).
  double bench(int64_t steps, int64_t warmup);

  int64_t step() const { return step_; }
  Clip& model() { return *model_; }
  const std::string& run_dir() const { return run_dir_; }
  std::string checkpoint_dir(int64_t step) const;
  void save_checkpoint();

  // Loads model weights from a checkpoint directory or .safetensors file into `model`.
  static LoadReport load_weights(Module& model, const InitFrom& from);

 private:
  double train_step(double lr);  // one optimizer step (grad_accum micro-batches); returns the mean loss
  data::LoaderPosition restore(const std::string& checkpoint);  // returns where the data resumes
  void prune_checkpoints();

  Recipe recipe_;
  std::string run_dir_, resolved_yaml_;
  std::unique_ptr<Clip> model_;
  std::unique_ptr<data::BpeTokenizer> tokenizer_;
  std::shared_ptr<const data::Manifest> train_manifest_;
  std::unique_ptr<data::Loader> loader_;
  std::unique_ptr<AdamW> optim_;
  Generator drop_gen_;
  int64_t step_ = 0;
  std::unique_ptr<MetricsLog> metrics_;
};

}  // namespace loom
