#include <string>
#include "core/error.h"
#include "trainers/cli/cli.h"

namespace loom::cli {
namespace {

int64_t int_value(const char* flag, const std::string& v) {
  size_t used = 0;
  int64_t n = -1;
  try {
    n = std::stoll(v, &used);
  } catch (const std::exception&) {
  }
  if (used != v.size() || n < 0) throw Error(str_cat(flag, " needs a whole number >= 0, got '", v, "'"));
  return n;
}

// Commands taking more than one plain argument after the first: how many.
size_t positional_limit(const std::string& command) {
  if (command == "export") return 1;
  if (command == "data") return 3;  // pack MANIFEST OUT; import FORMAT ROOT OUT
  if (command == "plot") return 64;  // further run directories
  return 0;
}

}  // namespace

Args parse_args(int argc, char** argv) {
  Args a;
  a.command = argv[1];
  if (a.command == "--help" || a.command == "-h" || a.command == "help") { a.help = true; a.command.clear(); return a; }
  for (int i = 2; i < argc; ++i) {
    std::string s = argv[i];
    auto value = [&](const char* flag) -> std::string {
      if (i + 1 >= argc) throw Error(str_cat(flag, " needs a value"));
      return argv[++i];
    };
    if (s == "--help" || s == "-h") a.help = true;
    else if (s == "--resume") a.resume = value("--resume");
    else if (s == "--run-dir") a.run_dir = value("--run-dir");
    else if (s == "--checkpoint") a.checkpoint = value("--checkpoint");
    else if (s == "--random-init") a.random_init = true;
    else if (s == "--steps") a.steps = int_value("--steps", value("--steps"));
    else if (s == "--per-shard") a.per_shard = int_value("--per-shard", value("--per-shard"));
    else if (s == "--split") a.split = value("--split");
    else if (s == "--skip-missing") a.skip_missing = true;
    else if (s == "--check") a.check = true;
    else if (s == "--profile") a.profile = true;
    else if (s == "--in-memory") a.in_memory = true;
    else if (s == "--input") a.input = value("--input");
    else if (s == "--out") a.out = value("--out");
    else if (s == "--kind") a.kind = value("--kind");
    else if (s == "--index") a.index = value("--index");
    else if (s == "--k") a.k = int_value("--k", value("--k"));
    else if (s == "--rerank") a.rerank = int_value("--rerank", value("--rerank"));
    else if (s == "--text" || s == "--image" || s == "--audio") {
      if (!a.query_kind.empty()) throw Error("loom retrieve: give one query (--text, --image or --audio)");
      a.query_kind = s.substr(2);
      a.query = value(s.c_str());
    }
    else if (s == "--data") a.data = value("--data");
    else if (s == "--format") a.format = value("--format");
    else if (s == "--recipe") a.recipe_file = value("--recipe");
    else if (s == "--metrics") a.metrics = value("--metrics");
    else if (s == "--samples") a.samples = int_value("--samples", value("--samples"));
    else if (s.rfind("--", 0) == 0) throw Error(str_cat("unknown option ", s, " (see loom ", a.command, " --help)"));
    else if (s.find('=') != std::string::npos && a.command != "plot") a.overrides.push_back(s);
    else if (a.recipe.empty()) a.recipe = s;
    else if (a.positional.size() < positional_limit(a.command)) a.positional.push_back(s);
    else throw Error(str_cat("unexpected argument '", s, "' (overrides look like key.path=value)"));
  }
  return a;
}

Config load_recipe(const Args& a) {
  if (a.recipe.empty()) throw Error(str_cat("loom ", a.command, ": missing RECIPE (see loom ", a.command, " --help)"));
  Config c = Config::load(a.recipe);
  for (const auto& o : a.overrides) c.apply_override(o);
  return c;
}

}  // namespace loom::cli
