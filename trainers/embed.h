// loom embed and loom retrieve: a trained two-tower model (CLIP, CLAP) turned into an index. embed
// writes every row of a manifest through one tower into a safetensors file that FAISS, numpy or any
// vector database reads as it is: "embeddings" f32 [N, E] (L2-normalised) and "rows" i64 [N] (the
// manifest row of each; unreadable rows are skipped and absent), metadata {"kind", "manifest",
// "recipe", "checkpoint"}. retrieve embeds one query (a text, an image or an audio file) with the other
// tower and ranks the rows by cosine similarity, exactly (one matrix product).
#pragma once
#include <memory>
#include <string>
#include <vector>
#include "trainers/trainer.h"

namespace loom {

struct Embeddings {
  Tensor vectors;             // f32 [N, E], unit rows
  std::vector<int64_t> rows;  // manifest row per vector
  std::string kind, manifest, recipe, checkpoint;
};

// The recipe's model with a checkpoint's weights and tokenizer; its last stage must be contrastive.
class Embedder {
 public:
  Embedder(const Recipe& r, const std::string& checkpoint);
  // "image" / "audio" (the model's non-text side) or "text"; "" picks the non-text side when the
  // manifest has it, else text.
  Embeddings embed_manifest(const std::string& manifest, std::string kind, bool progress) const;
  // One query: kind "text" (value is the text) or the non-text side (value is a file path). [E].
  Tensor embed_query(const std::string& kind, const std::string& value) const;
  const std::string& input_kind() const;  // "image" | "audio"

 private:
  Tensor embed_inputs(std::shared_ptr<const data::Manifest> m, std::vector<int64_t>* rows, bool progress) const;
  Recipe recipe_;
  std::string checkpoint_;
  Run run_;
  const ContrastiveTowers* towers_ = nullptr;
};

void save_embeddings(const std::string& path, const Embeddings& e);
Embeddings load_embeddings(const std::string& path);  // loom::Error naming the path for a file not written by embed

struct Hit {
  int64_t row;
  double score;
};
// The k rows of `e` most similar to `query` [E], best first (ties: lower row first).
std::vector<Hit> top_k(const Embeddings& e, const Tensor& query, int64_t k);

}  // namespace loom
