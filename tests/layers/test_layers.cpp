// Layers: initialisation, f64 gradient checks, text pooling, drop-path, position embeddings.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <set>

#include "tests/layers/gradient_check.h"
#include "layers/audio.h"
#include "layers/clip.h"

using namespace loom;
using namespace loom::testing_layers;

namespace {

// The causal text tower of a CLIP (the default text.type).
const TextTransformer& causal(const Clip& m) { return dynamic_cast<const TextTransformer&>(*m.text); }

struct Stats {
  double mean = 0, std = 0, min = 1e300, max = -1e300;
};
Stats stats(const Tensor& t) {
  std::vector<double> v = t.to_vector<double>();
  Stats s;
  for (double x : v) {
    s.mean += x;
    s.min = std::min(s.min, x);
    s.max = std::max(s.max, x);
  }
  s.mean /= double(v.size());
  for (double x : v) s.std += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(s.std / double(v.size()));
  return s;
}

BlockConfig small_block(double ls = 0.0, double drop = 0.0) {
  BlockConfig c;
  c.width = 8;
  c.heads = 2;
  c.mlp_ratio = 2.0;
  c.layer_scale_init = ls;
  c.drop_path = drop;
  c.total_layers = 2;
  return c;
}

TextConfig small_text() {
  TextConfig c;
  c.vocab_size = 11;
  c.context = 6;
  c.width = 8;
  c.layers = 2;
  c.heads = 2;
  return c;
}

}  // namespace

// ---- initialisation (open_clip) ----

TEST(Init, FollowsOpenClip) {
  ClipConfig c;  // the recipe's default sizes: widths 128, 4 + 2 layers
  c.text.vocab_size = 512;
  Generator gen(0);
  Clip m(c, gen);
  const double w = 128;
  auto expect_std = [](const Tensor& t, double want, const char* what) {
    Stats s = stats(t);
    EXPECT_NEAR(s.mean, 0.0, 4 * want / std::sqrt(double(t.numel()))) << what;
    EXPECT_NEAR(s.std, want, 0.05 * want) << what;
  };
  expect_std(causal(m).token_embedding, 0.02, "token_embedding");
  expect_std(causal(m).pos_embed, 0.01, "text pos_embed");
  expect_std(m.visual->cls_token, std::pow(w, -0.5) , "cls_token");  // 128 samples: loose
  expect_std(m.visual->pos_embed, std::pow(w, -0.5), "vision pos_embed");
  for (auto* blocks : {m.visual->blocks.get(), causal(m).blocks.get()}) {
    const double layers = blocks == m.visual->blocks.get() ? 4 : 2;
    for (size_t i = 0; i < blocks->size(); ++i) {
      Block& b = (*blocks)[i];
      expect_std(b.attn->qkv->weight, std::pow(w, -0.5), "qkv");
      expect_std(b.attn->proj->weight, std::pow(w, -0.5) * std::pow(2 * layers, -0.5), "attn proj");
      expect_std(b.mlp->fc1->weight, std::pow(2 * w, -0.5), "fc1");
      expect_std(b.mlp->fc2->weight, std::pow(w, -0.5) * std::pow(2 * layers, -0.5), "fc2");
      for (const Tensor* bias : {&b.attn->qkv->bias, &b.attn->proj->bias, &b.mlp->fc1->bias, &b.mlp->fc2->bias})
        EXPECT_EQ(stats(*bias).max, 0.0);
      EXPECT_EQ(stats(b.ln1->weight).min, 1.0);
      EXPECT_EQ(stats(b.ln1->weight).max, 1.0);
      EXPECT_EQ(stats(b.ln2->bias).max, 0.0);
    }
  }
  expect_std(m.visual_proj->weight, std::pow(w, -0.5), "visual_proj");
  expect_std(m.text_proj->weight, std::pow(w, -0.5), "text_proj");
  // PatchEmbed: PyTorch's default U(±1/√in), in = 4·4·1; bias zeros.
  Stats pe = stats(m.visual->patch_embed->proj->weight);
  const double bound = 1.0 / 4.0;
  EXPECT_LE(pe.max, bound);
  EXPECT_GE(pe.min, -bound);
  EXPECT_NEAR(pe.std, bound / std::sqrt(3.0), 0.05 * bound);
  EXPECT_EQ(stats(m.visual->patch_embed->proj->bias).max, 0.0);
  // Same seed, same model.
  Generator gen2(0);
  Clip m2(c, gen2);
  EXPECT_EQ(causal(m).token_embedding.to_vector<float>(), causal(m2).token_embedding.to_vector<float>());
}

