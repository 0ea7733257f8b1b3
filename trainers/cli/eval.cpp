// loom eval: a checkpoint's (or the seed's) evaluation as the recipe's last stage gives it.
#include <iostream>
#include "trainers/cli/cli.h"
#include "trainers/run.h"

namespace loom::cli {
namespace {

int eval(const Args& a, Session&) {
  const Recipe r = Recipe::from(load_recipe(a));
  if (a.checkpoint.empty() == !a.random_init) throw Error("loom eval: give --checkpoint DIR or --random-init");
  const Metrics m = evaluate_recipe(r, a.checkpoint);
  if (m.empty()) throw Error(str_cat(a.recipe, ": nothing to evaluate (set eval.zeroshot, eval.retrieval or eval.probe, and data.eval)"));
  for (auto& [k, v] : m) std::cout << k << " = " << v << "\n";
  return 0;
}

}  // namespace

const Command kEval = {"eval", R"(  eval RECIPE (--checkpoint DIR | --random-init) [key.path=value ...]
        The evaluation of the recipe's last stage (zero-shot and retrieval for contrastive, loss for
        mae) and the linear probe / k-NN of eval.probe, of a checkpoint or, with --random-init, of the
        model as initialised from the seed (a baseline); e.g. eval.probe.features=pixels probes raw pixels,
        eval.zeroshot.templates='["a picture of a {}."]' tries other prompts.
)", eval};

}  // namespace loom::cli
