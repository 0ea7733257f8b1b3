// Tower types transformer (CLIP's causal text tower) and bert (layers/bert.h).
#include "layers/bert.h"
#include "trainers/towers.h"

namespace loom {

TextConfig read_text_config(const Config& c, const std::string& k) {
  TextConfig t;
  t.type = c.choice(k + ".type", {"transformer", "bert"}, "transformer");
  t.act = c.choice(k + ".act", {"gelu", "quick_gelu"}, "gelu");
  if (t.type == "bert") {
    t.pool = c.choice(k + ".pool", {"cls", "pooler", "mean"}, "cls");
    t.type_vocab_size = c.i64(k + ".type_vocab_size", 2);
    if (t.type_vocab_size < 1) c.fail(k + ".type_vocab_size", "must be >= 1");
    t.norm_eps = c.f64(k + ".norm_eps", 1e-12);
    if (!(t.norm_eps > 0)) c.fail(k + ".norm_eps", str_cat("must be > 0, got ", t.norm_eps));
  }
  t.context = c.i64(k + ".context");
  t.width = c.i64(k + ".width");
  t.layers = c.i64(k + ".layers");
  t.heads = c.i64(k + ".heads");
  for (const char* key : {".context", ".width", ".layers", ".heads"})
    if (c.i64(k + key) < 1) c.fail(k + key, "must be >= 1");
  t.mlp_ratio = c.f64(k + ".mlp_ratio", 4.0);
  t.checkpoint_every = read_checkpoint_every(c, k);
  if (!(t.mlp_ratio > 0)) c.fail(k + ".mlp_ratio", str_cat("must be > 0, got ", t.mlp_ratio));
  if (t.width % t.heads != 0) c.fail(k + ".heads", str_cat("heads ", t.heads, " does not divide width ", t.width));
  if (t.context < 3) c.fail(k + ".context", "must be >= 3 (start, a token, end)");
  return t;
}

TextConfig with_context(TextConfig t, const TowerContext& ctx) {
  t.vocab_size = ctx.vocab_size;
  t.pad_id = ctx.pad_id;  // BERT masks these keys
  t.eot_id = ctx.eot_id;  // a causal tower pools here
  return t;
}

TowerSpec text_tower(const TextConfig& t) {
  TowerSpec s;
  s.type = t.type;
  s.input = {"text", 0, 0, 0, t.context};
  s.width = t.width;
  s.build = [t](Generator& g, const TowerContext& ctx) -> std::shared_ptr<Encoder> {
    return make_text_encoder(with_context(t, ctx), g);
  };
  return s;
}

TowerSpec read_transformer(const Config& c, const std::string& key) { return text_tower(read_text_config(c, key)); }
TowerSpec read_bert(const Config& c, const std::string& key) { return text_tower(read_text_config(c, key)); }

}  // namespace loom