TEST(Init, LayerScale) {
  Generator gen(1);
  Block b(small_block(0.1), gen);
  ASSERT_TRUE(b.ls1.defined());
  EXPECT_EQ(stats(b.ls2).min, float(0.1));
  EXPECT_EQ(stats(b.ls2).max, float(0.1));
  Block plain(small_block(), gen);
  EXPECT_FALSE(plain.ls1.defined());
  EXPECT_EQ(plain.named_parameters().size() + 2, b.named_parameters().size());
}

// ---- forward shapes and errors ----

TEST(Layers, LinearMatchesHandComputation) {
  Generator gen(2);
  Linear l(3, 2, true, gen, 1.0);
  {
    NoGradGuard ng;
    l.bias.copy_(Tensor::from(std::vector<double>{0.5, -1.0}, {2}));
  }
  Tensor x = Tensor::from(std::vector<double>{1, 2, 3}, {1, 3}, DType::f32);
  std::vector<float> w = l.weight.to_vector<float>(), y = l.forward(x).to_vector<float>();
  for (int o = 0; o < 2; ++o)
    EXPECT_NEAR(y[o], w[o * 3] * 1 + w[o * 3 + 1] * 2 + w[o * 3 + 2] * 3 + (o ? -1.0 : 0.5), 1e-5);
  Linear nb(3, 2, false, gen);
  EXPECT_FALSE(nb.bias.defined());
  EXPECT_EQ(nb.named_parameters().size(), 1u);
}

// The stage-by-stage ViT (what MAE drops tokens between) computes what the whole one does, on a
// non-square grid too; block_outputs ends with the same tokens.
TEST(Layers, ViTStagesEqualTheWholeTowerOnANonSquareGrid) {
  Generator gen(4);
  ViTConfig vc;
  vc.image_height = 8;
  vc.image_width = 12;
  vc.channels = 2;
  vc.patch = 4;
  vc.width = 8;
  vc.layers = 2;
  vc.heads = 2;
  for (const char* pos : {"learned", "sincos"}) {
    vc.pos_embed = pos;
    ViT v(vc, gen);
    EXPECT_EQ(v.pos_embed.shape(), (Shape{1 + 2 * 3, 8})) << pos;
    Tensor img = ops::randn({3, 2, 8, 12}, gen);
    Tensor whole = v.forward_tokens(img);
    Tensor staged = v.forward_blocks(v.prepend_cls(v.embed_patches(img)));
    EXPECT_EQ(whole.to_vector<float>(), staged.to_vector<float>()) << pos;
    auto outs = v.block_outputs(img);
    ASSERT_EQ(outs.size(), 2u);
    EXPECT_EQ(outs.back().to_vector<float>(), whole.to_vector<float>()) << pos;
    EXPECT_THROW(v.forward(ops::randn({3, 2, 12, 8}, gen)), OpError) << "a transposed image must not pass";
  }
  // sin-cos rows: the first half encodes the column, the second the row, on a 2x3 grid.
  Tensor pe = sincos_pos_embed_2d(8, 2, 3, false);
  auto half = [&](int64_t r, int64_t which) { return pe.select(0, r).narrow(0, which * 4, 4).contiguous().to_vector<float>(); };
  EXPECT_EQ(half(1, 0), half(4, 0));  // (0,1) and (1,1): same column
  EXPECT_NE(half(1, 1), half(4, 1));
  EXPECT_EQ(half(3, 1), half(5, 1));  // (1,0) and (1,2): same row
  EXPECT_NE(half(3, 0), half(5, 0));
}

