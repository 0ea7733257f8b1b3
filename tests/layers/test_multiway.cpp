// VLMo's Multiway Transformer (layers/multiway.h): routing by spans, the VL expert only on fused
// sequences, the shared attention, the relative position bias and its gradient.
#include <gtest/gtest.h>
#include <set>
#include "core/autograd.h"
#include "layers/multiway.h"
#include "tests/layers/gradient_check.h"

using namespace loom;
using namespace loom::testing_layers;

namespace {

struct Tiny {
  std::shared_ptr<MultiwayTransformer> shared;
  std::shared_ptr<MultiwayImageTower> image;
  std::shared_ptr<MultiwayTextTower> text;
};

Tiny tiny(bool rel_pos_bias, Generator& gen, int64_t vl_from = 1) {
  MultiwayConfig c;
  c.width = 8;
  c.heads = 2;
  c.layers = 2;
  c.vl_from = vl_from;
  c.mlp_ratio = 2.0;
  c.rel_pos_bias = rel_pos_bias;
  c.grid_h = 2;
  c.grid_w = 3;
  Tiny t;
  t.shared = std::make_shared<MultiwayTransformer>(c, gen);
  ViTConfig v;
  v.image_height = 4;
  v.image_width = 6;
  v.image_size = 4;
  v.channels = 1;
  v.patch = 2;
  t.image = std::make_shared<MultiwayImageTower>(v, t.shared, gen);
  TextConfig tc;
  tc.vocab_size = 9;
  tc.context = 5;
  tc.pad_id = 0;
  t.text = std::make_shared<MultiwayTextTower>(tc, t.shared, gen);
  return t;
}

void nudge(Module& m, const std::string& prefix, Generator& gen) {
  NoGradGuard ng;
  for (auto& [n, p] : m.named_parameters())
    if (n.rfind(prefix, 0) == 0) p.add_(ops::mul(ops::randn(p.shape(), gen, p.dtype()), 0.5));
}

bool same(const Tensor& a, const Tensor& b) { return a.to_vector<double>() == b.to_vector<double>(); }

const Tensor kTokens = Tensor::from(std::vector<int64_t>{1, 5, 6, 2, 0, 1, 7, 2, 0, 0}, {2, 5});

}  // namespace

TEST(Multiway, EachModalityReadsOnlyItsOwnExpert) {
  Generator gen(3);
  Tiny t = tiny(false, gen);
  perturb(*t.shared, gen);
  const Tensor images = ops::randn({2, 1, 4, 6}, gen);
  const Tensor img0 = t.image->forward_tokens(images), txt0 = t.text->forward_tokens(kTokens);
  const Tensor fused0 = t.shared->fuse({{"image", images}, {"text", kTokens}});
  // The text expert of every block: the image path and the last (VL) block of the fused path ignore it.
  nudge(*t.shared, "blocks.1.text.", gen);
  EXPECT_TRUE(same(t.image->forward_tokens(images), img0));
  EXPECT_FALSE(same(t.text->forward_tokens(kTokens), txt0));
  EXPECT_TRUE(same(t.shared->fuse({{"image", images}, {"text", kTokens}}), fused0));
  // Below vl_from the fused sequence's text tokens do take the text expert.
  nudge(*t.shared, "blocks.0.text.", gen);
  EXPECT_TRUE(same(t.image->forward_tokens(images), img0));
  EXPECT_FALSE(same(t.shared->fuse({{"image", images}, {"text", kTokens}}), fused0));
  // The VL expert: only the fused path reads it.
  const Tensor img1 = t.image->forward_tokens(images), txt1 = t.text->forward_tokens(kTokens);
  const Tensor fused1 = t.shared->fuse({{"image", images}, {"text", kTokens}});
  nudge(*t.shared, "blocks.1.vl.", gen);
  EXPECT_TRUE(same(t.image->forward_tokens(images), img1));
  EXPECT_TRUE(same(t.text->forward_tokens(kTokens), txt1));
  EXPECT_FALSE(same(t.shared->fuse({{"image", images}, {"text", kTokens}}), fused1));
  // The shared attention: every path.
  nudge(*t.shared, "blocks.0.attn.", gen);
  EXPECT_FALSE(same(t.image->forward_tokens(images), img1));
  EXPECT_FALSE(same(t.text->forward_tokens(kTokens), txt1));
}

