#include "trainers/pretrained.h"
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include "core/autograd.h"
#include "core/error.h"
#include "layers/bert.h"
#include "layers/clip.h"
#include "trainers/checkpoint.h"
#include "trainers/run.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---------------------------------------------------------------- the rules, both directions
enum class Kind {
  copy,        // same tensor
  qkv,         // three [D, ...] tensors (query, key, value) <-> loom's fused [3D, ...]
  patch_conv,  // a conv weight [W, C, p, p] <-> loom's patch projection [W, p*p*C] (patchify's order)
  rows,        // a position table: the checkpoint may hold more rows than loom's context; loom takes the first
};

struct Rule {
  std::vector<std::string> hf;  // one name, or query/key/value for qkv
  std::string loom;
  Kind kind = Kind::copy;
};

struct Rules {
  std::vector<Rule> list;
  void copy(const std::string& hf, const std::string& loom, Kind k = Kind::copy) { list.push_back({{hf}, loom, k}); }
  void linear(const std::string& hf, const std::string& loom, bool bias = true) {
    copy(hf + ".weight", loom + ".weight");
    if (bias) copy(hf + ".bias", loom + ".bias");
  }
  void norm(const std::string& hf, const std::string& loom) { linear(hf, loom); }
  void qkv(const std::string& q, const std::string& k, const std::string& v, const std::string& loom) {
    for (const char* p : {".weight", ".bias"}) list.push_back({{q + p, k + p, v + p}, loom + p, Kind::qkv});
  }
};

// BertModel's names (relative to the model; a "bert." prefix is taken off first) onto loom's Bert,
// and BertForMaskedLM's head (cls.predictions) onto the mlm task's when `head` is given (its decoder
// weight only when untied: tied, it is the word embedding).
Rules bert_rules(const TextConfig& c, const std::string& to, const MlmHead* head) {
  Rules r;
  r.copy("embeddings.word_embeddings.weight", to + "token_embedding");
  r.copy("embeddings.position_embeddings.weight", to + "pos_embed", Kind::rows);
  r.copy("embeddings.token_type_embeddings.weight", to + "type_embedding");
  r.norm("embeddings.LayerNorm", to + "ln_embed");
  for (int64_t i = 0; i < c.layers; ++i) {
    const std::string h = str_cat("encoder.layer.", i, "."), l = str_cat(to, "layers.", i, ".");
    r.qkv(h + "attention.self.query", h + "attention.self.key", h + "attention.self.value", l + "attn.qkv");
    r.linear(h + "attention.output.dense", l + "attn.proj");
    r.norm(h + "attention.output.LayerNorm", l + "ln_attn");
    r.linear(h + "intermediate.dense", l + "mlp.fc1");
    r.linear(h + "output.dense", l + "mlp.fc2");
    r.norm(h + "output.LayerNorm", l + "ln_mlp");
  }
  if (c.pool == "pooler") r.linear("pooler.dense", to + "pooler");
  if (head) {
    r.linear("cls.predictions.transform.dense", "mlm_head.transform");
    r.norm("cls.predictions.transform.LayerNorm", "mlm_head.ln");
    r.copy("cls.predictions.bias", "mlm_head.bias");
    if (!head->config.tied) r.copy("cls.predictions.decoder.weight", "mlm_head.decoder.weight");
  }
  return r;
}

// CLIP's encoder layers (text and vision alike) onto loom's pre-LN blocks.
void clip_layers(Rules& r, const std::string& hf, const std::string& loom, int64_t layers) {
  for (int64_t i = 0; i < layers; ++i) {
    const std::string h = str_cat(hf, "encoder.layers.", i, "."), l = str_cat(loom, "blocks.", i, ".");
    r.norm(h + "layer_norm1", l + "ln1");
    r.qkv(h + "self_attn.q_proj", h + "self_attn.k_proj", h + "self_attn.v_proj", l + "attn.qkv");
    r.linear(h + "self_attn.out_proj", l + "attn.proj");
    r.norm(h + "layer_norm2", l + "ln2");
    r.linear(h + "mlp.fc1", l + "mlp.fc1");
    r.linear(h + "mlp.fc2", l + "mlp.fc2");
  }
}