TEST(Layers, AstOverlappingPatchesMakeAConvolutionsGrid) {
  // AST's grid: 16x16 patches every 10 pixels on 128 x 1024 are 12 x 101 patches.
  AudioTransformerConfig ast;
  EXPECT_EQ(ast.grid_f(), 8);
  ast.stride = 10;
  EXPECT_EQ(ast.grid_f(), 12);
  EXPECT_EQ(ast.grid_t(), 101);
  // A small one: 10 x 13 with patch 4, stride 3 -> 3 x 4 patches. The first patch embedding is the
  // projection of the top-left 4x4 pixels, the next one's starts three columns on.
  Generator gen(7);
  AudioTransformerConfig c;
  c.mel_bins = 10, c.frames = 13, c.patch = 4, c.stride = 3, c.width = 8, c.layers = 1, c.heads = 2;
  for (const char* pos : {"learned", "sincos"}) {
    c.pos_embed = pos;
    AudioTransformer a(c, gen);
    EXPECT_EQ(a.pos_embed.shape(), (Shape{1 + 3 * 4, 8})) << pos;
    Tensor spec = ops::randn({2, 1, 10, 13}, gen);
    EXPECT_EQ(a.forward(spec).shape(), (Shape{2, 8}));
    Tensor emb = a.patch_embed->forward(spec);  // [2, 12, 8]
    for (int64_t k : {0, 1, 4}) {                // patches (0,0), (0,1), (1,0)
      const int64_t top = (k / 4) * 3, left = (k % 4) * 3;
      Tensor px = spec.narrow(2, top, 4).narrow(3, left, 4).contiguous().reshape({2, 16});
      Tensor want = a.patch_embed->proj->forward(px);
      Tensor got = emb.select(1, k).contiguous();
      const auto w = want.to_vector<float>(), g = got.to_vector<float>();
      for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(g[i], w[i], 1e-5) << pos << " patch " << k;
    }
  }
  c.stride = 5;  // beyond the patch: gaps, refused
  EXPECT_THROW(AudioTransformer(c, gen), Error);
}

TEST(Layers, ShapesAndErrors) {
  Generator gen(3);
  ViTConfig vc;
  vc.image_size = 8;
  vc.channels = 3;
  vc.patch = 2;
  vc.width = 8;
  vc.layers = 1;
  vc.heads = 2;
  ViT v(vc, gen);
  Tensor img = ops::randn({2, 3, 8, 8}, gen);
  EXPECT_EQ(v.forward_tokens(img).shape(), (Shape{2, 17, 8}));
  EXPECT_EQ(v.forward(img).shape(), (Shape{2, 8}));
  // The class token output is row 0 of the token outputs.
  EXPECT_EQ(v.forward(img).to_vector<float>(), v.forward_tokens(img).select(1, 0).contiguous().to_vector<float>());
  EXPECT_THROW(v.forward(ops::randn({2, 1, 8, 8}, gen)), OpError);
  EXPECT_THROW(v.forward(ops::randn({2, 3, 6, 6}, gen)), OpError);
  Attention a(8, 2, gen, 0.1, 0.1);
  EXPECT_THROW(a.forward(ops::randn({2, 3, 6}, gen)), OpError);
  EXPECT_THROW(Attention(8, 3, gen, 0.1, 0.1), Error);
  vc.pos_embed = "rope";
  EXPECT_THROW(ViT(vc, gen), Error);

  TextTransformer t(small_text(), gen);
  Tensor tok = Tensor::from(std::vector<int64_t>{1, 2, 10, 3, 10, 0}, {2, 3});
  EXPECT_EQ(t.forward(tok, 10).shape(), (Shape{2, 8}));  // S < context is fine
  EXPECT_THROW(t.forward(Tensor::zeros({2, 7}, DType::i64), 10), OpError);  // longer than context
  std::string e;
  try {
    t.forward(Tensor::from(std::vector<int64_t>{1, 2, 10, 3, 4, 5}, {2, 3}), 10);
  } catch (const OpError& err) {
    e = err.what();
  }
  EXPECT_NE(e.find("row 1"), std::string::npos) << e;
  EXPECT_NE(e.find("no eot"), std::string::npos) << e;
}

