// Module: names, registration checks, state dicts, train/eval, freeze/train_only, dtype conversion.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "layers/clip.h"

using namespace loom;

namespace {

// The causal text tower of a CLIP (the default text.type).
const TextTransformer& causal(const Clip& m) { return dynamic_cast<const TextTransformer&>(*m.text); }

ClipConfig small_config() {
  ClipConfig c;
  c.embed_dim = 8;
  c.vision.image_size = 8;
  c.vision.channels = 2;
  c.vision.patch = 4;
  c.vision.width = 16;
  c.vision.layers = 4;
  c.vision.heads = 2;
  c.text.vocab_size = 30;
  c.text.context = 5;
  c.text.width = 12;
  c.text.layers = 2;
  c.text.heads = 3;
  return c;
}

std::set<std::string> names_of(const Module& m) {
  std::set<std::string> s;
  for (const auto& [n, _] : m.named_parameters()) s.insert(n);
  return s;
}

template <class F> std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Closed-form parameter counts.
int64_t block_count(int64_t w, double ratio, bool ls) {
  const int64_t h = int64_t(double(w) * ratio);
  return 2 * 2 * w + (3 * w * w + 3 * w) + (w * w + w) + (w * h + h) + (h * w + w) + (ls ? 2 * w : 0);
}
int64_t vit_count(const ViTConfig& c) {
  const int64_t grid = c.image_size / c.patch, pp = c.patch * c.patch * c.channels;
  return pp * c.width + c.width + c.width + (c.pos_embed == "learned" ? (1 + grid * grid) * c.width : 0) +
         c.layers * block_count(c.width, c.mlp_ratio, c.layer_scale_init > 0) + 2 * c.width;
}
int64_t text_count(const TextConfig& c) {
  return c.vocab_size * c.width + c.context * c.width + c.layers * block_count(c.width, c.mlp_ratio, false) +
         2 * c.width;
}

}  // namespace

TEST(GlobMatch, Patterns) {
  EXPECT_TRUE(glob_match("*", "visual.blocks.3.attn.qkv.weight"));
  EXPECT_TRUE(glob_match("*.attn.*", "visual.blocks.3.attn.qkv.weight"));
  EXPECT_TRUE(glob_match("visual.*", "visual.cls_token"));
  EXPECT_FALSE(glob_match("visual.*", "text.pos_embed"));
  EXPECT_TRUE(glob_match("visual.blocks.?.mlp.*", "visual.blocks.3.mlp.fc1.bias"));
  EXPECT_FALSE(glob_match("visual.blocks.?.mlp.*", "visual.blocks.13.mlp.fc1.bias"));
  EXPECT_TRUE(glob_match("*bias", "a.b.bias"));
  EXPECT_FALSE(glob_match("*bias", "a.bias.weight"));
  EXPECT_TRUE(glob_match("a**b", "ab"));
  EXPECT_TRUE(glob_match("", ""));
  EXPECT_FALSE(glob_match("", "a"));
  EXPECT_TRUE(glob_match("logit_scale", "logit_scale"));
  EXPECT_FALSE(glob_match("logit_scale", "logit_scale2"));
}

TEST(Module, DottedNamesInClip) {
  Generator gen(1);
  Clip clip(small_config(), gen);
  std::set<std::string> n = names_of(clip);
  for (const char* want : {"visual.blocks.3.attn.qkv.weight", "visual.blocks.0.mlp.fc2.bias", "visual.cls_token",
                           "visual.pos_embed", "visual.patch_embed.proj.weight", "visual.ln_post.weight",
                           "text.token_embedding", "text.pos_embed", "text.blocks.1.ln2.bias", "text.ln_final.bias",
                           "visual_proj.weight", "text_proj.weight", "logit_scale"})
    EXPECT_TRUE(n.count(want)) << want;
  EXPECT_FALSE(n.count("visual_proj.bias"));
  EXPECT_FALSE(n.count("visual.blocks.0.ls1"));  // LayerScale off by default
  // Order as PyTorch: a module's own parameters first, then each child's in registration order.
  auto named = clip.named_parameters();
  EXPECT_EQ(named.front().first, "logit_scale");
  EXPECT_EQ(named[1].first, "visual.cls_token");
  EXPECT_EQ(named.back().first, "text_proj.weight");
  EXPECT_EQ(clip.logit_scale.dim(), 0);
  EXPECT_NEAR(clip.logit_scale.item<double>(), std::log(1 / 0.07), 1e-6);
  for (const auto& [name, p] : named) {
    EXPECT_TRUE(p.requires_grad()) << name;
    EXPECT_TRUE(p.is_leaf()) << name;
    EXPECT_EQ(p.dtype(), DType::f32) << name;
  }
}

