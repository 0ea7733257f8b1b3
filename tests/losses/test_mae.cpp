// MAE: the golden test against the PyTorch reference in scripts/golden/mae_tiny.py (fixture
// tests/fixtures/mae_tiny.safetensors: a non-square 8x12 image, patch 2, learned position tables),
// and the statistics of random masking.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "layers/mae.h"
#include "losses/masked.h"
#include "tests/golden_compare.h"

using namespace loom;
using loom::testing::expect_close;

namespace {

// Must match IMAGE / ENCODER / DECODER / MASK_RATIO in scripts/golden/mae_tiny.py.
struct TinyMae : Module {
  TinyMae() {
    Generator gen(0);
    ViTConfig v;
    v.image_height = 8;
    v.image_width = 12;
    v.image_size = 8;
    v.channels = 1;
    v.patch = 2;
    v.width = 16;
    v.layers = 2;
    v.heads = 2;
    v.mlp_ratio = 2.0;
    visual = std::make_shared<ViT>(v, gen);
    register_module("visual", visual);
    MaeDecoderConfig d;
    d.encoder_width = 16;
    d.width = 8;
    d.layers = 1;
    d.heads = 2;
    d.mlp_ratio = 2.0;
    d.grid_h = 4;
    d.grid_w = 6;
    d.patch_dim = 4;
    d.pos_embed = "learned";
    decoder = std::make_shared<MaeDecoder>(d, gen);
    register_module("mae_decoder", decoder);
  }
  std::shared_ptr<ViT> visual;
  std::shared_ptr<MaeDecoder> decoder;
};

}  // namespace

TEST(MaeGolden, MatchesPyTorch) {
  SafetensorsFile f = load_safetensors(std::string(LOOM_SOURCE_DIR) + "/tests/fixtures/mae_tiny.safetensors");
  auto get = [&](const std::string& key) { return loom::testing::fixture_tensor(f, key); };
  TinyMae m;
  std::map<std::string, Tensor> weights;
  for (const auto& [key, t] : f.tensors)
    if (key.rfind("param/", 0) == 0) weights.emplace(key.substr(6), t);
  ASSERT_EQ(weights.size(), m.state_dict().size());
  m.load_state_dict(weights, /*strict=*/true);

  Tensor images = get("input/images");
  Masking mk = random_masking(m.visual->embed_patches(images), 0.75, get("input/noise"));
  EXPECT_EQ(mk.ids_restore.to_vector<int64_t>(), get("out/ids_restore").to_vector<int64_t>());
  EXPECT_EQ(mk.mask.to_vector<float>(), get("out/mask").to_vector<float>());
  Tensor latent = m.visual->forward_blocks(m.visual->prepend_cls(mk.kept));
  Tensor pred = m.decoder->forward(latent, mk.ids_restore);
  Tensor target = mae_target(ops::patchify(images, 2), /*norm_pix=*/true);
  Tensor loss = masked_mse(pred, target, mk.mask);
  expect_close(pred, get("out/pred"), 1e-5, "pred");
  expect_close(target, get("out/target"), 1e-5, "target");
  expect_close(loss, get("out/loss"), 1e-5, "loss");

  loss.backward();
  int checked = 0;
  for (const auto& [name, p] : m.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name << " got no gradient";
    expect_close(p.grad(), get("grad/" + name), 1e-4, "gradient of " + name);
    ++checked;
  }
  EXPECT_EQ(checked, int(weights.size()));
}

TEST(RandomMasking, IdsRestoreInvertsTheShuffleAndKeptTokensAreTheRightOnes) {
  Generator gen(5);
  const int64_t B = 3, N = 10, W = 2;
  Tensor x = ops::randn({B, N, W}, gen);
  Tensor noise = ops::rand({B, N}, gen, DType::f64);
  Masking m = random_masking(x, 0.6, noise);  // K = 4
  ASSERT_EQ(m.kept.shape(), (Shape{B, 4, W}));
  auto restore = m.ids_restore.to_vector<int64_t>(), keep = m.ids_keep.to_vector<int64_t>();
  auto xs = x.to_vector<float>(), kept = m.kept.contiguous().to_vector<float>();
  auto mask = m.mask.to_vector<float>();
  Tensor shuffle = ops::argsort(noise, 1);
  auto sh = shuffle.to_vector<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t n = 0; n < N; ++n) EXPECT_EQ(sh[size_t(b * N + restore[size_t(b * N + n)])], n);  // shuffle[restore[n]] = n
    for (int64_t k = 0; k < 4; ++k) {
      const int64_t src = keep[size_t(b * 4 + k)];
      EXPECT_EQ(mask[size_t(b * N + src)], 0.f);
      for (int64_t w = 0; w < W; ++w) EXPECT_EQ(kept[size_t((b * 4 + k) * W + w)], xs[size_t((b * N + src) * W + w)]);
    }
    float masked = 0;
    for (int64_t n = 0; n < N; ++n) masked += mask[size_t(b * N + n)];
    EXPECT_EQ(masked, float(N - 4));
  }
  EXPECT_THROW(random_masking(x, 1.0, noise), OpError);
  EXPECT_THROW(random_masking(x, 0.5, ops::rand({B, N + 1}, gen)), OpError);
}