// CLIPModel's names onto a loom Clip.
Rules clip_rules(const ClipConfig& c) {
  Rules r;
  r.copy("text_model.embeddings.token_embedding.weight", "text.token_embedding");
  r.copy("text_model.embeddings.position_embedding.weight", "text.pos_embed", Kind::rows);
  clip_layers(r, "text_model.", "text.", c.text.layers);
  r.norm("text_model.final_layer_norm", "text.ln_final");
  r.copy("vision_model.embeddings.class_embedding", "visual.cls_token");
  r.copy("vision_model.embeddings.patch_embedding.weight", "visual.patch_embed.proj.weight", Kind::patch_conv);
  r.copy("vision_model.embeddings.position_embedding.weight", "visual.pos_embed");
  r.norm("vision_model.pre_layrnorm", "visual.ln_pre");  // sic: Hugging Face's spelling
  clip_layers(r, "vision_model.", "visual.", c.vision.layers);
  r.norm("vision_model.post_layernorm", "visual.ln_post");
  r.copy("visual_projection.weight", "visual_proj.weight");
  r.copy("text_projection.weight", "text_proj.weight");
  r.copy("logit_scale", "logit_scale");
  return r;
}

// Keys of a released checkpoint that no loom module takes and that are not an error: BERT's heads
// where the model has no mlm head (and the next-sentence head always), a tied decoder's copy of the
// word embedding and of the bias, an unused pooler, saved buffers.
bool unused_key(const std::string& format, const std::string& k, const TextConfig* text) {
  if (k.size() >= 12 && k.compare(k.size() - 12, 12, "position_ids") == 0) return true;  // a saved buffer
  if (format == "hf-bert") return k.rfind("cls.", 0) == 0 || (text->pool != "pooler" && k.rfind("pooler.", 0) == 0);
  return false;
}

