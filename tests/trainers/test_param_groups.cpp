// Parameter groups (optim.groups), layer-wise lr decay (optim.layer_decay) and weight decay as a
// property modules declare when they register a parameter: the lr scale and weight decay each
// parameter receives, against values worked out by hand; the update applies them; errors.
#include <gtest/gtest.h>
#include <cmath>
#include "layers/clap.h"
#include "layers/clip.h"
#include "layers/mae.h"
#include "tests/trainers/tiny_data.h"
#include "trainers/trainer.h"

using namespace loom;
namespace fs = std::filesystem;

namespace {

// The name rule the optimizer used before modules declared it: biases, gains and other 0/1-D
// tensors, embeddings and position/class tokens take no weight decay.
bool old_name_rule_excludes(const std::string& name, const Tensor& p) {
  if (p.dim() <= 1) return true;
  for (const char* k : {"embedding", "pos_embed", "cls_token"})
    if (name.find(k) != std::string::npos) return true;
  return false;
}

std::string with_optim(const fs::path& d, const std::string& optim) {
  std::string text = loom::testing::tiny_clip_recipe(d, 2);
  text.replace(text.find("layers: 1, heads: 2}\n  text:"), 9, "layers: 2");  // a 2-block image tower
  const std::string old = "optim: {type: adamw, lr: 3.0e-3, weight_decay: 0.01, betas: [0.9, 0.98]}\n";
  text.replace(text.find(old), old.size(), optim);
  return text;
}

}  // namespace

TEST(ParamGroups, ModulesDeclareWhatTheOldNameRuleExcluded) {
  Generator g(1);
  ClipConfig c;
  c.vision.layer_scale_init = 0.1;  // LayerScale gains too
  Clip clip(c, g);
  c.text.type = "bert";
  c.text.pool = "pooler";
  Clip with_bert(c, g);
  ClapConfig a;
  a.audio.mel_bins = 16, a.audio.frames = 32, a.audio.patch = 8, a.audio.width = 32, a.audio.layers = 1, a.audio.heads = 2;
  Clap clap(a, g);
  MaeDecoderConfig dc;
  dc.pos_embed = "learned";
  MaeDecoder dec(dc, g);
  for (const Module* m : std::initializer_list<const Module*>{&clip, &with_bert, &clap, &dec}) {
    const std::set<std::string> no_decay = m->no_decay_parameters();
    int64_t excluded = 0;
    for (const auto& [name, p] : m->named_parameters()) {
      EXPECT_EQ(no_decay.count(name) == 1, old_name_rule_excludes(name, p)) << name;
      excluded += old_name_rule_excludes(name, p);
    }
    EXPECT_GT(excluded, 3);
  }
}

TEST(ParamGroups, EachParameterGetsTheLrAndDecayWorkedOutByHand) {
  const fs::path d = loom::testing::make_dataset("param_groups");
  const std::string text = with_optim(
      d, "optim:\n  lr: 1.0e-3\n  weight_decay: 0.1\n  layer_decay: 0.5\n  groups:\n"
         "    - {params: 'text.*', lr_scale: 0.1, weight_decay: 0.0}\n"
         "    - {params: [visual_proj.weight, logit_scale], lr_scale: 2.0, decay: true}\n");
  Config c = Config::parse(text, "groups.yaml");
  Recipe r = Recipe::from(c);
  Trainer t(r, c, (d / "run").string(), false);
  std::map<std::string, ParamSetting> got;
  for (const auto& [name, s] : t.optimizer().settings()) got[name] = s;
  // {name, lr scale, weight decay}: the image tower has L = 2 blocks, the text tower L = 1; layer id
  // 0 before the blocks, i + 1 in block i, L + 1 after; scale 0.5^(L + 1 - id).
  const std::vector<std::tuple<std::string, double, double>> want = {
      {"visual.cls_token", 0.125, 0.0},                  // before the blocks, a token: no decay
      {"visual.pos_embed", 0.125, 0.0},
      {"visual.patch_embed.proj.weight", 0.125, 0.1},
      {"visual.patch_embed.proj.bias", 0.125, 0.0},
      {"visual.blocks.0.attn.qkv.weight", 0.25, 0.1},
      {"visual.blocks.0.ln1.weight", 0.25, 0.0},
      {"visual.blocks.1.mlp.fc2.weight", 0.5, 0.1},
      {"visual.blocks.1.mlp.fc1.bias", 0.5, 0.0},
      {"visual.ln_post.weight", 1.0, 0.0},                // after the blocks
      {"text.token_embedding", 0.1 * 0.25, 0.0},          // group 0 and text's own layer decay
      {"text.blocks.0.attn.qkv.weight", 0.1 * 0.5, 0.0},  // the group's weight decay 0
      {"text.ln_final.weight", 0.1, 0.0},
      {"visual_proj.weight", 2.0, 0.1},                   // group 1
      {"logit_scale", 2.0, 0.1},                          // decay: true overrides the temperature's NoDecay
      {"text_proj.weight", 1.0, 0.1},                     // no group: the optimizer's
  };
  for (const auto& [name, lr_scale, wd] : want) {
    ASSERT_TRUE(got.count(name)) << name;
    EXPECT_DOUBLE_EQ(got[name].lr_scale, lr_scale) << name;
    EXPECT_DOUBLE_EQ(got[name].weight_decay, wd) << name;
  }
  EXPECT_EQ(got.size(), t.model().named_parameters().size());
}

TEST(ParamGroups, TheUpdateUsesEachParametersLrScale) {
  // Adam's first step moves every element by lr × scale (m̂ / √v̂ = ±1), before weight decay.
  Tensor a = Tensor::zeros({3}), b = Tensor::zeros({3});
  a.set_requires_grad(true), b.set_requires_grad(true);
  AdamWConfig c;
  c.lr = 0.1;
  AdamW opt({{"a", a}, {"b", b}}, c, {{1.0, 0.0}, {0.25, 0.0}});
  a.set_grad(Tensor::ones({3})), b.set_grad(Tensor::ones({3}));
  opt.step(c.lr);
  for (float v : a.to_vector<float>()) EXPECT_NEAR(v, -0.1f, 1e-6);
  for (float v : b.to_vector<float>()) EXPECT_NEAR(v, -0.025f, 1e-6);
}

TEST(ParamGroups, RecipeErrorsNameFileLineAndKey) {
  const fs::path d = loom::testing::make_dataset("param_groups_errors");
  auto error = [&](const std::string& optim) {
    try {
      Config c = Config::parse(with_optim(d, optim), "groups.yaml");
      Recipe r = Recipe::from(c);
      Trainer t(r, c, (d / "run").string(), false);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  std::string e = error("optim:\n  groups:\n    - {params: 'text.*', lr_scale: 0.1}\n    - {params: 'vision.*'}\n");
  EXPECT_NE(e.find("groups.yaml:"), std::string::npos) << e;
  EXPECT_NE(e.find("optim.groups.1.params: pattern 'vision.*' matches no parameter"), std::string::npos) << e;
  e = error("optim: {layer_decay: 1.5}\n");
  EXPECT_NE(e.find("optim.layer_decay: must be in (0, 1]"), std::string::npos) << e;
  e = error("optim:\n  groups:\n    - {lr_scale: 0.1}\n");
  EXPECT_NE(e.find("optim.groups.0.params: required key is missing"), std::string::npos) << e;
  e = error("optim:\n  groups:\n    - {params: 'text.*', lr_scael: 0.1}\n");
  EXPECT_NE(e.find("lr_scael"), std::string::npos) << e;
}
