// loom embed and loom retrieve: a trained contrastive model (CLIP, CLAP, an image-audio-text binding)
// turned into an index. embed writes every row of a manifest through one tower into a safetensors file that FAISS, numpy or any
// vector database reads as it is: "embeddings" f32 [N, E] (L2-normalised) and "rows" i64 [N] (the
// manifest row of each; unreadable rows are skipped and absent), metadata {"kind", "manifest",
// "recipe", "checkpoint"}. retrieve embeds one query (a text, an image or an audio file) with its
// tower, any of the model's (an audio query against an image index), and ranks the rows by cosine
// similarity, exactly (one matrix product).
#pragma once
#include <memory>
#include <string>
#include <vector>
#include "trainers/run.h"

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
  // Any of kinds(); "" picks the first of the model's towers other than text that the manifest has,
  // else text.
  Embeddings embed_manifest(const std::string& manifest, std::string kind, bool progress) const;
  // One query: kind "text" (value is the text) or another tower's (value is a file path). [E].
  Tensor embed_query(const std::string& kind, const std::string& value) const;
  const std::vector<std::string>& kinds() const;  // the towers with heads: "image", "audio", "text"

 private:
  void check_kind(const std::string& kind, const char* who) const;
  Tensor embed_inputs(std::shared_ptr<const data::Manifest> m, const std::string& kind, std::vector<int64_t>* rows,
                      bool progress) const;
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
