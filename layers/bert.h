// BERT (Devlin et al. 2019) as a text tower: learned absolute positions, token-type embeddings, an
// embedding LayerNorm, post-LN blocks (x = LN(x + attn(x)); x = LN(x + mlp(x))) with erf GELU, and
// bidirectional attention that ignores padding keys. Names are loom's; trainers/pretrained.cpp maps
// Hugging Face's BertModel onto them (fused qkv from query/key/value).
#pragma once
#include <memory>
#include "layers/transformer.h"

namespace loom {

// One post-LN encoder layer: "attn" (qkv, proj), "ln_attn", "mlp" (fc1, fc2), "ln_mlp".
class BertLayer : public Module {
 public:
  BertLayer(const TextConfig& c, Generator& gen);
  Tensor forward(const Tensor& x, const ops::AttentionOptions& opt) const;
  std::shared_ptr<Attention> attn;
  std::shared_ptr<LayerNorm> ln_attn, ln_mlp;
  std::shared_ptr<Mlp> mlp;
};

// Children and parameters: token_embedding [V, W], pos_embed [context, W], type_embedding [T, W],
// ln_embed, layers.N, and "pooler" (Linear W -> W, only with config.pool == "pooler").
class Bert : public TextEncoder {
 public:
  Bert(const TextConfig& c, Generator& gen);
  // tokens i64 [B, S], S <= context -> the last hidden states [B, S, W]; keys holding config.pad_id
  // are masked out of attention. Token types are all 0 (one segment).
  Tensor forward_tokens(const Tensor& tokens) const;
  // The embeddings alone [B, S, W] (token + position + type 0, ln_embed), for a fusion encoder that
  // joins them to another modality's tokens.
  Tensor embed_tokens(const Tensor& tokens) const;
  // The layers over embedded tokens (a tower whose layers live elsewhere overrides it, layers/multiway.h).
  virtual Tensor forward_layers(const Tensor& x, const ops::AttentionOptions& opt, Generator* drop_gen = nullptr) const;
  // True where a token is padding [B, S] (attention ignores those keys).
  Tensor padding_mask(const Tensor& tokens) const { return ops::eq(tokens, double(config.pad_id)); }
  // Pooled [B, W] as config.pool says (cls, pooler or mean over the non-padding tokens).
  Tensor forward(const Tensor& tokens, int64_t eot_id = -1) const override;
  Tensor encode(const Tensor& tokens, Generator* drop_gen = nullptr) const override;
  // BERT's pooler output tanh(dense(h[:, 0])) from the hidden states (needs the pooler).
  Tensor pooler_output(const Tensor& hidden) const;
  // The mean of the hidden states over the positions whose token is not config.pad_id.
  Tensor mean_pool(const Tensor& hidden, const Tensor& tokens) const;

  Tensor token_embedding, pos_embed, type_embedding;
  std::shared_ptr<LayerNorm> ln_embed;
  std::shared_ptr<ModuleList<BertLayer>> layers;
  std::shared_ptr<Linear> pooler;  // null unless pool == "pooler"

 protected:
  void check_tokens(const Tensor& tokens) const;
  Tensor pool(const Tensor& hidden, const Tensor& tokens) const;
};

// BERT's masked-language-model head (BertForMaskedLM's cls.predictions): a transform (Linear W -> W,
// the tower's activation, LayerNorm), then logits against the token embedding (tied, BERT's default)
// or a decoder of its own, plus a bias per token. Children: transform, ln, decoder (untied only);
// parameter: bias [V].
struct MlmHeadConfig {
  int64_t width = 128, vocab_size = 512;
  std::string act = "gelu";  // gelu | quick_gelu: the tower's
  double norm_eps = 1e-12;
  bool tied = true;
};

class MlmHead : public Module {
 public:
  MlmHead(const MlmHeadConfig& c, Generator& gen);
  // hidden [..., W] -> logits [..., V]. `embedding` [V, W]: the tower's token embedding, the decoder
  // when tied (ignored otherwise).
  Tensor forward(const Tensor& hidden, const Tensor& embedding) const;
  MlmHeadConfig config;
  std::shared_ptr<Linear> transform, decoder;
  std::shared_ptr<LayerNorm> ln;
  Tensor bias;
};

}  // namespace loom
