// loom embed / loom retrieve (trainers/embedding_index.h) on a tiny CLIP trained here: the index file, the query
// path, top-k ranking, and the errors a user meets.
#include <gtest/gtest.h>
#include <filesystem>
#include "core/safetensors.h"
#include "tests/trainers/tiny_data.h"
#include "trainers/embedding_index.h"
#include "trainers/trainer.h"

using namespace loom;
namespace fs = std::filesystem;
using loom::testing::make_dataset;

namespace {

std::string recipe_text(const fs::path& data) {
  const std::string d = data.string();
  return "name: tiny\nseed: 3\n"
         "model:\n  embed_dim: 16\n"
         "  vision: {type: vit, image_size: 8, channels: 1, patch: 4, width: 32, layers: 1, heads: 2}\n"
         "  text: {type: transformer, context: 8, width: 32, layers: 1, heads: 2}\n"
         "tokenizer: {type: bpe, vocab_size: 64}\n"
         "task: {type: contrastive, temperature_init: 0.1}\n"
         "data:\n"
         "  train: {manifest: " + d + "/train.jsonl, batch_size: 32, workers: 1}\n"
         "  eval: {manifest: " + d + "/test.jsonl, batch_size: 64, workers: 1}\n"
         "optim: {type: adamw, lr: 3.0e-3, weight_decay: 0.01, betas: [0.9, 0.98]}\n"
         "schedule: {type: cosine, warmup_steps: 5}\n"
         "train: {steps: 200, checkpoint_every: 0, keep: 1, log_every: 50}\n";
}

}  // namespace

TEST(Embed, IndexesImagesAndRetrievesTheQueriedClass) {
  const fs::path data = make_dataset("embed"), run = data / "run";
  Config c = Config::parse(recipe_text(data), "tiny.yaml");
  const Recipe r = Recipe::from(c);
  {
    Trainer t(r, c, run.string(), false);
    t.train();
  }
  const Embedder emb(r, (run / "checkpoints" / "latest").string());
  const Embeddings images = emb.embed_manifest((data / "test.jsonl").string(), "", false);
  EXPECT_EQ(images.kind, "image");
  ASSERT_EQ(images.vectors.shape(), (Shape{64, 16}));
  ASSERT_EQ(images.rows.size(), 64u);
  const auto v = images.vectors.to_vector<float>();
  for (int64_t i = 0; i < 64; ++i) {
    double n = 0;
    for (int64_t j = 0; j < 16; ++j) n += double(v[size_t(i * 16 + j)]) * v[size_t(i * 16 + j)];
    EXPECT_NEAR(n, 1.0, 1e-4) << "row " << i;
  }
  // Saved and read back as it was written; the file is plain safetensors.
  const std::string path = (data / "index.safetensors").string();
  save_embeddings(path, images);
  const Embeddings back = load_embeddings(path);
  EXPECT_EQ(back.rows, images.rows);
  EXPECT_EQ(back.vectors.to_vector<float>(), v);
  EXPECT_EQ(back.manifest, (data / "test.jsonl").string());
  EXPECT_EQ(load_safetensors(path).tensors.at("embeddings").shape(), (Shape{64, 16}));
  // CLIP has no image-text matching head: re-ranking is refused by name.
  const data::Manifest test = data::Manifest::load((data / "test.jsonl").string());
  try {
    emb.rerank("text", "a top left picture", "image", test, top_k(images, emb.embed_query("text", "a top left picture"), 4));
    ADD_FAILURE() << "re-ranked without an ITM head";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("loom retrieve --rerank: the model has no fusion encoder"), std::string::npos) << e.what();
  }

  // A caption of class k finds mostly images of class k (test row i has class i % 4).
  const char* captions[] = {"a top left picture", "a top right picture", "a bottom left picture", "a bottom right picture"};
  int right = 0;
  for (int k = 0; k < 4; ++k) {
    const std::vector<Hit> hits = top_k(back, emb.embed_query("text", captions[k]), 10);
    ASSERT_EQ(hits.size(), 10u);
    for (size_t i = 0; i + 1 < hits.size(); ++i) EXPECT_GE(hits[i].score, hits[i + 1].score);
    for (const Hit& h : hits) right += h.row % 4 == k;
  }
  EXPECT_GE(right, 32) << "precision@10 over the four classes: " << right / 40.0;

  // An image query embeds through the same transform: a test image finds itself first.
  const data::Manifest m = data::Manifest::load((data / "test.jsonl").string());
  const std::vector<Hit> self = top_k(back, emb.embed_query("image", m.rows[5].image), 1);
  EXPECT_EQ(self[0].row, 5);
  EXPECT_NEAR(self[0].score, 1.0, 1e-4);

  // Texts can be indexed too.
  const Embeddings texts = emb.embed_manifest((data / "test.jsonl").string(), "text", false);
  EXPECT_EQ(texts.kind, "text");
  EXPECT_EQ(texts.vectors.size(0), 64);

  // Errors a user meets.
  EXPECT_THROW(emb.embed_query("audio", m.rows[0].image), Error);
  EXPECT_THROW(emb.embed_query("image", "/nonexistent.png"), Error);
  EXPECT_THROW(emb.embed_manifest((data / "test.jsonl").string(), "audio", false), Error);
  save_safetensors((data / "other.safetensors").string(), {{"x", Tensor::zeros({2})}});
  try {
    load_embeddings((data / "other.safetensors").string());
    ADD_FAILURE() << "a safetensors file without embeddings must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not an embeddings file"), std::string::npos) << e.what();
  }
  EXPECT_THROW(top_k(back, Tensor::zeros({8}), 3), Error);
  EXPECT_THROW(Embedder(r, (data / "nothing").string()), Error);
}
