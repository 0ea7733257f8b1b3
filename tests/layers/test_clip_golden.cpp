// Golden test: loom's Clip against the PyTorch reference in scripts/golden/clip_tiny.py
// (fixture tests/fixtures/clip_tiny.safetensors): embeddings, loss and every parameter gradient.
// test_layers does not link losses/, so the loss is open_clip's formula written out with core ops;
// tests/losses/test_contrastive.cpp checks loom::clip_loss against the same fixture.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "core/safetensors.h"
#include "layers/clip.h"
#include "tests/golden_compare.h"

using namespace loom;
using loom::testing::expect_close;

namespace {

ClipConfig golden_config() {  // must match VISION / TEXT / EMBED in scripts/golden/clip_tiny.py
  ClipConfig c;
  c.embed_dim = 8;
  c.vision.image_size = 8;
  c.vision.channels = 1;
  c.vision.patch = 4;
  c.vision.width = 16;
  c.vision.layers = 2;
  c.vision.heads = 2;
  c.vision.mlp_ratio = 2.0;
  c.vision.layer_scale_init = 0.5;
  c.text.vocab_size = 20;
  c.text.context = 6;
  c.text.width = 16;
  c.text.layers = 1;
  c.text.heads = 2;
  c.text.mlp_ratio = 2.0;
  return c;
}

constexpr int64_t kEot = 2;

}  // namespace

TEST(ClipGolden, MatchesPyTorch) {
  const std::string path = std::string(LOOM_SOURCE_DIR) + "/tests/fixtures/clip_tiny.safetensors";
  SafetensorsFile f = load_safetensors(path);
  auto get = [&](const std::string& key) { return loom::testing::fixture_tensor(f, key); };

  Generator gen(0);
  Clip clip(golden_config(), gen);
  std::map<std::string, Tensor> weights;
  for (const auto& [key, t] : f.tensors)
    if (key.rfind("param/", 0) == 0) weights.emplace(key.substr(6), t);
  ASSERT_EQ(weights.size(), clip.state_dict().size());
  LoadReport r = clip.load_state_dict(weights, /*strict=*/true);
  EXPECT_TRUE(r.missing.empty() && r.unexpected.empty());

  Tensor img = clip.encode_image(get("input/images"));
  Tensor txt = clip.encode_text(get("input/tokens"), kEot);
  Tensor scale = ops::exp(ops::clamp(clip.logit_scale, std::nullopt, std::log(100.0)));
  Tensor logits = ops::mul(ops::matmul(img, txt.transpose(0, 1)), scale);
  Tensor labels = Tensor::arange(logits.size(0));
  Tensor loss = ops::mul(ops::add(ops::cross_entropy(logits, labels), ops::cross_entropy(logits.transpose(0, 1), labels)), 0.5);
  expect_close(img, get("out/image_features"), 1e-5, "image features");
  expect_close(txt, get("out/text_features"), 1e-5, "text features");
  expect_close(loss, get("out/loss"), 1e-5, "loss");

  loss.backward();
  int checked = 0;
  for (const auto& [name, p] : clip.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name << " got no gradient";
    expect_close(p.grad(), get("grad/" + name), 1e-4, "gradient of " + name);
    ++checked;
  }
  EXPECT_EQ(checked, int(weights.size()));
}
