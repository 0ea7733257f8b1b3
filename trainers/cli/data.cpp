// loom data: manifests turned into other layouts (pack: WebDataset tar shards), and the public sets'
// own layouts turned into manifests (import).
#include <iostream>
#include "data/importers.h"
#include "data/webdataset.h"
#include "trainers/cli/cli.h"

namespace loom::cli {
namespace {

int import_command(const Args& a) {
  if (a.positional.size() != 3) throw Error("usage: loom data import FORMAT ROOT OUT.jsonl [--split NAME] [--skip-missing]");
  data::ImportOptions opt;
  opt.split = a.split;
  opt.skip_missing = a.skip_missing;
  const data::ImportReport rep = data::import_dataset(a.positional[0], a.positional[1], a.positional[2], opt);
  const data::Manifest m = data::Manifest::load(a.positional[2]);  // what a recipe will read
  std::cout << "loom data import: " << rep.rows << " rows (" << rep.items << " " << (a.positional[0] == "coco" ||
               a.positional[0] == "flickr30k" || a.positional[0] == "imagefolder" ? "images" : "clips") << ") in "
            << a.positional[2];
  if (rep.missing) std::cout << "; " << rep.missing << " left out, their files missing";
  if (!rep.classes_file.empty()) std::cout << "; classes in " << rep.classes_file;
  std::cout << "\n";
  LOOM_CHECK(int64_t(m.rows.size()) == rep.rows, a.positional[2], ": read back ", m.rows.size(), " rows of ", rep.rows);
  return 0;
}

int data_command(const Args& a, Session&) {
  if (a.recipe == "import") return import_command(a);
  if (a.recipe != "pack" || a.positional.size() != 2)
    throw Error("usage: loom data pack MANIFEST OUT_PATTERN [--per-shard N]  |  loom data import FORMAT ROOT OUT.jsonl [--split NAME]");
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
  data import FORMAT ROOT OUT.jsonl [--split NAME] [--skip-missing]
        Reads a public set in the layout it is distributed in and writes a manifest (paths relative
        to OUT's folder): coco and flickr30k (Karpathy's dataset_*.json; splits train, val, test),
        audiocaps (train/val/test.csv; audio anywhere under ROOT), clotho (clotho_captions_*.csv,
        five rows per clip; splits development, validation, evaluation), esc50 (meta/esc50.csv;
        splits fold1..5, not-fold1..5), imagefolder (ROOT/<class>/<image>). esc50 and imagefolder
        also write OUT's stem + .classes.txt for zero-shot. --skip-missing leaves out rows whose
        file is absent (counted) instead of stopping.
)", data_command};

}  // namespace loom::cli