TEST(Multiway, SpansRouteTokensAsPerTokenExperts) {
  // Below vl_from, a [text; image] sequence is attention over all of it, then the text expert on the
  // first T tokens and the image expert on the rest, computed here token by token.
  Generator gen(4);
  BlockConfig c;
  c.width = 8;
  c.heads = 2;
  c.mlp_ratio = 2.0;
  c.total_layers = 1;
  MultiwayBlock b(c, false, gen);
  perturb(b, gen);
  const Tensor x = ops::randn({2, 7, 8}, gen);
  const Tensor got = b.forward(x, {{Expert::text, 3}, {Expert::image, 4}}, true, {}, nullptr);
  const Tensor h = ops::add(x, b.attn->forward(b.ln1->forward(x)));
  for (int64_t s = 0; s < 7; ++s) {
    const Tensor hs = h.narrow(1, s, 1);
    const Tensor want = ops::add(hs, (s < 3 ? *b.text : *b.image).forward(hs));
    const std::vector<float> g = got.narrow(1, s, 1).contiguous().to_vector<float>(), w = want.contiguous().to_vector<float>();
    for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], w[i], 1e-5) << "token " << s;
  }
}

TEST(Multiway, PaddedTextIsIgnoredByTheFusedSequence) {
  Generator gen(5);
  Tiny t = tiny(false, gen);
  perturb(*t.shared, gen);
  const Tensor images = ops::randn({1, 1, 4, 6}, gen);
  const Tensor a = Tensor::from(std::vector<int64_t>{1, 5, 2, 0, 0}, {1, 5});
  const Tensor b = Tensor::from(std::vector<int64_t>{1, 5, 2}, {1, 3});
  const Tensor fa = t.shared->fuse({{"image", images}, {"text", a}}), fb = t.shared->fuse({{"image", images}, {"text", b}});
  // The image tokens (after the text) and the text's real tokens do not see the padding.
  const std::vector<float> x = ops::cat({fa.narrow(1, 0, 3), fa.narrow(1, 5, 7)}, 1).contiguous().to_vector<float>(),
                           y = fb.contiguous().to_vector<float>();
  ASSERT_EQ(x.size(), y.size());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(x[i], y[i], 1e-5);
}

TEST(Multiway, RelativePositionIndexSharesEntriesByOffset) {
  Generator gen(6);
  Tiny t = tiny(true, gen);
  const std::vector<int64_t> idx = t.shared->rel_pos_index.to_vector<int64_t>();
  const int64_t N = 6, Gw = 3, R = (2 * 2 - 1) * (2 * 3 - 1) + 3;
  ASSERT_EQ(int64_t(idx.size()), (N + 1) * (N + 1));
  EXPECT_EQ(int64_t(std::set<int64_t>(idx.begin(), idx.end()).size()), R);  // every entry is used
  auto at = [&](int64_t i, int64_t j) { return idx[size_t(i * (N + 1) + j)]; };
  for (int64_t i = 1; i <= N; ++i)
    for (int64_t j = 1; j <= N; ++j)
      for (int64_t k = 1; k <= N; ++k)
        for (int64_t l = 1; l <= N; ++l) {
          const bool same_offset = (i - 1) / Gw - (j - 1) / Gw == (k - 1) / Gw - (l - 1) / Gw &&
                                   (i - 1) % Gw - (j - 1) % Gw == (k - 1) % Gw - (l - 1) % Gw;
          EXPECT_EQ(at(i, j) == at(k, l), same_offset) << i << "," << j << " vs " << k << "," << l;
        }
  EXPECT_EQ(at(0, 0), R - 1);
  EXPECT_EQ(at(0, 3), R - 3);
  EXPECT_EQ(at(3, 0), R - 2);
}

TEST(Gradient, MultiwayFusedWithRelativePositionBiasF64) {
  Generator gen(7);
  Tiny t = tiny(true, gen);
  t.shared->to(DType::f64);
  t.image->to(DType::f64);
  t.text->to(DType::f64);
  perturb(*t.shared, gen);  // the bias table off zero too
  const Tensor images = ops::randn({2, 1, 4, 6}, gen, DType::f64);
  std::vector<std::pair<std::string, Tensor>> leaves;
  for (auto& p : t.shared->named_parameters())  // the last block's own experts sit out a fused pass
    if (p.first.rfind("blocks.1.image.", 0) != 0 && p.first.rfind("blocks.1.text.", 0) != 0) leaves.push_back(p);
  for (auto& p : t.image->named_parameters()) leaves.emplace_back("image." + p.first, p.second);
  for (auto& p : t.text->named_parameters()) leaves.emplace_back("text." + p.first, p.second);
  gradient_check([&] { return t.shared->fuse({{"image", images}, {"text", kTokens}}); }, leaves);
}