std::string shape_str(const Shape& s) {
  std::string o = "[";
  for (int i = 0; i < int(s.size()); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

// ---------------------------------------------------------------- the model's towers
struct Target {
  const Bert* bert = nullptr;  // hf-bert
  const MlmHead* mlm = nullptr;  // hf-bert: the mlm task's head, when the model has one
  const Clip* clip = nullptr;  // hf-clip
  std::string prefix;          // of the tower in the model's names
};

Target find_target(const Module& model, const std::string& format, const std::string& who) {
  Target t;
  if (format == "hf-bert") {
    std::shared_ptr<Module> text = model.child("text");
    t.bert = dynamic_cast<const Bert*>(text.get());
    if (!t.bert)
      throw Error(str_cat(who, ": format hf-bert is BERT's weights for a text tower, and this model has ",
                          text ? "a text tower of another type (set model.text.type: bert)" : "no text tower"));
    t.prefix = "text.";
    t.mlm = dynamic_cast<const MlmHead*>(model.child("mlm_head").get());
  } else if (format == "hf-clip") {
    t.clip = dynamic_cast<const Clip*>(&model);
    if (!t.clip) throw Error(str_cat(who, ": format hf-clip is a whole CLIP, and this model is not one (model.type: clip)"));
  } else {
    throw Error(str_cat(who, ": unknown format '", format, "' (loom, hf-bert or hf-clip)"));
  }
  return t;
}

Rules rules_for(const Target& t, const std::string& format) {
  return format == "hf-bert" ? bert_rules(t.bert->config, t.prefix, t.mlm) : clip_rules(t.clip->config);
}

// ---------------------------------------------------------------- config.json
struct ConfigReader {
  const json& j;
  std::string file, section;  // section: "" or "text_config." for messages
  int64_t integer(const std::string& k) const {
    if (!j.contains(k) || !j[k].is_number_integer())
      throw Error(str_cat(file, ": no integer '", section, k, "' (is this a Hugging Face config.json of the right model?)"));
    return j[k].get<int64_t>();
  }
  double number(const std::string& k, double fallback) const {
    if (!j.contains(k)) return fallback;
    if (!j[k].is_number()) throw Error(str_cat(file, ": '", section, k, "' must be a number"));
    return j[k].get<double>();
  }
  std::string text(const std::string& k, const std::string& fallback) const {
    if (!j.contains(k)) return fallback;
    if (!j[k].is_string()) throw Error(str_cat(file, ": '", section, k, "' must be a string"));
    return j[k].get<std::string>();
  }
  ConfigReader sub(const std::string& k) const {
    if (!j.contains(k) || !j[k].is_object()) throw Error(str_cat(file, ": no object '", k, "' (a CLIPModel config has one)"));
    return ConfigReader{j[k], file, k + "."};
  }
};

// config.json's setting against a tensor of the weights it came with.
void agree(const ConfigReader& c, const std::string& key, const TensorMap& w, const std::string& name, int dim,
           const std::string& weights_file) {
  auto it = w.find(name);
  if (it == w.end()) return;  // reported as missing later
  const int64_t have = it->second.size(dim), said = c.integer(key);
  if (have != said)
    throw Error(str_cat(c.file, " disagrees with ", weights_file, ": '", c.section, key, "' is ", said, " but ", name, " is ",
                        shape_str(it->second.shape())));
}

int64_t count_layers(const TensorMap& w, const std::string& prefix) {
  std::set<int64_t> seen;
  for (const auto& [k, _] : w) {
    if (k.rfind(prefix, 0) != 0) continue;
    const std::string rest = k.substr(prefix.size());
    const size_t dot = rest.find('.');
    try {
      seen.insert(std::stoll(rest.substr(0, dot)));
    } catch (const std::exception&) {
    }
  }
  return int64_t(seen.size());
}

// config.json's setting against the recipe's.
void same(const ConfigReader& c, const std::string& key, double said, const std::string& recipe_key, double recipe) {
  if (std::abs(said - recipe) > 1e-6 * std::max(std::abs(said), std::abs(recipe)))
    throw Error(str_cat(c.file, ": '", c.section, key, "' is ", said, " but the recipe's ", recipe_key, " is ", recipe));
}

std::string act_of(const ConfigReader& c, const std::string& key) {
  const std::string a = c.text(key, "gelu");
  if (a != "gelu" && a != "quick_gelu")
    throw Error(str_cat(c.file, ": '", c.section, key, "' is '", a, "'; loom's towers have gelu (erf) and quick_gelu"));
  return a;
}

void same_act(const ConfigReader& c, const std::string& key, const std::string& recipe_key, const std::string& recipe) {
  const std::string a = act_of(c, key);
  if (a != recipe) throw Error(str_cat(c.file, ": '", c.section, key, "' is ", a, " but the recipe's ", recipe_key, " is ", recipe));
}

void check_bert_config(const ConfigReader& c, const TensorMap& w, const std::string& wf, const TextConfig& t) {
  agree(c, "vocab_size", w, "embeddings.word_embeddings.weight", 0, wf);
  agree(c, "hidden_size", w, "embeddings.word_embeddings.weight", 1, wf);
  agree(c, "max_position_embeddings", w, "embeddings.position_embeddings.weight", 0, wf);
  agree(c, "type_vocab_size", w, "embeddings.token_type_embeddings.weight", 0, wf);
  agree(c, "intermediate_size", w, "encoder.layer.0.intermediate.dense.weight", 0, wf);
  const int64_t layers = count_layers(w, "encoder.layer.");
  if (layers != c.integer("num_hidden_layers"))
    throw Error(str_cat(c.file, " disagrees with ", wf, ": 'num_hidden_layers' is ", c.integer("num_hidden_layers"),
                        " but the weights hold ", layers, " layers"));
  if (c.text("position_embedding_type", "absolute") != "absolute")
    throw Error(str_cat(c.file, ": position_embedding_type '", c.text("position_embedding_type", ""),
                        "'; loom's BERT has absolute positions"));
  same(c, "num_hidden_layers", double(c.integer("num_hidden_layers")), "model.text.layers", double(t.layers));
  same(c, "num_attention_heads", double(c.integer("num_attention_heads")), "model.text.heads", double(t.heads));
  same(c, "layer_norm_eps", c.number("layer_norm_eps", 1e-12), "model.text.norm_eps", t.norm_eps);
  same_act(c, "hidden_act", "model.text.act", t.act);
  if (c.integer("max_position_embeddings") < t.context)
    throw Error(str_cat(c.file, ": max_position_embeddings ", c.integer("max_position_embeddings"),
                        " is shorter than the recipe's model.text.context ", t.context));
}

void check_clip_config(const ConfigReader& root, const TensorMap& w, const std::string& wf, const ClipConfig& m) {
  const ConfigReader t = root.sub("text_config"), v = root.sub("vision_config");
  agree(t, "vocab_size", w, "text_model.embeddings.token_embedding.weight", 0, wf);
  agree(t, "hidden_size", w, "text_model.embeddings.token_embedding.weight", 1, wf);
  agree(t, "max_position_embeddings", w, "text_model.embeddings.position_embedding.weight", 0, wf);
  agree(t, "intermediate_size", w, "text_model.encoder.layers.0.mlp.fc1.weight", 0, wf);
  agree(v, "hidden_size", w, "vision_model.embeddings.class_embedding", 0, wf);
  agree(v, "patch_size", w, "vision_model.embeddings.patch_embedding.weight", 2, wf);
  agree(v, "num_channels", w, "vision_model.embeddings.patch_embedding.weight", 1, wf);
  agree(v, "intermediate_size", w, "vision_model.encoder.layers.0.mlp.fc1.weight", 0, wf);
  agree(root, "projection_dim", w, "visual_projection.weight", 0, wf);
  for (const auto& [c, prefix] : {std::pair{&t, "text_model.encoder.layers."}, {&v, "vision_model.encoder.layers."}}) {
    const int64_t layers = count_layers(w, prefix);
    if (layers != c->integer("num_hidden_layers"))
      throw Error(str_cat(c->file, " disagrees with ", wf, ": '", c->section, "num_hidden_layers' is ",
                          c->integer("num_hidden_layers"), " but the weights hold ", layers, " layers"));
  }
  same(t, "num_hidden_layers", double(t.integer("num_hidden_layers")), "model.text.layers", double(m.text.layers));
  same(t, "num_attention_heads", double(t.integer("num_attention_heads")), "model.text.heads", double(m.text.heads));
  same(t, "layer_norm_eps", t.number("layer_norm_eps", 1e-5), "LayerNorm epsilon (fixed)", 1e-5);
  same_act(t, "hidden_act", "model.text.act", m.text.act);
  if (t.integer("max_position_embeddings") < m.text.context)
    throw Error(str_cat(t.file, ": text_config.max_position_embeddings ", t.integer("max_position_embeddings"),
                        " is shorter than the recipe's model.text.context ", m.text.context));
  same(v, "num_hidden_layers", double(v.integer("num_hidden_layers")), "model.vision.layers", double(m.vision.layers));
  same(v, "num_attention_heads", double(v.integer("num_attention_heads")), "model.vision.heads", double(m.vision.heads));
  same(v, "image_size", double(v.integer("image_size")), "model.vision.image_size", double(m.vision.height()));
  same(v, "layer_norm_eps", v.number("layer_norm_eps", 1e-5), "LayerNorm epsilon (fixed)", 1e-5);
  same_act(v, "hidden_act", "model.vision.act", m.vision.act);
}

// What OpenAI's CLIP layout needs of a loom CLIP; `who` and the key name what to change.
void check_clip_layout(const ClipConfig& c, const std::string& who) {
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) throw Error(str_cat(who, ": a Hugging Face CLIP needs ", what));
  };
  need(c.text.type == "transformer", "model.text.type transformer (the causal tower)");
  need(c.vision.ln_pre, "model.vision.ln_pre: true");
  need(!c.vision.patch_bias, "model.vision.patch_bias: false");
  need(c.vision.pos_embed == "learned", "model.vision.pos_embed: learned");
  need(c.vision.layer_scale_init == 0, "no LayerScale (model.vision.layer_scale_init: 0)");
  need(!c.vision.overlapping(), "non-overlapping patches (no model.vision.stride)");
  need(c.vision.height() == c.vision.width_px(), "a square image_size");
}