TEST(Module, ParameterCountsClosedForm) {
  Generator gen(2);
  ClipConfig c = small_config();
  Clip clip(c, gen);
  EXPECT_EQ(clip.visual->parameter_count(), vit_count(c.vision));
  EXPECT_EQ(clip.text->parameter_count(), text_count(c.text));
  EXPECT_EQ(clip.parameter_count(),
            vit_count(c.vision) + text_count(c.text) + c.vision.width * c.embed_dim + c.text.width * c.embed_dim + 1);
  // LayerScale and sin-cos positions change the count as expected.
  c.vision.layer_scale_init = 0.1;
  c.vision.pos_embed = "sincos";
  ViT v(c.vision, gen);
  EXPECT_EQ(v.parameter_count(), vit_count(c.vision));
  EXPECT_EQ(v.named_buffers().size(), 1u);
  EXPECT_EQ(v.named_buffers()[0].first, "pos_embed");
  EXPECT_FALSE(v.pos_embed.requires_grad());
  EXPECT_TRUE(names_of(v).count("blocks.3.ls2"));
  EXPECT_TRUE(v.state_dict().count("pos_embed"));
  // The default recipe model (DESIGN.md §6) counts as the closed form says too.
  ClipConfig d;
  d.text.vocab_size = 512;
  Clip big(d, gen);
  EXPECT_EQ(big.parameter_count(), vit_count(d.vision) + text_count(d.text) + 128 * 64 * 2 + 1);
}

TEST(Module, RegistrationChecksNames) {
  struct M : Module {
    void add(const std::string& n) { register_parameter(n, Tensor::zeros({2})); }
    void add_buffer(const std::string& n) { register_buffer(n, Tensor::zeros({2})); }
    void add_child(const std::string& n) { register_module(n, std::make_shared<LayerNorm>(2)); }
  } m;
  m.add("w");
  EXPECT_NE(error_of([&] { m.add("w"); }).find("already registered"), std::string::npos);
  EXPECT_NE(error_of([&] { m.add_buffer("w"); }).find("already registered"), std::string::npos);
  EXPECT_NE(error_of([&] { m.add_child("w"); }).find("already registered"), std::string::npos);
  EXPECT_NE(error_of([&] { m.add(""); }).find("empty"), std::string::npos);
  EXPECT_NE(error_of([&] { m.add("a.b"); }).find("'.'"), std::string::npos);
  EXPECT_NE(error_of([&] { m.add_child("x.y"); }).find("'.'"), std::string::npos);
  EXPECT_THROW(m.add_buffer(""), Error);
  m.add_child("norm");
  EXPECT_EQ(names_of(m), (std::set<std::string>{"w", "norm.weight", "norm.bias"}));
}

TEST(Module, MembersShareTheRegistry) {
  Generator gen(3);
  Linear l(3, 2, true, gen, 0.5);
  auto named = l.named_parameters();
  ASSERT_EQ(named.size(), 2u);
  EXPECT_EQ(named[0].second.impl_ptr(), l.weight.impl_ptr());
  EXPECT_EQ(named[1].second.impl_ptr(), l.bias.impl_ptr());
}

TEST(Module, StateDictRoundTrip) {
  Generator g1(10), g2(20);
  ClipConfig c = small_config();
  c.vision.pos_embed = "sincos";
  Clip a(c, g1), b(c, g2);
  auto sa = a.state_dict();
  // Different seeds give different weights.
  EXPECT_NE(a.visual->cls_token.to_vector<float>(), b.visual->cls_token.to_vector<float>());
  // Save as copies (a checkpoint), load into b, compare every tensor and the members.
  std::map<std::string, Tensor> ckpt;
  for (const auto& [k, t] : sa) ckpt.emplace(k, t.detach().clone());
  LoadReport r = b.load_state_dict(ckpt);
  EXPECT_TRUE(r.missing.empty());
  EXPECT_TRUE(r.unexpected.empty());
  auto sb = b.state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  for (const auto& [k, t] : sa) EXPECT_EQ(t.to_vector<float>(), sb.at(k).to_vector<float>()) << k;
  EXPECT_EQ(a.visual->cls_token.to_vector<float>(), b.visual->cls_token.to_vector<float>());
  EXPECT_EQ(causal(a).blocks->operator[](1).attn->qkv->weight.to_vector<float>(),
            (*causal(b).blocks)[1].attn->qkv->weight.to_vector<float>());
  // Loading copies: b's parameters are still its own storage and still leaves requiring grad.
  EXPECT_FALSE(b.logit_scale.same_storage(ckpt.at("logit_scale")));
  EXPECT_TRUE(b.logit_scale.requires_grad());
  // Same outputs.
  a.eval();
  b.eval();
  Tensor img = ops::randn({2, 2, 8, 8}, g1);
  EXPECT_EQ(a.encode_image(img).to_vector<float>(), b.encode_image(img).to_vector<float>());
  // Loading converts dtype (f64 checkpoint into f32 parameters).
  std::map<std::string, Tensor> d;
  for (const auto& [k, t] : sa) d.emplace(k, t.detach().to(DType::f64));
  b.load_state_dict(d);
  EXPECT_EQ(b.logit_scale.dtype(), DType::f32);
}

