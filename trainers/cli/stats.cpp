// loom stats: a data section's normalisation statistics.
#include <iostream>
#include "trainers/cli/cli.h"
#include "trainers/data_stats.h"

namespace loom::cli {
namespace {

std::string list(const std::vector<double>& v) {
  std::string out;
  for (double x : v) out += (out.empty() ? "" : ", ") + str_cat(x);
  return v.size() == 1 ? out : "[" + out + "]";
}

int stats(const Args& a, Session&) {
  const Recipe r = Recipe::from(load_recipe(a));
  for (const InputStats& s : input_stats(r, a.data, a.samples)) {
    const std::string at = s.key == "audio" ? "audio" : "transform";
    std::cout << "data." << a.data << "." << s.key << ": " << s.examples << " examples, " << s.values << " values"
              << (s.skipped ? str_cat(", ", s.skipped, " unreadable skipped") : std::string()) << "\n"
              << "  data." << a.data << "." << at << ".mean: " << list(s.mean) << "\n"
              << "  data." << a.data << "." << at << ".std: " << list(s.std) << "\n";
  }
  return 0;
}

}  // namespace

const Command kStats = {"stats", R"(  stats RECIPE [--data NAME] [--samples N] [key.path=value ...]
        Mean and standard deviation of data.NAME's (default train) audio fbank or image channels as
        training sees them before normalisation, over its first N rows (default all): the values for
        data.NAME.audio.mean/std and data.NAME.transform.mean/std.
)", stats};

}  // namespace loom::cli