// ---------------------------------------------------------------- import
Tensor from_hf(const Rule& r, const std::vector<Tensor>& src, const Tensor& dst) {
  switch (r.kind) {
    case Kind::copy: return src[0];
    case Kind::qkv: return ops::cat({src[0], src[1], src[2]}, 0);
    case Kind::patch_conv: {
      const Tensor& w = src[0];  // [W, C, p, p] -> [W, p, p, C] -> [W, p*p*C]
      if (w.dim() != 4) return w;  // the shape check reports it
      return w.permute({0, 2, 3, 1}).contiguous().reshape({w.size(0), w.size(1) * w.size(2) * w.size(3)});
    }
    case Kind::rows:
      if (src[0].dim() == 2 && dst.dim() == 2 && src[0].size(0) > dst.size(0) && src[0].size(1) == dst.size(1))
        return src[0].narrow(0, 0, dst.size(0)).contiguous();
      return src[0];
  }
  return src[0];
}

fs::path weights_file(const fs::path& p) { return fs::is_directory(p) ? p / "model.safetensors" : p; }

json read_json_object(const fs::path& path) {
  std::ifstream in(path);
  json config;
  try {
    config = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(str_cat(path.string(), ": not JSON (", e.what(), ")"));
  }
  if (!config.is_object()) throw Error(str_cat(path.string(), ": expected a JSON object"));
  return config;
}

