// loom retrieve: the rows of an index nearest to one query.
#include <filesystem>
#include <iostream>
#include "trainers/cli/cli.h"
#include "trainers/embedding_index.h"

namespace loom::cli {
namespace {

int retrieve(const Args& a, Session&) {
  const Recipe r = Recipe::from(load_recipe(a));
  if (a.checkpoint.empty()) throw Error("loom retrieve: give --checkpoint DIR");
  if (a.index.empty() || a.query_kind.empty()) throw Error("loom retrieve: give --index FILE and a query (--text, --image or --audio)");
  const Embedder embedder(r, a.checkpoint);
  const Embeddings e = load_embeddings(a.index);
  const data::Manifest m =
      e.manifest.empty() || !std::filesystem::exists(e.manifest) ? data::Manifest{} : data::Manifest::load(e.manifest);
  int rank = 0;
  for (const Hit& h : top_k(e, embedder.embed_query(a.query_kind, a.query), a.k)) {
    std::cout << ++rank << "\t" << h.score << "\trow " << h.row;
    if (h.row < int64_t(m.rows.size())) {
      const data::Example& x = m.rows[size_t(h.row)];
      std::cout << "\tlabel " << x.label << "\t" << (e.kind == "text" ? x.text : (x.image.empty() ? x.audio : x.image));
    }
    std::cout << "\n";
  }
  return 0;
}

}  // namespace

const Command kRetrieve = {"retrieve", R"(  retrieve RECIPE --checkpoint DIR --index FILE (--text TEXT | --image PATH | --audio PATH) [--k 10]
        The index rows most similar to the query (embedded with the other tower), best first:
        rank, score, manifest row, label and the row's text or file.
)", retrieve};

}  // namespace loom::cli
