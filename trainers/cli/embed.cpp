// loom embed: a manifest through one tower of a trained contrastive model, into an index file.
#include <iostream>
#include "trainers/cli/cli.h"
#include "trainers/embedding_index.h"

namespace loom::cli {
namespace {

int embed(const Args& a, Session&) {
  const Recipe r = Recipe::from(load_recipe(a));
  if (a.checkpoint.empty()) throw Error("loom embed: give --checkpoint DIR");
  if (a.input.empty() || a.out.empty()) throw Error("loom embed: give --input MANIFEST and --out FILE");
  const Embedder embedder(r, a.checkpoint);
  const Embeddings e = embedder.embed_manifest(a.input, a.kind, true);
  save_embeddings(a.out, e);
  std::cout << "loom embed: " << e.rows.size() << " " << e.kind << " embeddings of " << e.vectors.size(1) << " dims -> "
            << a.out << "\n";
  return 0;
}

}  // namespace

const Command kEmbed = {"embed", R"(  embed RECIPE --checkpoint DIR --input MANIFEST --out FILE [--kind image|audio|text]
        Embeds every row of a manifest with a trained CLIP/CLAP: its images or audio clips (the
        default when it has them) or its texts, into a safetensors file of L2-normalised
        "embeddings" [N, E] and manifest "rows" [N] (FAISS or numpy read it as it is).
)", embed};

}  // namespace loom::cli