// The model's tensors made from the checkpoint's by the rules, every shape checked before anything
// is copied; the rules whose tensors are absent go to rep.missing, the tensors read to `used`.
TensorMap apply_rules(const Rules& rules, const TensorMap& w, const TensorMap& own, const std::string& who,
                      const fs::path& wpath, LoadReport& rep, std::set<std::string>& used) {
  TensorMap state;
  for (const Rule& r : rules.list) {
    std::vector<Tensor> src;
    for (const std::string& h : r.hf) {
      auto it = w.find(h);
      if (it == w.end()) break;
      src.push_back(it->second.to(DType::f32));
    }
    if (src.size() != r.hf.size()) {
      rep.missing.push_back(str_cat(r.hf[src.size()], " (for ", r.loom, ")"));
      continue;
    }
    for (const std::string& h : r.hf) used.insert(h);
    auto dst = own.find(r.loom);
    LOOM_CHECK(dst != own.end(), who, ": loom has no parameter ", r.loom, " (a rule out of date with the model)");
    for (size_t i = 1; i < src.size(); ++i)
      if (!(src[i].shape() == src[0].shape()))
        throw Error(str_cat(who, ": ", wpath.string(), ": ", r.hf[i], " is ", shape_str(src[i].shape()), " but ", r.hf[0],
                            " is ", shape_str(src[0].shape())));
    Tensor t = from_hf(r, src, dst->second);
    if (!(t.shape() == dst->second.shape())) {
      std::string hf_shape = shape_str(src[0].shape());
      if (src.size() == 3) hf_shape += " (each of query, key, value)";
      throw Error(str_cat(who, ": ", wpath.string(), ": ", r.hf[0], " is ", hf_shape, ", but the recipe's model has ",
                          r.loom, " ", shape_str(dst->second.shape()), (src.size() == 3 ? " (fused q, k, v)" : ""),
                          ": the model section does not match the checkpoint"));
    }
    state[r.loom] = t;
  }
  return state;
}

}  // namespace

