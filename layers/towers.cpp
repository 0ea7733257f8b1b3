#include "layers/towers.h"
#include <algorithm>
#include <cmath>

namespace loom {

Projection::Projection(int64_t in, int64_t out, bool mlp, Generator& gen) {
  // Linear: CLIP's bias-free map, std in^-0.5. MLP: PyTorch's default Linear init, as LAION-CLAP's.
  fc1 = mlp ? std::make_shared<Linear>(in, out, true, gen) : std::make_shared<Linear>(in, out, false, gen, std::pow(double(in), -0.5));
  register_module("fc1", fc1);
  if (mlp) {
    fc2 = std::make_shared<Linear>(out, out, true, gen);
    register_module("fc2", fc2);
  }
}

Tensor Projection::forward(const Tensor& x) const {
  if (!fc2) return fc1->forward(x);
  return fc2->forward(ops::relu(fc1->forward(x)));
}

TowerHead linear_head(int64_t in, int64_t out, Generator& gen) {
  auto l = std::make_shared<Linear>(in, out, false, gen, std::pow(double(in), -0.5));
  const Linear* raw = l.get();  // owned by the model with the head
  return {l, [raw](const Tensor& x) { return raw->forward(x); }};
}

TowerHead projection_head(int64_t in, int64_t out, bool mlp, Generator& gen) {
  auto p = std::make_shared<Projection>(in, out, mlp, gen);
  const Projection* raw = p.get();
  return {p, [raw](const Tensor& x) { return raw->forward(x); }};
}

JointLayers::JointLayers(const std::vector<std::string>& o, int64_t width, int64_t heads, double mlp_ratio, int64_t layers,
                         Generator& gen)
    : over(o) {
  LOOM_CHECK(over.size() >= 2, "joint layers need at least two modalities, got ", over.size());
  LOOM_CHECK(layers >= 1 && heads >= 1 && width % heads == 0, "joint layers: ", layers, " layers of ", heads,
             " heads over width ", width);
  for (const std::string& m : over) types.push_back(register_parameter("type_" + m, ops::mul(ops::randn({width}, gen), 0.02), NoDecay));
  blocks = make_blocks(*this, width, heads, mlp_ratio, layers, 0.0, 0.0, gen);
  norm = std::make_shared<LayerNorm>(width);
  register_module("norm", norm);
  for (const std::string& m : over) {
    norms.push_back(std::make_shared<LayerNorm>(width));
    register_module("norm_" + m, norms.back());
  }
}

size_t JointLayers::index(const std::string& m) const {
  for (size_t i = 0; i < over.size(); ++i)
    if (over[i] == m) return i;
  throw Error(str_cat("the joint layers do not cover the ", m, " tower"));
}

bool JointLayers::covers(const std::string& m) const { return std::find(over.begin(), over.end(), m) != over.end(); }

std::vector<Tensor> JointLayers::forward(const std::vector<Tensor>& tokens, Generator* drop_gen) const {
  LOOM_CHECK(tokens.size() == over.size(), "joint layers over ", over.size(), " modalities, given ", tokens.size());
  std::vector<Tensor> typed;
  std::vector<int64_t> lengths;
  for (size_t i = 0; i < tokens.size(); ++i) {
    typed.push_back(ops::add(tokens[i], types[i]));
    lengths.push_back(tokens[i].size(1));
  }
  Tensor h = ops::cat(typed, 1);
  for (size_t i = 0; i < blocks->size(); ++i) h = (*blocks)[i].forward(h, {}, drop_gen);
  h = norm->forward(h);
  std::vector<Tensor> out;
  int64_t at = 0;
  for (int64_t n : lengths) {
    out.push_back(h.narrow(1, at, n));
    at += n;
  }
  return out;
}

Tensor JointLayers::forward_one(const std::string& m, const Tensor& tokens, Generator* drop_gen) const {
  const size_t i = index(m);
  Tensor h = ops::add(tokens, types[i]);
  for (size_t b = 0; b < blocks->size(); ++b) h = (*blocks)[b].forward(h, {}, drop_gen);
  return norms[i]->forward(h);
}

MultimodalModel::MultimodalModel(const TowerLayout& layout, Generator& gen) : embed_dim_(layout.embed_dim) {
  LOOM_CHECK(!layout.towers.empty(), "a model needs at least one tower");
  for (const TowerLayout::Tower& t : layout.towers) {
    for (const Slot& s : slots_)
      LOOM_CHECK(s.modality != t.modality, "two towers read modality '", t.modality, "'");
    Slot s{t.modality, t.name, t.build(gen), {}};
    LOOM_CHECK(s.tower, "the ", t.modality, " tower was not built");
    register_module(t.name, s.tower);
    slots_.push_back(std::move(s));
  }
  for (const auto& [name, module] : layout.shared) {
    LOOM_CHECK(module, "the shared module '", name, "' was not built");
    register_module(name, module);
    if (auto* f = dynamic_cast<const FusionEncoder*>(module.get())) {
      LOOM_CHECK(!fusion_, "a model has one fusion encoder, and '", name, "' is a second");
      fusion_ = f;
    }
  }
  for (size_t i = 0; i < slots_.size(); ++i) {
    const TowerLayout::Tower& t = layout.towers[i];
    if (!t.head) continue;
    LOOM_CHECK(embed_dim_ > 0, "the ", t.modality, " tower has a head, and the model's embed_dim is ", embed_dim_);
    slots_[i].head = t.head(slots_[i].tower->output_width(), embed_dim_, gen);
    register_module(t.name + "_proj", slots_[i].head.module);
  }
  if (layout.joint.layers > 0) {
    int64_t width = 0;
    for (const std::string& m : layout.joint.over) {
      const auto* v = dynamic_cast<const ViT*>(&tower(m));
      LOOM_CHECK(v, "joint layers read patch tokens, and the ", m, " tower is not a ViT-style tower");
      LOOM_CHECK(width == 0 || v->config.width == width, "joint layers need towers of one width; the ", m, " tower is ",
                 v->config.width, " wide, the first ", width);
      width = v->config.width;
    }
    joint_ = std::make_shared<JointLayers>(layout.joint.over, width, layout.joint.heads, layout.joint.mlp_ratio,
                                           layout.joint.layers, gen);
    register_module("joint", joint_);
  }
  for (const TowerLayout::Scale& sc : layout.scales) {
    LOOM_CHECK(has_tower(sc.a) && has_tower(sc.b), "a temperature for pair [", sc.a, ", ", sc.b,
               "], and the model has towers for: ", [&] {
                 std::string o;
                 for (const Slot& s : slots_) o += (o.empty() ? "" : ", ") + s.modality;
                 return o;
               }());
    LOOM_CHECK(sc.init_temperature > 0, "the initial temperature of pair [", sc.a, ", ", sc.b, "] must be > 0, got ",
               sc.init_temperature);
    scales_.emplace_back(sc, register_parameter(sc.name, Tensor::scalar(std::log(1.0 / sc.init_temperature)), NoDecay));
  }
}

std::vector<std::string> MultimodalModel::modalities() const {
  std::vector<std::string> out;
  for (const Slot& s : slots_) out.push_back(s.modality);
  return out;
}

std::vector<std::string> MultimodalModel::tower_names() const {
  std::vector<std::string> out;
  for (const Slot& s : slots_) out.push_back(s.name);
  return out;
}

bool MultimodalModel::has_tower(const std::string& m) const {
  for (const Slot& s : slots_)
    if (s.modality == m) return true;
  return false;
}

bool MultimodalModel::has_head(const std::string& m) const { return has_tower(m) && slot(m).head.module != nullptr; }

const MultimodalModel::Slot& MultimodalModel::slot(const std::string& m) const {
  for (const Slot& s : slots_)
    if (s.modality == m) return s;
  std::string have;
  for (const Slot& s : slots_) have += (have.empty() ? "" : ", ") + s.modality;
  throw Error(str_cat("the model has no ", m, " tower (its towers: ", have, ")"));
}

Encoder& MultimodalModel::tower(const std::string& m) const { return *slot(m).tower; }
std::shared_ptr<Encoder> MultimodalModel::tower_ptr(const std::string& m) const { return slot(m).tower; }
std::shared_ptr<Module> MultimodalModel::head_ptr(const std::string& m) const { return slot(m).head.module; }

Tensor MultimodalModel::encode(const std::string& m, const Tensor& input, Generator* drop_gen) const {
  return slot(m).tower->encode(input, drop_gen);
}

Tensor MultimodalModel::embed(const std::string& m, const Tensor& input, Generator* drop_gen) const {
  const Slot& s = slot(m);
  LOOM_CHECK(s.head.module, "the ", m, " tower has no head into a shared embedding space (set model.embed_dim)");
  if (joint_ && joint_->covers(m))
    return embed_tokens(m, static_cast<const ViT&>(*s.tower).forward_tokens(input, drop_gen), drop_gen);
  return ops::l2_normalize(s.head.project(s.tower->encode(input, drop_gen)), -1);
}

Tensor MultimodalModel::embed_tokens(const std::string& m, const Tensor& tokens, Generator* drop_gen) const {
  const Slot& s = slot(m);
  LOOM_CHECK(s.head.module, "the ", m, " tower has no head into a shared embedding space (set model.embed_dim)");
  LOOM_CHECK(tokens.dim() == 3 && tokens.size(1) >= 2, "embed_tokens: ", m, " tokens must be [B, 1+K, width], got ",
             tokens.describe());
  Tensor pooled;
  if (joint_ && joint_->covers(m)) {
    Tensor j = joint_->forward_one(m, tokens, drop_gen);
    pooled = ops::mean(j.narrow(1, 1, j.size(1) - 1), {1});  // CAV-MAE: the mean of the patch tokens
  } else {
    pooled = tokens.select(1, 0);  // the class token, as the tower pools
  }
  return ops::l2_normalize(s.head.project(pooled), -1);
}

Tensor MultimodalModel::pair_logit_scale(const std::string& a, const std::string& b) const {
  for (const auto& [sc, t] : scales_)
    if ((sc.a == a && sc.b == b) || (sc.a == b && sc.b == a)) return t;
  return {};
}

}  // namespace loom
