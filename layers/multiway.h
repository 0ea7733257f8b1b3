// VLMo's Multiway Transformer (Bao et al. 2022): every block has one self-attention that all tokens
// share and a feed-forward expert per modality: image tokens go through the vision expert, text tokens
// through the language expert, and from layer `vl_from` on, the tokens of an image-text sequence go
// through the vision-language expert. Tokens are routed by contiguous spans (a fused sequence is
// [text; image]), so no token is gathered. The same weights run as an image encoder, a text encoder
// or a fusion encoder of both (FusionEncoder, layers/towers.h).
//
// The towers are views: MultiwayImageTower (a ViT of patch embedding, class token and positions whose
// blocks are the shared ones, vision expert) and MultiwayTextTower (BERT's embeddings, the shared
// blocks with the language expert). The shared module is registered on the model as "multiway":
//   multiway.blocks.<i>.{ln1, attn, image, text, vl}, multiway.norm, multiway.rel_pos_bias
// so a stage freezes "multiway.blocks.*.attn.*" or "multiway.blocks.*.image.*" by name.
#pragma once
#include <memory>
#include <string>
#include <vector>
#include "layers/bert.h"
#include "layers/towers.h"

namespace loom {

struct MultiwayConfig {
  int64_t width = 128, heads = 4, layers = 4;
  int64_t vl_from = 4;  // the first block with a vision-language expert (layers: none, a dual encoder)
  double mlp_ratio = 4.0, drop_path = 0.0, layer_scale_init = 0.0;
  // BEiT's learnable relative position bias over the image tokens (one table shared by every block,
  // as BEiT pretrains): needs the patch grid; the image's tokens must be all of them (no MAE masking).
  bool rel_pos_bias = false;
  int64_t grid_h = 0, grid_w = 0;
};

enum class Expert { image, text, vl };
// A run of consecutive tokens that one expert takes.
struct ExpertSpan {
  Expert expert;
  int64_t length;
};

// A feed-forward expert: "norm" then "mlp" (the pre-LN block's second half).
class FeedForwardExpert : public Module {
 public:
  FeedForwardExpert(const BlockConfig& c, Generator& gen);
  Tensor forward(const Tensor& x) const { return mlp->forward(norm->forward(x)); }
  std::shared_ptr<LayerNorm> norm;
  std::shared_ptr<Mlp> mlp;
};

class MultiwayBlock : public Module {
 public:
  MultiwayBlock(const BlockConfig& c, bool has_vl, Generator& gen);
  // x [B, S, W] whose tokens lie in `spans` (lengths summing to S). fused: every token through the
  // vision-language expert (a block that has one).
  Tensor forward(const Tensor& x, const std::vector<ExpertSpan>& spans, bool fused, const ops::AttentionOptions& opt,
                 Generator* drop_gen) const;
  std::shared_ptr<LayerNorm> ln1;
  std::shared_ptr<Attention> attn;
  std::shared_ptr<FeedForwardExpert> image, text, vl;  // vl null below vl_from
  Tensor ls1, ls2;                                      // LayerScale, undefined when off

 private:
  BlockConfig c_;
};

class MultiwayImageTower;
class MultiwayTextTower;

class MultiwayTransformer : public FusionEncoder {
 public:
  MultiwayTransformer(const MultiwayConfig& c, Generator& gen);
  // x [B, S, W] in `spans` -> the blocks (an image-text sequence takes the VL expert from vl_from on),
  // then "norm". opt's key padding mask covers all S; the relative position bias is added over the
  // image span.
  Tensor forward(const Tensor& x, const std::vector<ExpertSpan>& spans, ops::AttentionOptions opt,
                 Generator* drop_gen) const;
  // The tokens after each block, the norm applied to each (for probing several depths).
  std::vector<Tensor> forward_each(const Tensor& x, const std::vector<ExpertSpan>& spans, ops::AttentionOptions opt) const;
  // The relative position bias [1, H, 1+N, 1+N] of the image's class token and patches.
  Tensor image_position_bias() const;

  std::vector<std::string> fuses() const override { return {"text", "image"}; }
  Tensor fuse(const std::map<std::string, Tensor>& inputs, Generator* drop_gen = nullptr,
              const PatchMask* masked = nullptr) const override;
  int64_t fusion_width() const override { return config.width; }

  // The towers that embed each modality's tokens (set when they are built; they are the model's children).
  void attach(const MultiwayImageTower* image) { image_ = image; }
  void attach(const MultiwayTextTower* text) { text_ = text; }

  MultiwayConfig config;
  std::shared_ptr<ModuleList<MultiwayBlock>> blocks;
  std::shared_ptr<LayerNorm> norm;
  Tensor rel_pos_table;  // [(2Gh-1)(2Gw-1) + 3, H], undefined without rel_pos_bias
  Tensor rel_pos_index;  // i64 [(1+N)²] into the table (not a parameter; rebuilt from the grid)

 private:
  // Checks the spans, adds the relative position bias over the image span to opt; true for an
  // image-text sequence (the VL expert's).
  bool prepare(const Tensor& x, const std::vector<ExpertSpan>& spans, ops::AttentionOptions& opt) const;
  const MultiwayImageTower* image_ = nullptr;
  const MultiwayTextTower* text_ = nullptr;
};

// The image side: patch embedding, class token and position embedding (ViT's, config.layers 0 and no
// ln_post), then the shared blocks with the vision expert and the shared norm. MAE and BEiT's MIM reach
// it as any ViT (embed_patches, prepend_cls, forward_blocks).
class MultiwayImageTower : public ViT {
 public:
  MultiwayImageTower(ViTConfig c, std::shared_ptr<MultiwayTransformer> shared, Generator& gen);
  Tensor forward_blocks(const Tensor& x, Generator* drop_gen = nullptr) const override;
  std::vector<Tensor> block_outputs(const Tensor& images) const override;
  int64_t depth() const override { return shared_->config.layers; }
  // Class token and patches with positions [B, 1+N, W], before any block (the fused sequence's image part).
  Tensor embed_image(const Tensor& images) const { return prepend_cls(embed_patches(images)); }

 private:
  std::shared_ptr<MultiwayTransformer> shared_;
};

// The text side: BERT's embeddings (layers 0), then the shared blocks with the language expert and the
// shared norm. MLM reaches it as any BERT tower.
class MultiwayTextTower : public Bert {
 public:
  MultiwayTextTower(TextConfig c, std::shared_ptr<MultiwayTransformer> shared, Generator& gen);
  Tensor forward_layers(const Tensor& x, const ops::AttentionOptions& opt, Generator* drop_gen = nullptr) const override;

 private:
  std::shared_ptr<MultiwayTransformer> shared_;
};

}  // namespace loom