TEST(Layers, ClipFeaturesAreUnitNorm) {
  ClipConfig c;
  c.embed_dim = 6;
  c.vision = {8, 1, 4, 8, 1, 2};
  c.text = small_text();
  Generator gen(4);
  Clip m(c, gen);
  Tensor fi = m.encode_image(ops::randn({3, 1, 8, 8}, gen));
  Tensor ft = m.encode_text(Tensor::from(std::vector<int64_t>{1, 10, 2, 3, 10, 0}, {2, 3}), 10);
  EXPECT_EQ(fi.shape(), (Shape{3, 6}));
  EXPECT_EQ(ft.shape(), (Shape{2, 6}));
  for (const Tensor& f : {fi, ft})
    for (float n : ops::sum(ops::mul(f, f), {1}).to_vector<float>()) EXPECT_NEAR(n, 1.0, 1e-5);
}

// ---- sin-cos position embeddings ----

TEST(Layers, SincosPosEmbedMatchesMae) {
  const int64_t W = 16, G = 3;
  Tensor pe = sincos_pos_embed_2d(W, G, true);
  ASSERT_EQ(pe.shape(), (Shape{1 + G * G, W}));
  std::vector<float> v = pe.to_vector<float>();
  for (int64_t k = 0; k < W; ++k) EXPECT_EQ(v[size_t(k)], 0.f);  // class-token row
  // MAE: omega_k = 1/10000^(k/(W/4)); dims [0, W/2) encode the column (sin then cos), [W/2, W) the row.
  for (int64_t i = 0; i < G; ++i)
    for (int64_t j = 0; j < G; ++j) {
      const float* row = v.data() + (1 + i * G + j) * W;
      for (int64_t k = 0; k < W / 4; ++k) {
        const double omega = std::pow(10000.0, -double(k) / double(W / 4));
        EXPECT_NEAR(row[k], std::sin(j * omega), 1e-6);
        EXPECT_NEAR(row[W / 4 + k], std::cos(j * omega), 1e-6);
        EXPECT_NEAR(row[W / 2 + k], std::sin(i * omega), 1e-6);
        EXPECT_NEAR(row[3 * W / 4 + k], std::cos(i * omega), 1e-6);
      }
    }
  EXPECT_EQ(sincos_pos_embed_2d(W, G, false).shape(), (Shape{G * G, W}));
  EXPECT_THROW(sincos_pos_embed_2d(6, 2, false), Error);
}

// ---- gradient checks in f64 ----

TEST(Gradient, BlockF64) {
  for (double ls : {0.0, 0.3}) {
    for (bool causal : {false, true}) {
      Generator gen(5);
      Block b(small_block(ls), gen);
      b.to(DType::f64);
      perturb(b, gen);
      Tensor x = ops::randn({2, 3, 8}, gen, DType::f64).set_requires_grad(true);
      ops::AttentionOptions opt;
      opt.causal = causal;
      auto leaves = b.named_parameters();
      leaves.emplace_back("x", x);
      SCOPED_TRACE(testing::Message() << "layer_scale " << ls << " causal " << causal);
      gradient_check([&] { return b.forward(x, opt); }, leaves);
    }
  }
}