// Each patch is masked with the stated probability: over many draws the masked counts per position
// pass a chi-square test, for a short sequence and for one long enough that 24-bit noise would tie.
TEST(RandomMasking, EveryPatchIsMaskedWithTheStatedProbability) {
  for (int64_t N : {16, 4096}) {
    const double ratio = 0.75;
    const int64_t B = N == 16 ? 4000 : 64, rounds = N == 16 ? 1 : 40;
    const int64_t K = int64_t(double(N) * (1.0 - ratio));
    std::vector<double> kept(size_t(N), 0.0);
    Generator gen(11);
    Tensor x = Tensor::zeros({B, N, 1});
    for (int64_t r = 0; r < rounds; ++r) {
      Masking m = random_masking(x, ratio, ops::rand({B, N}, gen, DType::f64));
      auto mask = m.mask.to_vector<float>();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t n = 0; n < N; ++n) kept[size_t(n)] += 1.0 - mask[size_t(b * N + n)];
    }
    const double draws = double(B * rounds), expect = draws * double(K) / double(N);
    double chi2 = 0;
    for (double k : kept) chi2 += (k - expect) * (k - expect) / expect;
    // N - 1 degrees of freedom; the bound is the 0.999 quantile (Wilson-Hilferty), so a fair
    // sampler fails with probability 1/1000 for this fixed seed, and it passes.
    const double dof = double(N - 1), z = 3.09;
    const double bound = dof * std::pow(1.0 - 2.0 / (9.0 * dof) + z * std::sqrt(2.0 / (9.0 * dof)), 3.0);
    EXPECT_LT(chi2, bound) << "N=" << N << ": masking is not uniform over positions";
    // The first and last positions in particular (ties broken by index would favour the first).
    const double sd = std::sqrt(draws * (double(K) / double(N)) * (1.0 - double(K) / double(N)));
    EXPECT_LT(std::abs(kept.front() - expect), 4 * sd) << "N=" << N;
    EXPECT_LT(std::abs(kept.back() - expect), 4 * sd) << "N=" << N;
  }
}

// Structured masking (AudioMAE's time and frequency options): on a 4 x 6 grid keeping 8 patches, time
// masking keeps exactly two whole columns (of 4), frequency masking one whole row (of 6) and two
// patches of another; every column (row) is kept about equally often; random is ops::rand itself.
TEST(RandomMasking, TimeAndFrequencyMaskWholeColumnsAndRows) {
  const int64_t B = 600, gh = 4, gw = 6, N = gh * gw;
  Tensor x = Tensor::zeros({B, N, 1});
  for (const char* mode : {"time", "frequency"}) {
    Generator gen(3);
    const bool time = std::string(mode) == "time";
    Masking m = random_masking(x, 0.66, mask_noise(B, gh, gw, mode, gen));  // K = floor(24 * 0.34) = 8
    auto mask = m.mask.to_vector<float>();
    std::vector<double> kept_per_group(size_t(time ? gw : gh), 0.0);
    for (int64_t b = 0; b < B; ++b) {
      int whole = 0, partial = 0;
      for (int64_t g = 0; g < (time ? gw : gh); ++g) {
        int kept = 0;
        const int64_t size = time ? gh : gw;
        for (int64_t e = 0; e < size; ++e) {
          const int64_t n = time ? e * gw + g : g * gw + e;
          kept += mask[size_t(b * N + n)] == 0.f;
        }
        whole += kept == size;
        partial += kept > 0 && kept < size;
        kept_per_group[size_t(g)] += kept;
      }
      if (time) EXPECT_EQ(whole, 2) << mode << " sample " << b;  // 8 = two columns of 4
      else EXPECT_TRUE(whole == 1 && partial == 1) << mode << " sample " << b;  // 8 = a row of 6 and 2
      if (::testing::Test::HasFailure()) break;
    }
    const double expect = 8.0 * double(B) / double(kept_per_group.size());
    for (double k : kept_per_group) EXPECT_NEAR(k, expect, 0.15 * expect) << mode;
  }
  Generator a(9), b(9);
  EXPECT_EQ(mask_noise(2, gh, gw, "random", a).to_vector<double>(), ops::rand({2, N}, b, DType::f64).to_vector<double>());
  Generator g(1);
  EXPECT_THROW(mask_noise(2, gh, gw, "diagonal", g), Error);
}