LoadReport load_pretrained(Module& model, const InitFrom& from) {
  if (from.format == "loom") return load_weights(model, from);
  const std::string who = str_cat("init_from (format ", from.format, ")");
  Target target = find_target(model, from.format, who);
  const fs::path wpath = weights_file(from.path);
  const fs::path cpath = wpath.parent_path() / "config.json";
  if (!fs::exists(wpath)) throw Error(str_cat(who, ": ", wpath.string(), " does not exist (a Hugging Face model directory holds model.safetensors and config.json)"));
  if (!fs::exists(cpath)) throw Error(str_cat(who, ": ", cpath.string(), " does not exist (it says which architecture the weights are)"));
  const json config = read_json_object(cpath);
  SafetensorsFile file = load_safetensors(wpath.string());
  TensorMap w;
  for (auto& [k, t] : file.tensors)  // BertForMaskedLM and friends keep the encoder under "bert."
    w[from.format == "hf-bert" && k.rfind("bert.", 0) == 0 ? k.substr(5) : k] = t;

  const std::string model_type = config.value("model_type", "");
  const std::string want_type = from.format == "hf-bert" ? "bert" : "clip";
  if (!model_type.empty() && model_type != want_type)
    throw Error(str_cat(cpath.string(), ": model_type '", model_type, "', but init_from.format ", from.format,
                        " reads '", want_type, "'"));
  const ConfigReader cr{config, cpath.string(), ""};
  // A BertModel carries no MLM head: the mlm task's then keeps its initial values.
  const bool head_in_file = std::any_of(w.begin(), w.end(), [](const auto& kv) { return kv.first.rfind("cls.predictions.", 0) == 0; });
  const bool fresh_head = target.mlm && !head_in_file;
  if (fresh_head) target.mlm = nullptr;
  if (from.format == "hf-bert") {
    check_bert_config(cr, w, wpath.string(), target.bert->config);
  } else {
    check_clip_layout(target.clip->config, who);
    check_clip_config(cr, w, wpath.string(), target.clip->config);
  }

  const TensorMap own = model.state_dict();
  const Rules rules = rules_for(target, from.format);
  LoadReport rep;
  std::set<std::string> used;
  const TensorMap state = apply_rules(rules, w, own, who, wpath, rep, used);
  std::vector<std::string> not_used;
  for (const auto& [k, _] : w) {
    if (used.count(k)) continue;
    if (unused_key(from.format, k, target.bert ? &target.bert->config : nullptr)) not_used.push_back(k);
    else rep.unexpected.push_back(k);
  }
  if (from.strict && (!rep.missing.empty() || !rep.unexpected.empty())) {
    std::string msg = str_cat(who, ": ", wpath.string(), " does not match the model (strict; init_from.strict: false loads what matches):");
    auto list = [](const std::vector<std::string>& v) {
      std::string s;
      for (size_t i = 0; i < v.size() && i < 8; ++i) s += (i ? ", " : "") + v[i];
      return v.size() > 8 ? s + str_cat(", ... (", v.size(), " in all)") : s;
    };
    if (!rep.missing.empty()) msg += " missing " + list(rep.missing) + ";";
    if (!rep.unexpected.empty()) msg += " unexpected " + list(rep.unexpected);
    throw Error(msg);
  }
  model.load_state_dict(state, /*strict=*/false);
  std::cerr << "loom: loaded " << state.size() << " tensors (" << used.size() << " Hugging Face tensors) from "
            << wpath.string() << " into " << (target.prefix.empty() ? "the model" : target.prefix.substr(0, target.prefix.size() - 1)) << "\n";
  if (!not_used.empty()) std::cerr << "loom:   not used by this model: " << not_used.size() << " tensors (" << not_used.front() << ", ...)\n";
  if (fresh_head) std::cerr << "loom:   mlm_head keeps its initial values (the checkpoint has no cls.predictions.*: a BertModel)\n";
  for (auto& k : rep.missing) std::cerr << "loom:   missing (kept its initial value): " << k << "\n";
  for (auto& k : rep.unexpected) std::cerr << "loom:   unexpected (ignored): " << k << "\n";
  return rep;
}

