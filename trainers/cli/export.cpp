// loom export: a checkpoint in Hugging Face's layout.
#include <filesystem>
#include <iostream>
#include "trainers/cli/cli.h"
#include "trainers/pretrained.h"

namespace loom::cli {
namespace {

int export_(const Args& a, Session&) {
  if (a.format.empty() || a.recipe.empty() || a.positional.size() != 1)
    throw Error("usage: loom export --format hf-clip|hf-bert CHECKPOINT OUT_DIR [--recipe RECIPE]");
  if (a.format != "hf-clip" && a.format != "hf-bert")
    throw Error(str_cat("loom export: unknown --format '", a.format, "' (hf-clip or hf-bert)"));
  export_checkpoint(a.recipe, a.recipe_file, a.format, a.positional[0]);
  const bool tokenizer = std::filesystem::exists(std::filesystem::path(a.positional[0]) / "tokenizer.json");
  std::cout << "loom export: " << a.format << " -> " << a.positional[0] << "/model.safetensors, config.json"
            << (tokenizer ? ", tokenizer.json" : "") << "\n";
  return 0;
}

}  // namespace

const Command kExport = {"export", R"(  export --format hf-clip|hf-bert CHECKPOINT OUT_DIR [--recipe RECIPE]
        Writes a checkpoint's model in Hugging Face's layout: OUT_DIR/model.safetensors and
        config.json (and its tokenizer.json when it is a Hugging Face one), loadable with transformers'
        CLIPModel / BertModel. hf-bert exports the text tower (model.text.type: bert). The recipe is
        the run's recipe.yaml (CHECKPOINT/../../recipe.yaml) unless --recipe names one.
)", export_};

}  // namespace loom::cli
