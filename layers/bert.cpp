#include "layers/bert.h"
#include "core/autograd.h"
#include <cmath>

namespace loom {

BertLayer::BertLayer(const TextConfig& c, Generator& gen) {
  // BERT's initialiser: every weight N(0, 0.02²), biases 0, LayerNorms 1/0.
  attn = std::make_shared<Attention>(c.width, c.heads, gen, 0.02, 0.02);
  register_module("attn", attn);
  ln_attn = std::make_shared<LayerNorm>(c.width, c.norm_eps);
  register_module("ln_attn", ln_attn);
  mlp = std::make_shared<Mlp>(c.width, int64_t(double(c.width) * c.mlp_ratio), gen, 0.02, 0.02, c.act);
  register_module("mlp", mlp);
  ln_mlp = std::make_shared<LayerNorm>(c.width, c.norm_eps);
  register_module("ln_mlp", ln_mlp);
}

Tensor BertLayer::forward(const Tensor& x, const ops::AttentionOptions& opt) const {
  Tensor h = ln_attn->forward(ops::add(x, attn->forward(x, opt)));
  return ln_mlp->forward(ops::add(h, mlp->forward(h)));
}

Bert::Bert(const TextConfig& c, Generator& gen) : TextEncoder(c) {
  LOOM_CHECK(c.pool == "cls" || c.pool == "pooler" || c.pool == "mean", "Bert: pool must be cls, pooler or mean, got '",
             c.pool, "'");
  LOOM_CHECK(c.type_vocab_size >= 1, "Bert: type_vocab_size must be >= 1, got ", c.type_vocab_size);
  LOOM_CHECK(c.pad_id >= 0 && c.pad_id < c.vocab_size, "Bert: pad_id ", c.pad_id, " is outside the vocabulary of ",
             c.vocab_size);
  token_embedding = register_parameter("token_embedding", ops::mul(ops::randn({c.vocab_size, c.width}, gen), 0.02), NoDecay);
  pos_embed = register_parameter("pos_embed", ops::mul(ops::randn({c.context, c.width}, gen), 0.02), NoDecay);
  type_embedding = register_parameter("type_embedding", ops::mul(ops::randn({c.type_vocab_size, c.width}, gen), 0.02), NoDecay);
  ln_embed = std::make_shared<LayerNorm>(c.width, c.norm_eps);
  register_module("ln_embed", ln_embed);
  layers = std::make_shared<ModuleList<BertLayer>>();
  register_module("layers", layers);
  for (int64_t i = 0; i < c.layers; ++i) layers->push_back(std::make_shared<BertLayer>(c, gen));
  if (c.pool == "pooler") {
    pooler = std::make_shared<Linear>(c.width, c.width, true, gen, 0.02);
    register_module("pooler", pooler);
  }
}

void Bert::check_tokens(const Tensor& tokens) const {
  if (tokens.dim() != 2 || tokens.size(1) < 1 || tokens.size(1) > config.context ||
      (tokens.dtype() != DType::i64 && tokens.dtype() != DType::i32))
    throw OpError(str_cat("Bert: tokens must be i64 [B, S] with 1 <= S <= context ", config.context, ", got ",
                          tokens.describe()));
}

Tensor Bert::embed_tokens(const Tensor& tokens) const {
  check_tokens(tokens);
  const int64_t S = tokens.size(1);
  Tensor x = ops::add(ops::embedding(token_embedding, tokens), pos_embed.narrow(0, 0, S));
  return ln_embed->forward(ops::add(x, type_embedding.select(0, 0)));
}

Tensor Bert::forward_layers(const Tensor& x, const ops::AttentionOptions& opt, Generator*) const {
  Tensor h = x;
  const int64_t every = config.checkpoint_every;
  for (size_t i = 0; i < layers->size(); ++i) {
    const auto* layer = &(*layers)[i];
    if (every > 0 && int64_t(i) % every == 0)
      h = autograd::checkpoint([layer, opt](const Tensor& in) { return layer->forward(in, opt); }, h, layer->parameters());
    else
      h = layer->forward(h, opt);
  }
  return h;
}

Tensor Bert::forward_tokens(const Tensor& tokens) const {
  ops::AttentionOptions opt;
  opt.key_padding_mask = padding_mask(tokens);
  return forward_layers(embed_tokens(tokens), opt);
}

Tensor Bert::pooler_output(const Tensor& hidden) const {
  LOOM_CHECK(pooler, "Bert: pooler_output needs the pooler (text.pool: pooler)");
  return ops::tanh(pooler->forward(hidden.select(1, 0)));
}

Tensor Bert::mean_pool(const Tensor& hidden, const Tensor& tokens) const {
  const int64_t B = hidden.size(0), S = hidden.size(1);
  Tensor keep = ops::logical_not(ops::eq(tokens, double(config.pad_id))).to(hidden.dtype()).reshape({B, S, 1});
  Tensor count = ops::clamp(ops::sum(keep, {1}), 1.0, std::nullopt);  // [B, 1]; a row of padding only gives 0s
  return ops::div(ops::sum(ops::mul(hidden, keep), {1}), count);
}

Tensor Bert::pool(const Tensor& h, const Tensor& tokens) const {
  if (config.pool == "pooler") return pooler_output(h);
  if (config.pool == "mean") return mean_pool(h, tokens);
  return h.select(1, 0);
}

Tensor Bert::forward(const Tensor& tokens, int64_t) const { return pool(forward_tokens(tokens), tokens); }

// With a drop generator, so that layers which take one (a Multiway tower's) see it.
Tensor Bert::encode(const Tensor& tokens, Generator* drop_gen) const {
  ops::AttentionOptions opt;
  opt.key_padding_mask = padding_mask(tokens);
  return pool(forward_layers(embed_tokens(tokens), opt, drop_gen), tokens);
}

MlmHead::MlmHead(const MlmHeadConfig& c, Generator& gen) : config(c) {
  LOOM_CHECK(c.act == "gelu" || c.act == "quick_gelu", "MlmHead: act must be gelu or quick_gelu, got '", c.act, "'");
  LOOM_CHECK(c.width >= 1 && c.vocab_size >= 1, "MlmHead: width and vocab_size must be >= 1, got ", c.width, ", ",
             c.vocab_size);
  transform = std::make_shared<Linear>(c.width, c.width, true, gen, 0.02);
  register_module("transform", transform);
  ln = std::make_shared<LayerNorm>(c.width, c.norm_eps);
  register_module("ln", ln);
  if (!c.tied) {
    decoder = std::make_shared<Linear>(c.width, c.vocab_size, false, gen, 0.02);
    register_module("decoder", decoder);
  }
  bias = register_parameter("bias", Tensor::zeros({c.vocab_size}), NoDecay);
}

Tensor MlmHead::forward(const Tensor& hidden, const Tensor& embedding) const {
  Tensor h = config.act == "gelu" ? transform->forward(hidden, ops::Activation::gelu) : ops::quick_gelu(transform->forward(hidden));
  h = ln->forward(h);
  const Tensor& w = config.tied ? embedding : decoder->weight;
  LOOM_CHECK(w.dim() == 2 && w.size(0) == config.vocab_size && w.size(1) == config.width, "MlmHead: the decoder weight must be [",
             config.vocab_size, ", ", config.width, "], got ", w.shape());
  return ops::linear(h, w, bias);
}

std::shared_ptr<TextEncoder> make_text_encoder(const TextConfig& c, Generator& gen) {
  if (c.type == "bert") return std::make_shared<Bert>(c, gen);
  LOOM_CHECK(c.type == "transformer", "text tower type must be transformer or bert, got '", c.type, "'");
  return std::make_shared<TextTransformer>(c, gen);
}

}  // namespace loom
