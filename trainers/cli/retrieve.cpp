// loom retrieve: the rows of an index nearest to one query.
#include <algorithm>
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
  if (a.k < 1) throw Error("loom retrieve: --k must be >= 1");
  if (a.rerank < 0) throw Error("loom retrieve: --rerank must be >= 1 (the candidates the ITM head re-scores)");
  std::vector<Hit> hits = top_k(e, embedder.embed_query(a.query_kind, a.query), std::max(a.k, a.rerank));
  if (a.rerank > 0) {
    LOOM_CHECK(!m.rows.empty(), "loom retrieve --rerank: ", a.index, " names its manifest ", e.manifest,
               ", which is not there: re-ranking reads the candidates' ", e.kind, " from it");
    std::vector<Hit> head(hits.begin(), hits.begin() + std::min<int64_t>(a.rerank, int64_t(hits.size())));
    head = embedder.rerank(a.query_kind, a.query, e.kind, m, std::move(head));
    std::copy(head.begin(), head.end(), hits.begin());
  }
  if (int64_t(hits.size()) > a.k) hits.resize(size_t(a.k));
  int rank = 0;
  for (const Hit& h : hits) {
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

const Command kRetrieve = {"retrieve", R"(  retrieve RECIPE --checkpoint DIR --index FILE (--text TEXT | --image PATH | --audio PATH) [--k 10] [--rerank K]
        The index rows most similar to the query (embedded with the other tower), best first:
        rank, score, manifest row, label and the row's text or file. --rerank K (a model with an
        ITM head, task itm): the top K re-scored through the fusion encoder by ITM log-odds + ITC
        logit (VLMo's, BLIP's re-ranking) and placed first in that order; the rest follow by cosine.
)", retrieve};

}  // namespace loom::cli
