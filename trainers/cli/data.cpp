// loom data: manifests turned into other layouts (pack: WebDataset tar shards).
#include <iostream>
#include "data/webdataset.h"
#include "trainers/cli/cli.h"

namespace loom::cli {
namespace {

int data_command(const Args& a, Session&) {
  if (a.recipe != "pack" || a.positional.size() != 2) throw Error("usage: loom data pack MANIFEST OUT_PATTERN [--per-shard N]");
  const data::Manifest m = data::Manifest::load(a.positional[0]);
  const data::PackReport rep = data::pack_webdataset(m, a.positional[1], a.per_shard);
  // The brace pattern naming exactly these shards, for data.NAME.shards.
  const std::string& p = a.positional[1];
  const size_t pct = p.find('%'), d = p.find('d', pct);
  const std::string head = p.substr(0, pct), tail = p.substr(d + 1);
  const std::string first = rep.shards.front().substr(head.size(), rep.shards.front().size() - head.size() - tail.size());
  const std::string last = rep.shards.back().substr(head.size(), rep.shards.back().size() - head.size() - tail.size());
  std::cout << "loom data pack: " << rep.samples << " samples of " << a.positional[0] << " in " << rep.shards.size()
            << " shards; read them with\n  shards: \"" << head
            << (rep.shards.size() == 1 ? first : str_cat("{", first, "..", last, "}")) << tail << "\"\n";
  return 0;
}

}  // namespace

const Command kData = {"data", R"(  data pack MANIFEST OUT_PATTERN [--per-shard N]
        Writes a JSONL manifest's rows as WebDataset tar shards of N samples (default 10000), e.g.
        OUT_PATTERN data/shards/train-%06d.tar; a recipe reads them with data.NAME.shards:
        "data/shards/train-{000000..000005}.tar" (printed), giving the same batches as the manifest.
)", data_command};

}  // namespace loom::cli
