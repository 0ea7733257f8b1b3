// Transformer building blocks. Forward passes read like the papers; every parameter is registered
// under the name used in checkpoints. Initialisation follows open_clip (see each constructor).
#pragma once
#include <memory>
#include <string>
#include <vector>
#include "layers/module.h"

namespace loom {

// Children named "0", "1", ... (so parameters are "blocks.3.attn.qkv.weight").
template <class M>
class ModuleList : public Module {
 public:
  M& push_back(std::shared_ptr<M> m) {
    items_.push_back(m);
    return register_module(std::to_string(items_.size() - 1), std::move(m));
  }
  M& operator[](size_t i) { return *items_[i]; }
  size_t size() const { return items_.size(); }
  auto begin() { return items_.begin(); }
  auto end() { return items_.end(); }

 private:
  std::vector<std::shared_ptr<M>> items_;
};

// What an encoder reads: its batch key and the shape the loader must make for it.
struct EncoderInput {
  std::string kind;                             // the batch key: image | audio | text
  int64_t channels = 0, height = 0, width = 0;  // image, audio: [B, channels, height, width]
  int64_t context = 0;                          // text: token ids per row
};

// A tower's trunk: one modality's inputs -> one vector per example. ViT (image, and audio as the
// AudioTransformer) and the text encoders are Encoders, so a model reaches any of them the same way
// (layers/towers.h); a new tower type is a new subclass.
class Encoder : public Module {
 public:
  // The pooled output [B, output_width()]; drop_gen drives drop-path (training only).
  virtual Tensor encode(const Tensor& input, Generator* drop_gen = nullptr) const = 0;
  virtual int64_t output_width() const = 0;
  virtual EncoderInput input() const = 0;
};

// Stochastic depth: each sample's branch is kept with probability 1 - p and scaled by 1/(1 - p)
// (identity unless training with a generator and p > 0).
Tensor drop_path(const Tensor& branch, double p, bool training, Generator* gen);

class Linear : public Module {
 public:
  // weight [out, in] ~ N(0, std²) (std <= 0: PyTorch's default U(±1/√in)), bias zeros.
  Linear(int64_t in, int64_t out, bool bias, Generator& gen, double std = -1.0);
  Tensor forward(const Tensor& x, ops::Activation act = ops::Activation::none) const {
    return ops::linear(x, weight, bias, act);
  }
  Tensor weight, bias;
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5);
  Tensor forward(const Tensor& x) const { return ops::layer_norm(x, weight, bias, eps_); }
  Tensor weight, bias;

 private:
  double eps_;
};

// fc1, the activation, fc2. act: gelu (erf, fused into fc1) | quick_gelu (x·sigmoid(1.702x), OpenAI
// CLIP's, for its released weights).
class Mlp : public Module {
 public:
  Mlp(int64_t dim, int64_t hidden, Generator& gen, double fc_std, double proj_std, std::string act = "gelu");
  Tensor forward(const Tensor& x) const;
  std::shared_ptr<Linear> fc1, fc2;
  std::string act;
};

// Multi-head self-attention with a fused qkv projection.
class Attention : public Module {
 public:
  Attention(int64_t dim, int64_t heads, Generator& gen, double qkv_std, double proj_std);
  // x [B, S, D]; opt.key_padding_mask [B, S] (true = padding), opt.causal.
  Tensor forward(const Tensor& x, const ops::AttentionOptions& opt = {}) const;
  std::shared_ptr<Linear> qkv, proj;
  int64_t heads;
};

struct BlockConfig {
  int64_t width = 128, heads = 4;
  double mlp_ratio = 4.0;
  double layer_scale_init = 0.0;  // > 0: LayerScale (CaiT) with this initial value
  double drop_path = 0.0;         // stochastic depth rate for this block (training only)
  int64_t total_layers = 1;       // for the open_clip projection init std
  std::string act = "gelu";       // the MLP's: gelu | quick_gelu
};

// Pre-LN transformer block: x + attn(ln1(x)), then + mlp(ln2(x)).
class Block : public Module {
 public:
  Block(const BlockConfig& c, Generator& gen);
  Tensor forward(const Tensor& x, const ops::AttentionOptions& opt = {}, Generator* drop_gen = nullptr) const;
  std::shared_ptr<LayerNorm> ln1, ln2;
  std::shared_ptr<Attention> attn;
  std::shared_ptr<Mlp> mlp;
  Tensor ls1, ls2;  // LayerScale gains [width], undefined when off

