// loom train: a run from a recipe (or its --check dry run).
#include <filesystem>
#include <iostream>
#include "trainers/cli/cli.h"
#include "trainers/dry_run.h"
#include "trainers/trainer.h"

namespace loom::cli {
namespace {

int train(const Args& a, Session& s) {
  Config c = load_recipe(a);
  if (a.check) c.allow_missing_files();
  const Recipe r = Recipe::from(c);  // validates everything before any work
  if (a.check) {
    std::cout << check_recipe(r, c);
    return 0;
  }
  const bool resume = !a.resume.empty();
  const std::string dir = resume ? a.resume : (a.run_dir.empty() ? (std::filesystem::path("runs") / r.name).string() : a.run_dir);
  s.comm = distributed::from_launcher();  // several processes when started by mpirun or srun
  Trainer t(r, c, dir, resume, s.comm);
  t.train();
  if (s.comm->rank() == 0)
    std::cout << "loom: done. checkpoint: " << dir << "/checkpoints/latest  metrics: " << dir << "/metrics.jsonl\n";
  return 0;
}

}  // namespace

const Command kTrain = {"train", R"(  train RECIPE [key.path=value ...] [--resume RUN_DIR] [--run-dir DIR] [--check]
        Train from a YAML recipe. Overrides change any recipe key. The run directory (default
        runs/<name>) receives recipe.yaml, tokenizer.json, metrics.jsonl, TensorBoard event files
        (tensorboard/) and checkpoints/.
        --resume RUN_DIR continues that run from checkpoints/latest, bitwise as if uninterrupted.
        --check validates the recipe, builds the model and each stage's task, runs one forward pass
        of each on a random batch of the data's shapes, and prints a summary; no step, nothing
        written. Data files not on this machine are listed rather than fatal.
)", train};

}  // namespace loom::cli