TEST(Gradient, BlockWithDropPathF64) {
  Generator gen(6);
  Block b(small_block(0.0, 0.5), gen);
  b.to(DType::f64);
  perturb(b, gen);
  Tensor x = ops::randn({6, 2, 8}, gen, DType::f64).set_requires_grad(true);
  Generator drop(77);
  auto f = [&] {
    drop.set_state(77, 0);  // the same masks on every evaluation
    return b.forward(x, {}, &drop);
  };
  auto leaves = b.named_parameters();
  leaves.emplace_back("x", x);
  gradient_check(f, leaves);
}

TEST(Gradient, TextTransformerF64) {
  Generator gen(7);
  TextTransformer t(small_text(), gen);
  t.to(DType::f64);
  perturb(t, gen);
  Tensor tok = Tensor::from(std::vector<int64_t>{1, 2, 10, 3, 10, 0, 4, 10, 5, 5, 5, 5}, {2, 6});
  gradient_check([&] { return t.forward(tok, 10); }, t.named_parameters());
}

// ---- text pooling ----

TEST(Text, PoolsAtFirstEotCausally) {
  Generator gen(8);
  TextTransformer t(small_text(), gen);
  const int64_t eot = 10;
  Tensor a = Tensor::from(std::vector<int64_t>{1, 2, eot, 3, 4, 5, 6, eot, 0, 0, 0, 0}, {2, 6});
  // Tokens after the first eot changed (including another eot): same output.
  Tensor b = Tensor::from(std::vector<int64_t>{1, 2, eot, 9, eot, 7, 6, eot, 8, eot, 1, 2}, {2, 6});
  // A token before the eot changed: different output.
  Tensor c = Tensor::from(std::vector<int64_t>{1, 3, eot, 3, 4, 5, 6, eot, 0, 0, 0, 0}, {2, 6});
  std::vector<float> oa = t.forward(a, eot).to_vector<float>(), ob = t.forward(b, eot).to_vector<float>(),
                     oc = t.forward(c, eot).to_vector<float>();
  EXPECT_EQ(oa, ob);
  EXPECT_NE(std::vector<float>(oa.begin(), oa.begin() + 8), std::vector<float>(oc.begin(), oc.begin() + 8));
  EXPECT_EQ(std::vector<float>(oa.begin() + 8, oa.end()), std::vector<float>(oc.begin() + 8, oc.end()));
  // The pooled vector is the eot position's token output: run the prefix alone, pool at its last token.
  Tensor prefix = Tensor::from(std::vector<int64_t>{1, 2, eot}, {1, 3});
  std::vector<float> op = t.forward(prefix, eot).to_vector<float>();
  for (size_t k = 0; k < op.size(); ++k) EXPECT_NEAR(op[k], oa[k], 1e-5);
}

// ---- drop-path ----

TEST(DropPath, OffInEvalAndWithoutGenerator) {
  Generator gen(9);
  Block b(small_block(0.0, 0.5), gen);
  Tensor x = ops::randn({16, 3, 8}, gen);
  Generator drop(1);
  std::vector<float> ref = b.forward(x).to_vector<float>();  // training, no generator: no drop
  b.eval();
  EXPECT_EQ(b.forward(x, {}, &drop).to_vector<float>(), ref);
  EXPECT_EQ(drop.offset(), 0u);  // eval draws nothing
  b.train();
  std::vector<float> dropped = b.forward(x, {}, &drop).to_vector<float>();
  EXPECT_GT(drop.offset(), 0u);
  EXPECT_NE(dropped, ref);
  // Per sample: a sample whose both branches were dropped comes out unchanged; with p = 0.5 and 16
  // samples, some sample keeps a branch and (for this seed) some sample loses both.
  std::vector<float> xv = x.to_vector<float>();
  int identity = 0, changed = 0;
  for (int s = 0; s < 16; ++s) {
    bool same = true;
    for (int k = 0; k < 24; ++k) same = same && dropped[size_t(s * 24 + k)] == xv[size_t(s * 24 + k)];
    identity += same;
    changed += !same;
  }
  EXPECT_GT(identity, 0);
  EXPECT_GT(changed, 0);

  // The whole ViT: eval output with a generator equals the output without one.
  ViTConfig vc;
  vc.image_size = 8;
  vc.patch = 4;
  vc.width = 8;
  vc.layers = 3;
  vc.heads = 2;
  vc.drop_path = 0.3;
  ViT v(vc, gen);
  Tensor img = ops::randn({4, 1, 8, 8}, gen);
  v.eval();
  EXPECT_EQ(v.forward(img, &drop).to_vector<float>(), v.forward(img).to_vector<float>());
  v.train();
  EXPECT_NE(v.forward(img, &drop).to_vector<float>(), v.forward(img).to_vector<float>());
}