 private:
  BlockConfig c_;
};

// Patches (patchify, or extract_patches when they overlap) projected by one linear layer — a
// patch x patch convolution with that stride: [B, C, H, W] -> [B, N, width].
class PatchEmbed : public Module {
 public:
  PatchEmbed(int64_t channels, int64_t patch, int64_t width, Generator& gen, int64_t stride = 0, bool bias = true);
  Tensor forward(const Tensor& images) const;
  std::shared_ptr<Linear> proj;
  int64_t patch, channels, stride;  // stride 0: patch (non-overlapping)
};

struct ViTConfig {
  int64_t image_size = 28, channels = 1, patch = 4, width = 128, layers = 4, heads = 4;
  // Non-square inputs (a 128x1024 spectrogram): height x width; 0 means image_size.
  int64_t image_height = 0, image_width = 0;
  double mlp_ratio = 4.0;
  std::string pos_embed = "learned";  // learned | sincos (2-D, fixed buffer)
  double layer_scale_init = 0.0, drop_path = 0.0;
  // FLIP's patch dropout (open_clip's patch_dropout): in training, with a drop generator, each image
  // keeps a random max(1, round((1 - p) N)) of its N patch tokens after the positions are added (the
  // class token always), so the blocks see fewer tokens; evaluation sees all of them.
  double patch_dropout = 0.0;
  // Activation checkpointing: every checkpoint_every-th block (blocks 0, k, 2k, ...) keeps no
  // activations between forward and backward and recomputes them in backward (autograd::checkpoint);
  // 0: none. The same gradients, bitwise.
  int64_t checkpoint_every = 0;
  // Pixels between patch origins; 0 means patch. Below patch the patches overlap (AST: 16 with
  // stride 10), and the grid is that of a convolution, (size - patch) / stride + 1.
  int64_t stride = 0;
  // OpenAI CLIP's layout, for its released weights: a LayerNorm "ln_pre" before the blocks, a patch
  // projection without bias, quick_gelu in the MLPs.
  bool ln_pre = false, patch_bias = true;
  std::string act = "gelu";
  // The LayerNorm "ln_post" after the blocks; off for a tower whose blocks live elsewhere and end in
  // their own norm (layers/multiway.h).
  bool ln_post = true;
  int64_t height() const { return image_height > 0 ? image_height : image_size; }
  int64_t width_px() const { return image_width > 0 ? image_width : image_size; }
  int64_t step() const { return stride > 0 ? stride : patch; }
  bool overlapping() const { return step() != patch; }
  int64_t grid_h() const { return (height() - patch) / step() + 1; }
  int64_t grid_w() const { return (width_px() - patch) / step() + 1; }
  int64_t num_patches() const { return grid_h() * grid_w(); }
};

// A ViT whose stages can be called one by one, so a task can drop tokens between them (MAE):
//   tokens = embed_patches(images)            [B, N, width], patch projection + position embedding
//   tokens = <select, e.g. random_masking>     [B, K, width]
//   x = forward_blocks(prepend_cls(tokens))    [B, 1+K, width], class token + its position, blocks, ln_post
// forward_tokens() runs all of it on every patch. pos_embed row 0 is the class token's position, row
// 1 + i patch i's (patches in row-major grid order, as patchify orders them).
class ViT : public Encoder {
 public:
  ViT(const ViTConfig& c, Generator& gen);
  Tensor encode(const Tensor& images, Generator* drop_gen = nullptr) const override { return forward(images, drop_gen); }
  int64_t output_width() const override { return config.width; }
  EncoderInput input() const override { return {"image", config.channels, config.height(), config.width_px(), 0}; }
  Tensor forward_tokens(const Tensor& images, Generator* drop_gen = nullptr) const;  // [B, 1+N, width]
  Tensor forward(const Tensor& images, Generator* drop_gen = nullptr) const;         // class token [B, width]
  Tensor embed_patches(const Tensor& images) const;                                  // [B, N, width]
  // The same with the patches where mask [B, N] is 1 replaced by mask_token [width] before the
  // positions are added (BEiT's masked image modelling).
  Tensor embed_patches(const Tensor& images, const Tensor& mask, const Tensor& mask_token) const;
  Tensor prepend_cls(const Tensor& tokens) const;                                    // [B, 1+K, width]
  virtual Tensor forward_blocks(const Tensor& x, Generator* drop_gen = nullptr) const;  // blocks, then ln_post
  // The tokens after each block [B, 1+N, width], ln_post applied to each (for probing several depths).
  virtual std::vector<Tensor> block_outputs(const Tensor& images) const;
  virtual int64_t depth() const { return int64_t(blocks->size()); }  // how many block_outputs there are
  void check_images(const Tensor& images) const;  // throws OpError unless [B, channels, height, width]
  std::shared_ptr<PatchEmbed> patch_embed;
  Tensor cls_token, pos_embed;
  std::shared_ptr<ModuleList<Block>> blocks;
  std::shared_ptr<LayerNorm> ln_pre, ln_post;  // ln_pre null unless config.ln_pre, ln_post unless config.ln_post
  ViTConfig config;
};

