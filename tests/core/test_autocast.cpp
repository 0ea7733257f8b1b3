// Mixed precision (core/autocast.h): which ops lower to bf16, which raise to f32, which promote;
// gradients reach f32 leaves in f32 and agree with the f32 computation to bf16's precision; outside
// a guard nothing is cast and mixed dtypes stay an error.
#include <gtest/gtest.h>
#include <cmath>
#include "core/autocast.h"
#include "core/ops.h"

using namespace loom;
namespace ops = loom::ops;

namespace {

Tensor leaf(const Shape& shape, uint64_t seed, double scale = 1.0) {
  Generator g(seed);
  return ops::mul(ops::randn(shape, g), scale).detach().set_requires_grad();
}

// max |a - b| / (max |b| + tiny): one number per tensor, bf16's 8 bits give ~1e-2.
double relative_error(const Tensor& a, const Tensor& b) {
  const auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  double diff = 0, scale = 1e-30;
  for (size_t i = 0; i < va.size(); ++i) {
    diff = std::max(diff, std::abs(va[i] - vb[i]));
    scale = std::max(scale, std::abs(vb[i]));
  }
  return diff / scale;
}

// A transformer block's shape of computation: LayerNorm, fused-QKV attention, projection, residual
// add, MLP with GELU, residual add, then a loss.
Tensor block_loss(const Tensor& x, const std::vector<Tensor>& w) {
  const int64_t B = x.size(0), S = x.size(1), C = x.size(2), H = 2;
  Tensor h = ops::layer_norm(x, w[0], w[1]);
  Tensor qkv = ops::linear(h, w[2], w[3]).reshape({B, S, 3, H, C / H});
  Tensor a = ops::self_attention_packed(qkv).reshape({B, S, C});
  Tensor r = ops::add(x, ops::linear(a, w[4], w[5]));
  Tensor m = ops::linear(ops::linear(ops::layer_norm(r, w[0], w[1]), w[6], w[7], ops::Activation::gelu), w[8], w[9]);
  Tensor y = ops::add(r, m);
  return ops::mse_loss(y, ops::mul(x, 0.5));
}

std::vector<Tensor> block_weights(int64_t C) {
  return {ops::add(leaf({C}, 1, 0.1), 1.0).detach().set_requires_grad(), leaf({C}, 2, 0.1),
          leaf({3 * C, C}, 3, 0.2), leaf({3 * C}, 4, 0.1), leaf({C, C}, 5, 0.2), leaf({C}, 6, 0.1),
          leaf({2 * C, C}, 7, 0.2), leaf({2 * C}, 8, 0.1), leaf({C, 2 * C}, 9, 0.2), leaf({C}, 10, 0.1)};
}

}  // namespace

TEST(Autocast, GemmsAndAttentionLowerNormsAndLossesRaiseSumsPromote) {
  Tensor x = leaf({4, 6}, 11), w = leaf({5, 6}, 12), b = leaf({5}, 13);
  AutocastGuard guard(DType::bf16);
  ASSERT_EQ(autocast_dtype(), DType::bf16);
  Tensor y = ops::linear(x, w, b);
  EXPECT_EQ(y.dtype(), DType::bf16);
  EXPECT_EQ(ops::matmul(x, w.transpose(0, 1)).dtype(), DType::bf16);
  Tensor q = leaf({1, 2, 3, 4}, 14);
  EXPECT_EQ(ops::scaled_dot_product_attention(q, q, q).dtype(), DType::bf16);
  EXPECT_EQ(ops::layer_norm(y, Tensor(), Tensor()).dtype(), DType::f32);
  EXPECT_EQ(ops::softmax(y, -1).dtype(), DType::f32);
  EXPECT_EQ(ops::sum(y).dtype(), DType::f32);
  EXPECT_EQ(ops::mean(y, {1}).dtype(), DType::f32);
  EXPECT_EQ(ops::l2_normalize(y).dtype(), DType::f32);
  EXPECT_EQ(ops::cross_entropy(y, Tensor::from(std::vector<int64_t>{0, 1, 2, 3}, {4})).dtype(), DType::f32);
  Tensor f = ops::rand({4, 5});
  EXPECT_EQ(ops::add(f, y).dtype(), DType::f32);       // the residual stream stays f32
  EXPECT_EQ(ops::add(y, f).dtype(), DType::f32);
  EXPECT_EQ(ops::cat({y, f}, 0).dtype(), DType::f32);
  EXPECT_EQ(ops::gelu(y).dtype(), DType::bf16);        // not in the table: its input's dtype
  {
    AutocastGuard off(std::nullopt);  // nested guards restore on exit
    EXPECT_FALSE(autocast_dtype().has_value());
    EXPECT_EQ(ops::linear(x, w, b).dtype(), DType::f32);
  }
  EXPECT_EQ(autocast_dtype(), DType::bf16);
}

TEST(Autocast, OutsideAGuardNothingIsCastAndMixedDtypesFail) {
  EXPECT_FALSE(autocast_dtype().has_value());
  Tensor f = ops::rand({3}), h = ops::rand({3}).to(DType::bf16);
  EXPECT_THROW(ops::add(f, h), OpError);
  EXPECT_EQ(ops::layer_norm(h, Tensor(), Tensor()).dtype(), DType::bf16);
  EXPECT_THROW(AutocastGuard(DType::f32), Error);  // only bf16 / f16 are compute dtypes
}

TEST(Autocast, BlockGradientsReachF32LeavesAndMatchF32) {
  const int64_t B = 2, S = 5, C = 8;
  Tensor x32 = leaf({B, S, C}, 20);
  std::vector<Tensor> w32 = block_weights(C);
  Tensor l32 = block_loss(x32, w32);
  l32.backward();

  Tensor x = x32.detach().clone().set_requires_grad();
  std::vector<Tensor> w;
  for (const Tensor& t : w32) w.push_back(t.detach().clone().set_requires_grad());
  Tensor loss;
  {
    AutocastGuard guard(DType::bf16);
    loss = block_loss(x, w);
  }
  EXPECT_EQ(loss.dtype(), DType::f32);
  loss.backward();  // outside the guard, as the trainer does (autograd turns autocast off anyway)
  EXPECT_NEAR(loss.item<double>(), l32.item<double>(), 2e-2 * std::abs(l32.item<double>()));
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(x.grad().dtype(), DType::f32);
  EXPECT_LT(relative_error(x.grad(), x32.grad()), 2e-2);
  for (size_t i = 0; i < w.size(); ++i) {
    ASSERT_TRUE(w[i].grad().defined()) << "weight " << i;
    EXPECT_EQ(w[i].grad().dtype(), DType::f32) << "weight " << i;  // master gradients stay f32
    EXPECT_LT(relative_error(w[i].grad(), w32[i].grad()), 2e-2) << "weight " << i;
  }
}

TEST(Autocast, BackwardInsideAGuardRunsInForwardsDtypes) {
  Tensor x = leaf({3, 4}, 30), w = leaf({2, 4}, 31), b = leaf({2}, 32);
  AutocastGuard guard(DType::bf16);
  Tensor loss = ops::sum(ops::linear(x, w, b));
  loss.backward();  // the bias gradient (a sum in backward) must come back bf16 -> f32, not fail
  EXPECT_EQ(b.grad().dtype(), DType::f32);
  EXPECT_NEAR(b.grad().to_vector<double>()[0], 3.0, 1e-6);
}