// FLIP's patch dropout: in training with a generator, each image keeps round((1 - p) N) patch tokens
// (the class token first, the rest in grid order): the blocks' output equals the blocks on exactly
// those tokens, a dropped patch's position gets no gradient, and evaluation drops nothing.
TEST(PatchDropout, KeepsARandomSubsetOfPatchesInTrainingOnly) {
  Generator gen(12);
  ViTConfig vc;
  vc.image_size = 12;
  vc.patch = 3;  // 16 patches
  vc.width = 8;
  vc.layers = 2;
  vc.heads = 2;
  vc.patch_dropout = 0.5;
  ViT v(vc, gen);
  const Tensor img = ops::randn({5, 1, 12, 12}, gen);
  const int64_t N = 16, K = 8, B = 5;
  Generator drop(3);
  v.eval();
  EXPECT_EQ(v.forward_tokens(img, &drop).shape(), (Shape{B, 1 + N, 8}));
  EXPECT_EQ(drop.offset(), 0u);
  v.train();
  EXPECT_EQ(v.forward_tokens(img).shape(), (Shape{B, 1 + N, 8})) << "no generator: nothing dropped";

  Generator a(3), replay(3);
  const Tensor out = v.forward_tokens(img, &a);
  ASSERT_EQ(out.shape(), (Shape{B, 1 + K, 8}));
  // The same draw by hand: the K smallest of uniform noise per image, sorted, after the class token.
  const std::vector<int64_t> order = ops::argsort(ops::rand({B, N}, replay, DType::f64), 1).to_vector<int64_t>();
  const Tensor all = v.prepend_cls(v.embed_patches(img));
  std::vector<Tensor> rows;
  std::set<int64_t> kept_anywhere;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> kept(order.begin() + b * N, order.begin() + b * N + K);
    std::sort(kept.begin(), kept.end());
    std::vector<int64_t> idx{0};
    for (int64_t k : kept) idx.push_back(k + 1), kept_anywhere.insert(k);
    rows.push_back(ops::index_select(all.select(0, b), 0, Tensor::from(idx, {K + 1})).reshape({1, K + 1, 8}));
  }
  const Tensor ref = v.forward_blocks(ops::cat(rows, 0));
  EXPECT_EQ(out.to_vector<float>(), ref.to_vector<float>());
  // Gradient: on one image, none to the position rows of the patches it dropped.
  Generator again(5), replay1(5);
  const Tensor one = img.narrow(0, 0, 1).contiguous();
  ops::sum(v.forward_tokens(one, &again)).backward();
  const std::vector<int64_t> order1 = ops::argsort(ops::rand({1, N}, replay1, DType::f64), 1).to_vector<int64_t>();
  kept_anywhere = std::set<int64_t>(order1.begin(), order1.begin() + K);
  const Tensor g = v.pos_embed.grad();
  ASSERT_TRUE(g.defined());
  for (int64_t n = 0; n < N; ++n) {
    const std::vector<float> row = g.select(0, n + 1).contiguous().to_vector<float>();
    const bool zero = std::all_of(row.begin(), row.end(), [](float x) { return x == 0.0f; });
    EXPECT_EQ(zero, !kept_anywhere.count(n)) << "patch " << n;
  }
}