struct TextConfig {
  std::string type = "transformer";  // transformer (causal, CLIP's; this file) | bert (layers/bert.h)
  int64_t vocab_size = 512, context = 16, width = 128, layers = 2, heads = 4;
  double mlp_ratio = 4.0;
  std::string act = "gelu";  // gelu | quick_gelu
  // bert only: token types, LayerNorm epsilon, pooling (cls: the [CLS] state; pooler: BERT's
  // tanh(dense([CLS])); mean: over the non-padding tokens), the padding id (its keys are masked).
  int64_t type_vocab_size = 2, pad_id = 0;
  double norm_eps = 1e-12;
  std::string pool = "cls";
  // The end-of-text id a causal tower pools at when reached through Encoder::encode (the tokenizer's,
  // set when the model is built; BERT ignores it).
  int64_t eot_id = -1;
  int64_t checkpoint_every = 0;  // as ViTConfig's (the causal tower's blocks; BERT's layers)
};

// A text tower: token ids -> one vector per text. The contrastive towers hold one of these.
class TextEncoder : public Encoder {
 public:
  explicit TextEncoder(const TextConfig& c) : config(c) {}
  // Pooled at config.eot_id (a causal tower), or as config.pool says (BERT).
  Tensor encode(const Tensor& tokens, Generator* drop_gen = nullptr) const override {
    (void)drop_gen;
    return forward(tokens, config.eot_id);
  }
  int64_t output_width() const override { return config.width; }
  EncoderInput input() const override { return {"text", 0, 0, 0, config.context}; }
  // tokens i64 [B, S] with S <= context -> [B, width]. A causal tower pools at the first eot_id of
  // each row; BERT pools as config.pool says and ignores eot_id.
  virtual Tensor forward(const Tensor& tokens, int64_t eot_id) const = 0;
  TextConfig config;
};
// The tower config.type names (transformer or bert).
std::shared_ptr<TextEncoder> make_text_encoder(const TextConfig& c, Generator& gen);

// Causal text transformer pooled at the end-of-text token.
class TextTransformer : public TextEncoder {
 public:
  TextTransformer(const TextConfig& c, Generator& gen);
  // tokens i64 [B, context]; pooled at the first position holding eot_id in each row.
  Tensor forward(const Tensor& tokens, int64_t eot_id) const override;  // [B, width]
  Tensor token_embedding, pos_embed;
  std::shared_ptr<ModuleList<Block>> blocks;
  std::shared_ptr<LayerNorm> ln_final;
};

// 2-D sine-cosine position embeddings (MAE): [grid_h*grid_w (+1 zero row first with cls_token), width],
// width divisible by 4. The first half of each row encodes the column, the second half the row.
Tensor sincos_pos_embed_2d(int64_t width, int64_t grid_h, int64_t grid_w, bool cls_token);
inline Tensor sincos_pos_embed_2d(int64_t width, int64_t grid, bool cls_token) {
  return sincos_pos_embed_2d(width, grid, grid, cls_token);
}

// `layers` pre-LN blocks registered on `owner` as "blocks"; drop-path rises linearly from 0 at the
// first block to `drop_path` at the last.
std::shared_ptr<ModuleList<Block>> make_blocks(Module& owner, int64_t width, int64_t heads, double mlp_ratio,
                                               int64_t layers, double layer_scale_init, double drop_path, Generator& gen,
                                               const std::string& act = "gelu");

}  // namespace loom
