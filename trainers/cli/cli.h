// The loom command line over the trainers library: one file per command, each a Command with its
// usage text; main.cpp lists them. A command throws loom::Error for bad input (main prints it, exit 1).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include "trainers/config.h"
#include "trainers/distributed/communicator.h"

namespace loom::cli {

struct Args {
  std::string command, recipe, resume, run_dir, checkpoint, data = "train";
  std::string input, out, kind, index, query_kind, query, format, recipe_file, metrics, split;
  std::vector<std::string> positional;  // after the first argument (loom export's OUT_DIR, loom plot's runs)
  std::vector<std::string> overrides;
  int64_t steps = 20, samples = 0, k = 10, per_shard = 10000, rerank = 0;
  bool help = false, random_init = false, check = false, profile = false, in_memory = false, skip_missing = false;
};

// What a command leaves for main's error handler: the communicator of a multi-process run, so that
// an error on one rank ends them all instead of leaving the others waiting in a collective.
struct Session {
  std::shared_ptr<distributed::Communicator> comm;
};

struct Command {
  const char* name;
  const char* usage;  // "  NAME ARGS\n        what it does" (lines of the top-level usage)
  int (*run)(const Args& a, Session& s);
};

extern const Command kTrain, kEval, kBench, kEmbed, kRetrieve, kExport, kData, kStats, kPlot;

// The recipe file of `a` with its key.path=value overrides applied.
Config load_recipe(const Args& a);
Args parse_args(int argc, char** argv);

}  // namespace loom::cli