// ---------------------------------------------------------------- export
HfCheckpoint to_hf(const Module& model, const std::string& format, const data::TextTokenizer* tok) {
  const std::string who = str_cat("export (format ", format, ")");
  const Target target = find_target(model, format, who);
  if (target.clip) check_clip_layout(target.clip->config, who);
  const TensorMap own = model.state_dict();
  HfCheckpoint out;
  for (const Rule& r : rules_for(target, format).list) {
    const Tensor t = own.at(r.loom).to(DType::f32).contiguous();
    switch (r.kind) {
      case Kind::copy:
      case Kind::rows: out.tensors[r.hf[0]] = t; break;
      case Kind::qkv: {
        const int64_t d = t.size(0) / 3;
        for (int64_t i = 0; i < 3; ++i) out.tensors[r.hf[size_t(i)]] = t.narrow(0, i * d, d).contiguous();
        break;
      }
      case Kind::patch_conv: {
        const ViTConfig& v = target.clip->config.vision;  // [W, p*p*C] -> [W, p, p, C] -> [W, C, p, p]
        out.tensors[r.hf[0]] = t.reshape({t.size(0), v.patch, v.patch, v.channels}).permute({0, 3, 1, 2}).contiguous();
        break;
      }
    }
  }
  auto mlp = [](const TextConfig& t) { return int64_t(double(t.width) * t.mlp_ratio); };
  if (target.mlm) {  // BertForMaskedLM keeps the encoder under "bert."
    TensorMap named;
    for (auto& [k, t] : out.tensors) named[k.rfind("cls.", 0) == 0 ? k : "bert." + k] = t;
    out.tensors = std::move(named);
  }
  if (target.bert) {
    const TextConfig& t = target.bert->config;
    out.config = {{"architectures", {target.mlm ? "BertForMaskedLM" : "BertModel"}}, {"model_type", "bert"}, {"vocab_size", t.vocab_size},
                  {"hidden_size", t.width}, {"num_hidden_layers", t.layers}, {"num_attention_heads", t.heads},
                  {"intermediate_size", mlp(t)}, {"hidden_act", t.act}, {"max_position_embeddings", t.context},
                  {"type_vocab_size", t.type_vocab_size}, {"layer_norm_eps", t.norm_eps}, {"pad_token_id", t.pad_id},
                  {"position_embedding_type", "absolute"}, {"hidden_dropout_prob", 0.1},
                  {"attention_probs_dropout_prob", 0.1}, {"initializer_range", 0.02}, {"dtype", "float32"}};
    if (target.mlm) out.config["tie_word_embeddings"] = target.mlm->config.tied;
  } else {
    const ClipConfig& c = target.clip->config;
    json text = {{"model_type", "clip_text_model"}, {"vocab_size", c.text.vocab_size}, {"hidden_size", c.text.width},
                 {"intermediate_size", mlp(c.text)}, {"num_hidden_layers", c.text.layers},
                 {"num_attention_heads", c.text.heads}, {"max_position_embeddings", c.text.context},
                 {"hidden_act", c.text.act}, {"layer_norm_eps", 1e-5}, {"projection_dim", c.embed_dim}};
    if (tok) {
      text["bos_token_id"] = tok->start_token();
      text["eos_token_id"] = tok->end_token();
      text["pad_token_id"] = tok->pad_token();
    }
    const int64_t vmlp = int64_t(double(c.vision.width) * c.vision.mlp_ratio);
    json vision = {{"model_type", "clip_vision_model"}, {"hidden_size", c.vision.width}, {"intermediate_size", vmlp},
                   {"num_hidden_layers", c.vision.layers}, {"num_attention_heads", c.vision.heads},
                   {"num_channels", c.vision.channels}, {"image_size", c.vision.height()}, {"patch_size", c.vision.patch},
                   {"hidden_act", c.vision.act}, {"layer_norm_eps", 1e-5}, {"projection_dim", c.embed_dim}};
    out.config = {{"architectures", {"CLIPModel"}}, {"model_type", "clip"}, {"projection_dim", c.embed_dim},
                  {"logit_scale_init_value", std::log(1.0 / c.init_temperature)}, {"text_config", text},
                  {"vision_config", vision}, {"dtype", "float32"}};
  }
  return out;
}

void export_hf(const Module& model, const std::string& format, const data::TextTokenizer* tok, const std::string& out_dir) {
  HfCheckpoint ck = to_hf(model, format, tok);
  fs::create_directories(out_dir);
  save_safetensors((fs::path(out_dir) / "model.safetensors").string(), ck.tensors, {{"format", "pt"}});
  const fs::path cfg = fs::path(out_dir) / "config.json";
  {
    std::ofstream f(cfg);
    f << ck.config.dump(2) << "\n";
    LOOM_CHECK(f.good(), "writing ", cfg.string(), " failed");
  }
  if (tok && tok->kind() != "bpe") tok->save((fs::path(out_dir) / "tokenizer.json").string());
}

void export_checkpoint(const std::string& checkpoint, const std::string& recipe, const std::string& format,
                       const std::string& out_dir) {
  LOOM_CHECK(fs::is_directory(checkpoint), "loom export: ", checkpoint, " is not a checkpoint directory");
  const fs::path rp = recipe.empty() ? fs::weakly_canonical(fs::path(checkpoint)).parent_path().parent_path() / "recipe.yaml"
                                     : fs::path(recipe);
  LOOM_CHECK(fs::exists(rp), "loom export: no recipe at ", rp.string(), " (give --recipe RECIPE)");
  Config c = Config::load(rp.string());
  c.allow_missing_files();  // the data need not be on this machine
  const Recipe r = Recipe::from(c);
  std::unique_ptr<data::TextTokenizer> tok;
  if (r.needs_text()) tok = data::load_tokenizer((fs::path(checkpoint) / "tokenizer.json").string(), r.tokenizer_type);
  Run run = Run::build(r, std::move(tok));
  load_weights(*run.model, InitFrom{checkpoint, {}, true});
  export_hf(*run.model, format, run.tokenizer.get(), out_dir);
}

}  // namespace loom
