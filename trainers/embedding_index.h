// loom embed and loom retrieve: a trained contrastive model (CLIP, CLAP, an image-audio-text binding)
// turned into an index. embed writes every row of a manifest through one tower into a safetensors file that FAISS, numpy or any
// vector database reads as it is: "embeddings" f32 [N, E] (L2-normalised) and "rows" i64 [N] (the
// manifest row of each; unreadable rows are skipped and absent), metadata {"kind", "manifest",
// "recipe", "checkpoint"}. retrieve embeds one query (a text, an image or an audio file) with its
// tower, any of the model's (an audio query against an image index), and ranks the rows by cosine
// similarity, exactly (one matrix product).
#pragma once
#include <functional>
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

struct Hit {
  int64_t row;
  double score;
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
  // ITM re-ranking (VLMo, BLIP): `hits` of an index of `kind` rows read from manifest `m` (a text
  // query against images, or an image query against texts), each re-scored through the fusion
  // encoder by the ITM log-odds plus the ITC logit (its cosine x the pair's logit scale), best first.
  // Throws loom::Error for a model without an ITM head or another pair of kinds.
  std::vector<Hit> rerank(const std::string& query_kind, const std::string& query, const std::string& kind,
                                 const data::Manifest& m, std::vector<Hit> hits) const;

 private:
  void check_kind(const std::string& kind, const char* who) const;
  Tensor embed_inputs(std::shared_ptr<const data::Manifest> m, const std::string& kind, std::vector<int64_t>* rows,
                      bool progress) const;
  // The tower inputs of m's rows of `kind` (images or audio as the loader makes them), in row order;
  // `embed` maps each batch (the identity for the raw inputs).
  Tensor read_inputs(std::shared_ptr<const data::Manifest> m, const std::string& kind, std::vector<int64_t>* rows,
                     bool progress, const std::function<Tensor(const Tensor&)>& embed) const;
  Recipe recipe_;
  std::string checkpoint_;
  Run run_;
  const ContrastiveTowers* towers_ = nullptr;
};

void save_embeddings(const std::string& path, const Embeddings& e);
Embeddings load_embeddings(const std::string& path);  // loom::Error naming the path for a file not written by embed

// The k rows of `e` most similar to `query` [E], best first (ties: lower row first).
std::vector<Hit> top_k(const Embeddings& e, const Tensor& query, int64_t k);

}  // namespace loom
