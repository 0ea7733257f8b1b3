// Activation checkpointing (autograd::checkpoint, model.<tower>.checkpoint_activations): the wrapped
// function runs again in backward with the generator rewound, and a ViT with drop-path, a causal text
// tower and BERT give bitwise the same loss and gradients with every block (or every other block)
// checkpointed as without; the host allocator's peak over a ViT step is lower.
#include <gtest/gtest.h>
#include <map>
#include "core/autograd.h"
#include "core/device.h"
#include "layers/bert.h"
#include "layers/transformer.h"

using namespace loom;

namespace {

std::map<std::string, std::vector<float>> grads_of(const Module& m) {
  std::map<std::string, std::vector<float>> out;
  for (auto& [n, p] : m.named_parameters()) {
    EXPECT_TRUE(p.grad().defined()) << n << " got no gradient";
    if (p.grad().defined()) out[n] = p.grad().to_vector<float>();
  }
  return out;
}

// The loss sum(out * R) of f(model) and the model's gradients, for a model made from `seed`.
template <class Make, class Run>
std::pair<float, std::map<std::string, std::vector<float>>> step(Make make, Run run) {
  auto model = make();
  model->train(true);
  const Tensor out = run(*model);
  Generator rg(99);
  const Tensor loss = ops::sum(ops::mul(out, ops::randn(out.shape(), rg)));
  loss.backward();
  return {loss.item<float>(), grads_of(*model)};
}

ViTConfig tiny_vit(int64_t checkpoint_every) {
  ViTConfig v;
  v.image_size = 8;
  v.channels = 1;
  v.patch = 2;
  v.width = 16;
  v.layers = 3;
  v.heads = 2;
  v.drop_path = 0.3;
  v.checkpoint_every = checkpoint_every;
  return v;
}

}  // namespace

TEST(Checkpoint, RecomputesInBackwardWithTheSameDraws) {
  Generator init(1);
  Tensor x = ops::randn({4, 3}, init, DType::f64), w = ops::randn({3, 3}, init, DType::f64);
  x.set_requires_grad(true);
  w.set_requires_grad(true);
  int calls = 0;
  auto fn = [&](Generator& g) {
    return [&](const Tensor& in) {
      ++calls;
      return ops::dropout(ops::tanh(ops::matmul(in, w)), 0.5, true, g);
    };
  };
  Generator g1(7);
  const Tensor plain = ops::sum(ops::mul(fn(g1)(x), 1.5));
  plain.backward();
  const std::vector<double> gx = x.grad().to_vector<double>(), gw = w.grad().to_vector<double>();
  x.zero_grad();
  w.zero_grad();
  calls = 0;
  Generator g2(7);
  auto f2 = fn(g2);
  const Tensor out = autograd::checkpoint(f2, x, {w}, &g2);
  EXPECT_EQ(calls, 1);
  const uint64_t after = g2.offset();
  Generator later(7);
  g2.set_state(later.seed(), after + 1000);  // the generator moved on before backward
  const Tensor loss = ops::sum(ops::mul(out, 1.5));
  EXPECT_EQ(loss.item<double>(), plain.item<double>());
  loss.backward();
  EXPECT_EQ(calls, 2) << "recomputed once, in backward";
  EXPECT_EQ(x.grad().to_vector<double>(), gx);
  EXPECT_EQ(w.grad().to_vector<double>(), gw);
  EXPECT_EQ(g2.offset(), after + 1000) << "backward leaves the generator where it found it";
  // Without grad mode it is the plain function, run once.
  calls = 0;
  NoGradGuard ng;
  autograd::checkpoint(f2, x, {w}, &g2);
  EXPECT_EQ(calls, 1);
}

TEST(Checkpoint, VitWithDropPathGivesBitwiseTheSameGradients) {
  Generator ig(3);
  const Tensor images = ops::randn({4, 1, 8, 8}, ig);
  auto run_with = [&](int64_t every) {
    return step([&] { Generator g(5); return std::make_shared<ViT>(tiny_vit(every), g); },
                [&](const ViT& v) {
                  Generator drop(11);
                  return v.forward_tokens(images, &drop);
                });
  };
  const auto plain = run_with(0);
  for (int64_t every : {1, 2}) {
    const auto ck = run_with(every);
    EXPECT_EQ(ck.first, plain.first) << "every " << every;
    ASSERT_EQ(ck.second.size(), plain.second.size());
    for (const auto& [n, g] : plain.second) EXPECT_EQ(ck.second.at(n), g) << n << ", every " << every;
  }
}

TEST(Checkpoint, TextTowersGiveBitwiseTheSameGradients) {
  TextConfig t;
  t.vocab_size = 20;
  t.context = 6;
  t.width = 16;
  t.layers = 2;
  t.heads = 2;
  t.eot_id = 19;
  const Tensor tokens = Tensor::from(std::vector<int64_t>{1, 5, 7, 19, 0, 0, 1, 3, 19, 0, 0, 0}, {2, 6});
  for (const std::string type : {"transformer", "bert"}) {
    auto run_with = [&](int64_t every) {
      TextConfig c = t;
      c.type = type;
      c.checkpoint_every = every;
      return step(
          [&]() -> std::shared_ptr<TextEncoder> {
            Generator g(6);
            if (type == "bert") return std::make_shared<Bert>(c, g);
            return std::make_shared<TextTransformer>(c, g);
          },
          [&](const TextEncoder& e) { return e.encode(tokens); });
    };
    const auto plain = run_with(0), ck = run_with(1);
    EXPECT_EQ(ck.first, plain.first) << type;
    for (const auto& [n, g] : plain.second) EXPECT_EQ(ck.second.at(n), g) << type << " " << n;
  }
}

TEST(Checkpoint, KeepsLessOfAVitStepInMemory) {
  if (memory_stats(Device::cpu()).peak_reserved == 0 && memory_stats(Device::cpu()).allocated == 0)
    GTEST_SKIP() << "the CPU caching allocator is off (LOOM_CPU_CACHE=0): no peak to read";
  Generator ig(3);
  const Tensor images = ops::randn({32, 1, 16, 16}, ig);
  auto peak_of = [&](int64_t every) {
    ViTConfig v = tiny_vit(every);
    v.image_size = 16;
    v.width = 64;
    v.layers = 6;
    Generator g(5);
    ViT vit(v, g);
    Generator drop(11);
    reset_peak_memory(Device::cpu());
    const size_t before = memory_stats(Device::cpu()).allocated;
    const Tensor loss = ops::sum(vit.forward_tokens(images, &drop));
    loss.backward();
    return memory_stats(Device::cpu()).peak_allocated - before;
  };
  const size_t plain = peak_of(0), checkpointed = peak_of(1);
  EXPECT_LT(double(checkpointed), 0.7 * double(plain)) << plain << " bytes at the peak without, " << checkpointed << " with";
}
