// The loom command line: each command in its own file of this folder (cli.h), over the trainers library.
#include <iostream>
#include <string>
#include "core/error.h"
#include "trainers/cli/cli.h"

using namespace loom;
using namespace loom::cli;

namespace {

const Command* const kCommands[] = {&kTrain, &kEval, &kBench, &kEmbed, &kRetrieve, &kExport, &kData, &kStats, &kPlot};

std::string usage() {
  std::string u = "usage: loom <command> [options]\n\ncommands:\n";
  for (const Command* c : kCommands) u += c->usage;
  return u + "\nRun 'loom <command> --help' for a command's options.\n";
}

const Command* find_command(const std::string& name) {
  for (const Command* c : kCommands)
    if (name == c->name) return c;
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  Session session;
  try {
    if (argc < 2) {  // no command: a usage error
      std::cerr << usage();
      return 2;
    }
    const Args a = parse_args(argc, argv);
    if (a.help || a.command.empty()) {
      std::cout << usage();
      return 0;
    }
    const Command* command = find_command(a.command);
    if (!command) throw Error(str_cat("unknown command '", a.command, "'\n", usage()));
    if ((a.in_memory || a.profile) && a.command != "bench")
      throw Error(str_cat(a.in_memory ? "--in-memory" : "--profile", " is an option of loom bench, not of loom ", a.command));
    if (a.check && a.command != "train") throw Error("--check belongs to loom train");
    return command->run(a, session);
  } catch (const std::exception& e) {
    if (session.comm && session.comm->world() > 1) {
      // The other ranks may be waiting in a collective for this one: end them all.
      std::cerr << "loom: error (rank " << session.comm->rank() << " of " << session.comm->world() << "): " << e.what() << std::endl;
      session.comm->abort(1);
    }
    std::cerr << "loom: error: " << e.what() << "\n";
    return 1;
  }
}
