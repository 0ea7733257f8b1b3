// The hand-written flash attention kernels (kernels.attention: flash) on the GPU against attention
// composed in f64 on the CPU, forward and every input gradient, on fresh random inputs: ViT's 197
// and 50 tokens, head dims 64 and 128, causal, key padding with a query that sees no key, an
// additive bias, cross-attention with Sq != Sk, q/k/v as slices of one packed projection. The
// profiler confirms the flash kernels ran (not the composed fallback). Skipped without a GPU.
#include <gtest/gtest.h>
#include <cmath>
#include <string>
#include <vector>
#include "core/ops.h"
#include "core/profiler.h"
#include "kernels/cuda/cuda.h"

using namespace loom;

namespace {

struct FlashCase {
  std::string name;
  int64_t B, H, Sq, Sk, D;
  bool causal = false, padding = false, bias = false, packed = false, expanded_grad = false;
};

// The flash kernels for one scope, the default again after (also when an assertion throws).
struct UseFlash {
  UseFlash() { ops::set_attention_kernel(ops::AttentionKernel::flash); }
  ~UseFlash() { ops::set_attention_kernel(ops::AttentionKernel::composed); }
};

// max |got - want| / max |want|.
double relative_error(const Tensor& got, const Tensor& want) {
  const auto g = got.to_vector<double>(), w = want.to_vector<double>();
  double diff = 0, scale = 1e-30;
  for (size_t i = 0; i < g.size(); ++i) {
    const double d = std::abs(g[i] - w[i]);
    if (!(d <= diff)) diff = d;  // a NaN propagates (std::max would drop it) and fails the check
    scale = std::max(scale, std::abs(w[i]));
  }
  return diff / scale;
}

class FlashOnCuda : public ::testing::TestWithParam<FlashCase> {};

TEST_P(FlashOnCuda, MatchesComposedF64OnTheCpu) {
  if (kernels::cuda::device_count() == 0) GTEST_SKIP() << "no GPU";
  const FlashCase& c = GetParam();
  for (DType dt : {DType::bf16, DType::f16}) {
    Generator gen(uint64_t(c.Sq * 131 + c.D));
    const int64_t S = c.Sq;
    // Inputs drawn in f64 and rounded to dt once, so both sides see the same values.
    auto draw = [&](const Shape& s, double sd) { return ops::mul(ops::randn(s, gen, DType::f64), sd).to(dt).to(DType::f64); };
    Tensor qkv = c.packed ? draw({c.B, S, 3, c.H, c.D}, 1.0) : Tensor();
    auto part = [&](int64_t i) { return qkv.select(2, i).permute({0, 2, 1, 3}); };
    Tensor q = c.packed ? part(0) : draw({c.B, c.H, c.Sq, c.D}, 1.0);
    Tensor k = c.packed ? part(1) : draw({c.B, c.H, c.Sk, c.D}, 1.0);
    Tensor v = c.packed ? part(2) : draw({c.B, c.H, c.Sk, c.D}, 1.0);
    // An expanded gradient (every element the same, strides 0) is what sum()'s backward hands over.
    Tensor dout = c.expanded_grad ? draw({1, 1, 1, 1}, 1.0).expand({c.B, c.H, c.Sq, c.D}) : draw({c.B, c.H, c.Sq, c.D}, 1.0);
    ops::AttentionOptions opt;
    opt.causal = c.causal;
    if (c.padding) {  // every 5th key hidden, and in batch 0 key 0 too: under causal its query 0 sees nothing
      std::vector<uint8_t> m(size_t(c.B * c.Sk));
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t j = 0; j < c.Sk; ++j) m[size_t(b * c.Sk + j)] = (j % 5 == 2) || (b == 0 && j == 0);
      opt.key_padding_mask = Tensor::from(m, {c.B, c.Sk}, DType::u8).to(DType::boolean);
    }
    if (c.bias) opt.bias = draw({1, c.H, c.Sq, c.Sk}, 0.5);  // broadcast over the batch (stride 0)

    // Reference: f64 on the CPU, composed.
    std::vector<Tensor> ref_in;
    for (Tensor* t : {&q, &k, &v}) ref_in.push_back(t->detach().clone().set_requires_grad());
    Tensor ref = ops::scaled_dot_product_attention(ref_in[0], ref_in[1], ref_in[2], opt);
    ref.backward(dout);

    // Flash on the GPU, in dt.
    UseFlash flash;
    Device gpu = Device::cuda();
    std::vector<Tensor> in;
    Tensor qkv_gpu;
    if (c.packed) {
      qkv_gpu = qkv.to(dt).to(gpu).set_requires_grad();
      for (int64_t i = 0; i < 3; ++i) in.push_back(qkv_gpu.select(2, i).permute({0, 2, 1, 3}));
    } else {
      for (Tensor* t : {&q, &k, &v}) in.push_back(t->to(dt).to(gpu).set_requires_grad());
    }
    ops::AttentionOptions gopt = opt;
    if (opt.key_padding_mask.defined()) gopt.key_padding_mask = opt.key_padding_mask.to(gpu);
    if (opt.bias.defined()) gopt.bias = opt.bias.to(dt).to(gpu);
    profiler::start();
    Tensor out = ops::scaled_dot_product_attention(in[0], in[1], in[2], gopt);
    Tensor dout_gpu = c.expanded_grad ? dout.contiguous().narrow(0, 0, 1).narrow(1, 0, 1).narrow(2, 0, 1).narrow(3, 0, 1)
                                             .to(dt).to(gpu).expand(dout.shape())
                                       : dout.to(dt).to(gpu);
    out.backward(dout_gpu);
    const profiler::Report report = profiler::stop();
    bool fwd = false, bwd = false;
    for (const auto& r : report.kernels) {
      fwd = fwd || r.name == "attention_forward";
      bwd = bwd || r.name == "attention_backward";
    }
    EXPECT_TRUE(fwd && bwd) << c.name << ": the flash kernels did not run (composed fallback)";

    const std::string what = c.name + (dt == DType::bf16 ? " bf16" : " f16");
    const double tol = dt == DType::bf16 ? 3e-2 : 5e-3;
    EXPECT_LT(relative_error(out.to(Device::cpu()), ref), tol) << what << " out";
    if (c.packed) {
      Tensor g = qkv_gpu.grad().to(Device::cpu());
      for (int64_t i = 0; i < 3; ++i)
        EXPECT_LT(relative_error(g.select(2, i).permute({0, 2, 1, 3}), ref_in[size_t(i)].grad()), 2 * tol)
            << what << " d" << "qkv"[i];
    } else {
      for (int i = 0; i < 3; ++i)
        EXPECT_LT(relative_error(in[size_t(i)].grad().to(Device::cpu()), ref_in[size_t(i)].grad()), 2 * tol)
            << what << " d" << "qkv"[i];
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    CudaOps, FlashOnCuda,
    ::testing::Values(FlashCase{"vit_s197_d64", 2, 3, 197, 197, 64},
                      FlashCase{"vit_s50_d128", 2, 2, 50, 50, 128},
                      FlashCase{"causal_padding_s130", 2, 2, 130, 130, 64, true, true},
                      FlashCase{"cross_bias_70x130_d128", 1, 2, 70, 130, 128, false, true, true},
                      FlashCase{"packed_qkv_s197", 2, 3, 197, 197, 64, false, false, false, true},
                      FlashCase{"batch_bias_causal_d128", 3, 2, 100, 100, 128, true, true, true},
                      FlashCase{"causal_cross_129x65", 2, 2, 129, 65, 64, true},
                      FlashCase{"expanded_grad_s50", 2, 2, 50, 50, 64, false, false, false, false, true}),
    [](const auto& info) { return info.param.name; });

// self_attention_packed on the GPU goes through the flash kernels too, writing dK and dV straight
// into the packed gradient: the same numbers as the f64 reference on the CPU.
TEST(FlashOnCudaPacked, SelfAttentionPackedMatchesF64) {
  if (kernels::cuda::device_count() == 0) GTEST_SKIP() << "no GPU";
  Generator gen(5);
  const int64_t B = 2, S = 197, H = 3, D = 64;
  Tensor qkv = ops::randn({B, S, 3, H, D}, gen, DType::f64).to(DType::bf16).to(DType::f64);
  Tensor dout = ops::randn({B, S, H, D}, gen, DType::f64).to(DType::bf16).to(DType::f64);
  Tensor ref_in = qkv.clone().set_requires_grad();
  Tensor ref = ops::self_attention_packed(ref_in);
  ref.backward(dout);
  UseFlash flash;
  Tensor in = qkv.to(DType::bf16).to(Device::cuda()).set_requires_grad();
  profiler::start();
  Tensor out = ops::self_attention_packed(in);
  out.backward(dout.to(DType::bf16).to(Device::cuda()));
  const profiler::Report report = profiler::stop();
  bool ran = false;
  for (const auto& r : report.kernels) ran = ran || r.name == "attention_backward";
  EXPECT_TRUE(ran) << "the packed path did not use the flash kernels";
  EXPECT_LT(relative_error(out.to(Device::cpu()), ref), 3e-2);
  EXPECT_LT(relative_error(in.grad().to(Device::cpu()), ref_in.grad()), 6e-2);
}

}  // namespace