TEST(Gradient, MultiwayImageWithRelativePositionBiasF64) {
  Generator gen(8);
  Tiny t = tiny(true, gen);
  t.shared->to(DType::f64);
  t.image->to(DType::f64);
  perturb(*t.shared, gen);
  const Tensor images = ops::randn({2, 1, 4, 6}, gen, DType::f64);
  gradient_check([&] { return t.image->forward_tokens(images); }, {{"rel_pos_bias", t.shared->rel_pos_table}});
}

TEST(Multiway, RelativePositionBiasRefusesDroppedPatches) {
  Generator gen(9);
  Tiny t = tiny(true, gen);
  const Tensor images = ops::randn({2, 1, 4, 6}, gen);
  const Tensor kept = t.image->embed_patches(images).narrow(1, 0, 3);
  EXPECT_THROW(t.image->forward_blocks(t.image->prepend_cls(kept)), OpError);
}

// VL-BEiT's masked vision-language modelling reads masked patches through the fused sequence: a masked
// patch's pixels are invisible, the text is not, and the mask token gets its gradient. Here with no
// vision-language expert at all (vl_from = layers, BEiT-3 as released): every span its own expert.
TEST(Multiway, MaskedPatchesInTheFusedSequenceHideTheirPixelsAndSeeTheText) {
  Generator gen(10);
  Tiny t = tiny(false, gen, /*vl_from=*/2);
  for (auto& [n, _] : t.shared->named_parameters()) EXPECT_EQ(n.find(".vl."), std::string::npos) << n;
  perturb(*t.shared, gen);
  const Tensor images = ops::randn({2, 1, 4, 6}, gen);
  const Tensor token = ops::randn({8}, gen);
  const Tensor none = Tensor::zeros({2, 6}), mask = Tensor::from(std::vector<float>{0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0}, {2, 6});
  const FusionEncoder::PatchMask unmasked{"image", none, token}, masked{"image", mask, token};
  EXPECT_TRUE(same(t.shared->fuse({{"image", images}, {"text", kTokens}}, nullptr, &unmasked),
                   t.shared->fuse({{"image", images}, {"text", kTokens}})));
  const Tensor h = t.shared->fuse({{"image", images}, {"text", kTokens}}, nullptr, &masked);
  // New pixels under the masked patches (row 0's patch 1 and 5, row 1's patch 0): nothing changes.
  std::vector<float> px = images.to_vector<float>();
  auto shift = [&](int64_t b, int64_t patch) {
    for (int64_t y = 0; y < 2; ++y)
      for (int64_t x = 0; x < 2; ++x) px[size_t(b * 24 + (patch / 3 * 2 + y) * 6 + patch % 3 * 2 + x)] += 3.0f;
  };
  shift(0, 1), shift(0, 5), shift(1, 0);
  EXPECT_TRUE(same(t.shared->fuse({{"image", Tensor::from(px, {2, 1, 4, 6})}, {"text", kTokens}}, nullptr, &masked), h));
  // Another caption changes what the masked patches' states are.
  const Tensor other = Tensor::from(std::vector<int64_t>{1, 3, 4, 2, 0, 1, 8, 8, 2, 0}, {2, 5});
  const Tensor h2 = t.shared->fuse({{"image", images}, {"text", other}}, nullptr, &masked);
  EXPECT_FALSE(same(h.narrow(1, 5 + 1 + 1, 1), h2.narrow(1, 5 + 1 + 1, 1)));
  t.shared->to(DType::f64);
  t.image->to(DType::f64);
  t.text->to(DType::f64);
  Tensor token64 = token.to(DType::f64).detach();
  token64.set_requires_grad(true);
  const Tensor images64 = images.to(DType::f64);
  gradient_check(
      [&] {
        const FusionEncoder::PatchMask m{"image", mask.to(DType::f64), token64};
        return t.shared->fuse({{"image", images64}, {"text", kTokens}}, nullptr, &m);
      },
      {{"mask_token", token64}});
}
