// scaled_dot_product_attention: one recorded op. This CPU path materialises the probabilities
// (the reference for the CUDA flash kernel); its backward is the standard softmax-attention rule.
#include <cmath>
#include "core/ops/common.h"

namespace loom::ops {
using namespace detail;

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt) {
  LOOM_OP_SCOPE("scaled_dot_product_attention");
  check_float_operands("scaled_dot_product_attention", {{"q", q}, {"k", k}, {"v", v}});
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    fail("scaled_dot_product_attention", "q, k, v must be 4-D [B, H, S, D]", {{"q", q}, {"k", k}, {"v", v}});
  const int64_t B = q.size(0), H = q.size(1), Sq = q.size(2), D = q.size(3), Sk = k.size(2);
  if (k.size(0) != B || k.size(1) != H || k.size(3) != D || v.size(0) != B || v.size(1) != H || v.size(2) != Sk)
    fail("scaled_dot_product_attention", "k must be [B, H, Sk, D] and v [B, H, Sk, Dv] matching q [B, H, Sq, D]",
         {{"q", q}, {"k", k}, {"v", v}});
  const double scale = opt.scale.value_or(1.0 / std::sqrt(double(D)));

  // Additive mask: -inf where a key is padding or in the causal future.
  Tensor mask;  // bool, broadcastable to [B, H, Sq, Sk]; true = blocked
  if (opt.key_padding_mask.defined()) {
    const Tensor& m = opt.key_padding_mask;
    check_device("scaled_dot_product_attention", {{"q", q}, {"key_padding_mask", m}});
    if (m.dtype() != DType::boolean || !(m.shape() == Shape{B, Sk}))
      fail("scaled_dot_product_attention", str_cat("key_padding_mask must be bool [", B, ", ", Sk, "]"),
           {{"k", k}, {"key_padding_mask", m}});
    mask = m.reshape({B, 1, 1, Sk});
  }
  if (opt.causal) {
    Tensor rows = Tensor::arange(Sq).reshape({Sq, 1}), cols = Tensor::arange(Sk).reshape({1, Sk});
    Tensor future = gt(cols, rows).reshape({1, 1, Sq, Sk});
    mask = mask.defined() ? where(mask, mask, future) : future;
  }
  if (opt.bias.defined()) {
    check_float_operands("scaled_dot_product_attention", {{"q", q}, {"bias", opt.bias}});
    const Shape scores{B, H, Sq, Sk};
    Shape joint;
    if (!broadcast_shape(scores, opt.bias.shape(), joint) || !(joint == scores))
      fail("scaled_dot_product_attention", str_cat("bias must broadcast to [", B, ", ", H, ", ", Sq, ", ", Sk, "]"),
           {{"q", q}, {"bias", opt.bias}});
  }

  Tensor qd = q.detach(), kd = k.detach(), vd = v.detach();
  Tensor p, out;
  {
    NoGradGuard ng;
    Tensor s = mul(matmul(qd, kd.transpose(-1, -2)), scale);
    if (opt.bias.defined()) s = add(s, opt.bias.detach());
    if (mask.defined()) s = masked_fill(s, mask, -INFINITY);
    p = softmax(s, -1);  // fully masked rows come out as zeros
    out = matmul(p, vd);
  }
  const Tensor& bias = opt.bias;
  const bool has_bias = bias.defined();
  const Shape bias_shape = has_bias ? bias.shape() : Shape{};
  return autograd::record("scaled_dot_product_attention", {q, k, v, bias}, out,
                          [qd, kd, vd, p, scale, has_bias, bias_shape](const Tensor& g) {
                            Tensor dv = matmul(p.transpose(-1, -2), g);
                            Tensor dp = matmul(g, vd.transpose(-1, -2));
                            Tensor ds = mul(p, sub(dp, sum(mul(dp, p), {-1}, true)));  // softmax backward
                            Tensor dq = mul(matmul(ds, kd), scale);
                            Tensor dk = mul(matmul(ds.transpose(-1, -2), qd), scale);
                            Tensor db = has_bias ? sum_to(ds, bias_shape) : Tensor();
                            return std::vector<Tensor>{dq, dk, dv, db};
                          });
}

}  // namespace loom::ops