TEST(Module, LoadStateDictErrors) {
  Generator gen(4);
  Clip m(small_config(), gen);
  auto sd = m.state_dict();
  std::map<std::string, Tensor> st(sd.begin(), sd.end());

  // Shape mismatch: names the key and both shapes; the module is left untouched.
  auto bad = st;
  bad["visual.cls_token"] = Tensor::zeros({15});
  bad["logit_scale"] = Tensor::scalar(9.0);
  std::string e = error_of([&] { m.load_state_dict(bad, false); });
  EXPECT_NE(e.find("visual.cls_token"), std::string::npos) << e;
  EXPECT_NE(e.find("[15]"), std::string::npos) << e;
  EXPECT_NE(e.find("[16]"), std::string::npos) << e;
  EXPECT_NEAR(m.logit_scale.item<double>(), std::log(1 / 0.07), 1e-6);

  // Missing and unexpected keys: strict throws listing them, non-strict reports them.
  auto partial = st;
  partial.erase("text.ln_final.bias");
  partial.erase("visual_proj.weight");
  partial["extra.thing"] = Tensor::zeros({1});
  partial["logit_scale"] = Tensor::scalar(1.5);
  e = error_of([&] { m.load_state_dict(partial, true); });
  EXPECT_NE(e.find("missing"), std::string::npos) << e;
  EXPECT_NE(e.find("text.ln_final.bias"), std::string::npos) << e;
  EXPECT_NE(e.find("visual_proj.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("unexpected"), std::string::npos) << e;
  EXPECT_NE(e.find("extra.thing"), std::string::npos) << e;
  EXPECT_NEAR(m.logit_scale.item<double>(), std::log(1 / 0.07), 1e-6);  // strict failure loads nothing

  LoadReport r = m.load_state_dict(partial, false);
  EXPECT_EQ(r.missing, (std::vector<std::string>{"text.ln_final.bias", "visual_proj.weight"}));
  EXPECT_EQ(r.unexpected, (std::vector<std::string>{"extra.thing"}));
  EXPECT_DOUBLE_EQ(m.logit_scale.item<double>(), 1.5);
}

TEST(Module, TrainEvalRecursive) {
  Generator gen(5);
  Clip m(small_config(), gen);
  EXPECT_TRUE(m.is_training());
  m.eval();
  EXPECT_FALSE(m.is_training());
  EXPECT_FALSE((*m.visual->blocks)[3].is_training());
  EXPECT_FALSE((*m.visual->blocks)[3].attn->qkv->is_training());
  EXPECT_FALSE(causal(m).ln_final->is_training());
  m.train();
  EXPECT_TRUE((*causal(m).blocks)[1].mlp->fc2->is_training());
}

TEST(Module, FreezeAndTrainOnly) {
  Generator gen(6);
  Clip m(small_config(), gen);
  const int total = int(m.named_parameters().size());
  // 4 vision blocks + 2 text blocks, 4 attention params each.
  EXPECT_EQ(m.freeze({"*.attn.*"}), 6 * 4);
  for (const auto& [n, p] : m.named_parameters())
    EXPECT_EQ(p.requires_grad(), n.find(".attn.") == std::string::npos) << n;
  EXPECT_EQ(m.freeze({"text.*", "logit_scale"}), 1 + int(names_of(*m.text).size()));
  EXPECT_FALSE(m.logit_scale.requires_grad());
  EXPECT_FALSE(causal(m).token_embedding.requires_grad());

  const int n = m.train_only({"visual.blocks.*.mlp.*", "visual_proj.*"});
  EXPECT_EQ(n, 4 * 4 + 1);
  int trainable = 0;
  for (const auto& [name, p] : m.named_parameters()) {
    const bool want = glob_match("visual.blocks.*.mlp.*", name) || name == "visual_proj.weight";
    EXPECT_EQ(p.requires_grad(), want) << name;
    trainable += p.requires_grad();
  }
  EXPECT_EQ(trainable, n);
  EXPECT_EQ(m.train_only({"*"}), total);
  EXPECT_EQ(m.freeze({"nothing.matches"}), 0);

  // A frozen parameter gets no gradient; the others do.
  m.freeze({"visual.patch_embed.*"});
  Tensor loss = ops::sum(m.encode_image(ops::randn({2, 2, 8, 8}, gen)));
  loss.backward();
  EXPECT_FALSE(m.visual->patch_embed->proj->weight.grad().defined());
  EXPECT_TRUE(m.visual->cls_token.grad().defined());
  m.zero_grad();
  EXPECT_FALSE(m.visual->cls_token.grad().defined());
}

TEST(Module, ToDtypeConvertsInPlace) {
  Generator gen(7);
  Clip m(small_config(), gen);
  std::vector<float> before = m.visual->cls_token.to_vector<float>();
  m.to(DType::f64);
  for (const auto& [n, t] : m.state_dict()) EXPECT_EQ(t.dtype(), DType::f64) << n;
  EXPECT_EQ(m.visual->cls_token.dtype(), DType::f64);
  EXPECT_TRUE(m.visual->cls_token.requires_grad());
  std::vector<double> after = m.visual->cls_token.to_vector<double>();
  for (size_t i = 0; i < before.size(); ++i) EXPECT_EQ(double(before[i]), after[i]);
  Tensor f = m.encode_image(ops::randn({1, 2, 8, 8}, gen, DType::f64));
  EXPECT_EQ(f.dtype(), DType::f64);
}
