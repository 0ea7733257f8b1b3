// loom train --check: everything a run would validate before its first step, without the run. The
// recipe is read (files that are not on this machine are listed, not fatal, so a full-size recipe can
// be checked on a laptop), the model and every stage's task are built, each stage's loader settings
// are validated, freeze patterns must match parameters, and each stage's task runs one forward pass,
// without gradients, on a random batch of two examples of the shapes its data will have. No step is
// taken and nothing is written.
#pragma once
#include <string>
#include "trainers/recipe.h"

namespace loom {

// The summary printed by loom train --check (model, parameters, stages, shapes, missing files).
// Throws loom::Error (naming file, line and key where it can) for anything a run would refuse.
std::string check_recipe(const Recipe& r, const Config& c);

}  // namespace loom
