// scaled_dot_product_attention: one recorded op. Where the device's fused kernel takes the
// arguments (kernels/kernel_list.h, ATTENTION: the CPU's blocked kernel in f32/f64 without a bias,
// always; CUDA's flash kernels in bf16/f16 when kernels.attention: flash), it runs without keeping
// the [B, H, Sq, Sk] probabilities, the backward recomputing them; otherwise the composed path
// below, which materialises the probabilities and is the reference for both. self_attention_packed
// takes the fused q/k/v projection as it comes out of the GEMM, so its gradient lands in one buffer.
#include <atomic>
#include <cmath>
#include <optional>
#include "core/ops/common.h"

namespace loom::ops {
using namespace detail;

namespace {

std::atomic<AttentionKernel> g_attention_kernel{AttentionKernel::composed};

// Whether the device's fused kernel is chosen: the CPU's always (its attention_supported decides),
// CUDA's flash kernels when kernels.attention: flash. A bias that needs its own gradient is composed:
// the fused kernels form no dS.
bool fused_chosen(const Tensor& q, const AttentionOptions& opt) {
  if (opt.bias.defined() && opt.bias.requires_grad()) return false;
  return q.device().is_cpu() || attention_kernel() == AttentionKernel::flash;
}

DType accumulation_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

// A [B, H, S, D] view the kernels can read row by row (unit-stride last dim, rows not overlapping), or a copy.
Tensor readable_rows(const Tensor& t) {
  const int64_t rows = t.size(2), cols = t.size(3);
  const bool ok = (cols <= 1 || t.strides()[3] == 1) && (rows <= 1 || t.strides()[2] >= std::max<int64_t>(1, cols));
  return ok ? t : t.contiguous();
}

void validate(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt) {
  check_float_operands("scaled_dot_product_attention", {{"q", q}, {"k", k}, {"v", v}});
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    fail("scaled_dot_product_attention", "q, k, v must be 4-D [B, H, S, D]", {{"q", q}, {"k", k}, {"v", v}});
  const int64_t B = q.size(0), H = q.size(1), Sq = q.size(2), D = q.size(3), Sk = k.size(2);
  if (k.size(0) != B || k.size(1) != H || k.size(3) != D || v.size(0) != B || v.size(1) != H || v.size(2) != Sk)
    fail("scaled_dot_product_attention", "k must be [B, H, Sk, D] and v [B, H, Sk, Dv] matching q [B, H, Sq, D]",
         {{"q", q}, {"k", k}, {"v", v}});
  if (opt.key_padding_mask.defined()) {
    const Tensor& m = opt.key_padding_mask;
    check_device("scaled_dot_product_attention", {{"q", q}, {"key_padding_mask", m}});
    if (m.dtype() != DType::boolean || !(m.shape() == Shape{B, Sk}))
      fail("scaled_dot_product_attention", str_cat("key_padding_mask must be bool [", B, ", ", Sk, "]"),
           {{"k", k}, {"key_padding_mask", m}});
  }
  if (opt.bias.defined()) {
    check_float_operands("scaled_dot_product_attention", {{"q", q}, {"bias", opt.bias}});
    const Shape scores{B, H, Sq, Sk};
    Shape joint;
    if (!broadcast_shape(scores, opt.bias.shape(), joint) || !(joint == scores))
      fail("scaled_dot_product_attention", str_cat("bias must broadcast to [", B, ", ", H, ", ", Sq, ", ", Sk, "]"),
           {{"q", q}, {"bias", opt.bias}});
  }
}

// The composed path: scores, masks, softmax and the product as ops, the probabilities kept.
Tensor composed(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt, double scale) {
  const int64_t B = q.size(0), Sq = q.size(2), Sk = k.size(2);
  Tensor mask;  // bool, broadcastable to [B, H, Sq, Sk]; true = blocked
  if (opt.key_padding_mask.defined()) mask = opt.key_padding_mask.reshape({B, 1, 1, Sk});
  if (opt.causal) {
    Tensor rows = Tensor::arange(Sq, DType::i64, q.device()).reshape({Sq, 1});
    Tensor cols = Tensor::arange(Sk, DType::i64, q.device()).reshape({1, Sk});
    Tensor future = gt(cols, rows).reshape({1, 1, Sq, Sk});
    mask = mask.defined() ? where(mask, mask, future) : future;
  }
  Tensor qd = q.detach(), kd = k.detach(), vd = v.detach();
  Tensor p, out;
  {
    NoGradGuard ng;
    Tensor s = mul(matmul(qd, kd.transpose(-1, -2)), scale);
    if (opt.bias.defined()) s = add(s, opt.bias.detach());
    if (mask.defined()) s = masked_fill(s, mask, -INFINITY);
    // Fully masked rows come out as zeros. Under autocast the softmax runs in f32; its
    // probabilities enter the product in q's dtype, and the softmax backward uses them in f32
    // (dp - Σ dp·p cancels, too coarse in bf16). Without autocast every cast below is a no-op.
    p = softmax(s, -1);
    out = matmul(p.to(q.dtype()), vd);
  }
  const Tensor& bias = opt.bias;
  const bool has_bias = bias.defined();
  const Shape bias_shape = has_bias ? bias.shape() : Shape{};
  const DType bias_dtype = has_bias ? bias.dtype() : q.dtype();
  return autograd::record("scaled_dot_product_attention", {q, k, v, bias}, out,
                          [qd, kd, vd, p, scale, has_bias, bias_shape, bias_dtype](const Tensor& g) {
                            Tensor dv = matmul(p.to(g.dtype()).transpose(-1, -2), g);
                            Tensor dp = matmul(g, vd.transpose(-1, -2)).to(p.dtype());
                            Tensor ds = mul(p, sub(dp, sum(mul(dp, p), {-1}, true)));  // softmax backward
                            Tensor dsq = ds.to(qd.dtype());
                            Tensor dq = mul(matmul(dsq, kd), scale);
                            Tensor dk = mul(matmul(dsq.transpose(-1, -2), qd), scale);
                            Tensor db = has_bias ? sum_to(ds, bias_shape).to(bias_dtype) : Tensor();
                            return std::vector<Tensor>{dq, dk, dv, db};
                          });
}


double scale_of(const Tensor& q, const AttentionOptions& opt) {
  return opt.scale.value_or(1.0 / std::sqrt(double(q.size(3))));
}

// Whether the device's fused kernel takes these arguments (a host-side check, not profiled).
bool fused_takes(const Device& device, const kernels::AttentionArgs& a, bool backward) {
#ifdef LOOM_WITH_CUDA
  if (device.is_cuda()) return kernels::cuda::attention_supported(a, backward);
#endif
  return kernels::cpu::attention_supported(a, backward);
}

// One forward through the fused kernel, with what its backward needs.
struct FusedRun {
  kernels::AttentionArgs a;
  Tensor qd, kd, vd, out, lse, mask, bias;  // kept alive for the views in a
};

// The forward into `out` (a [B, H, Sq, Dv] view of fresh storage), or nothing when the fused kernel
// is not chosen or does not take these tensors (the caller composes).
std::optional<FusedRun> fused_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt,
                                      double scale, const Tensor& out) {
  if (!fused_chosen(q, opt)) return std::nullopt;
  FusedRun r;
  const int64_t B = q.size(0), H = q.size(1), Sq = q.size(2), Sk = k.size(2);
  r.qd = readable_rows(q.detach()), r.kd = readable_rows(k.detach()), r.vd = readable_rows(v.detach());
  r.out = out.detach();
  r.lse = Tensor::empty({B, H, Sq}, accumulation_dtype(q.dtype()), q.device());
  r.mask = opt.key_padding_mask;
  r.bias = opt.bias.defined() ? opt.bias.detach() : Tensor();
  kernels::AttentionArgs& a = r.a;
  a.q = r.qd.view_desc(), a.k = r.kd.view_desc(), a.v = r.vd.view_desc(), a.out = r.out.view_desc();
  a.lse = r.lse.view_desc();
  if (r.mask.defined()) a.key_padding = r.mask.view_desc();
  if (r.bias.defined()) a.bias = broadcast_view(r.bias, {B, H, Sq, Sk});
  a.causal = opt.causal;
  a.scale = scale;
  if (!fused_takes(q.device(), a, false)) return std::nullopt;
  LOOM_KERNEL(q.device(), attention_forward, a);
  return r;
}

// The backward of a fused forward for the output gradient g ([B, H, Sq, Dv]) into the given views
// (fresh storage or slices of one packed gradient): dk and dv written, dq (the accumulation dtype:
// f32 for bf16/f16, as the flash kernels add it up) zeroed here, then added into.
void fused_backward(const FusedRun& r, const Tensor& g, const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  kernels::AttentionArgs b = r.a;
  Tensor gd = readable_rows(g);  // an expanded gradient (sum's backward) is not
  LOOM_KERNEL(dq.device(), fill, dq.view_desc(), 0.0);
  Tensor delta = Tensor::empty(r.lse.shape(), r.lse.dtype(), gd.device());
  b.dout = gd.view_desc(), b.dq = dq.view_desc(), b.dk = dk.view_desc(), b.dv = dv.view_desc();
  b.delta = delta.view_desc();
  if (!fused_takes(gd.device(), b, true)) {  // an odd gradient layout (unaligned rows): made contiguous
    gd = g.contiguous();
    b.dout = gd.view_desc();
  }
  LOOM_CHECK(fused_takes(gd.device(), b, true), "attention backward: the fused kernel does not take the gradient "
             "buffers it took in the forward (dout ", gd.describe(), ", dk ", dk.describe(), ", dv ", dv.describe(), ")");
  LOOM_KERNEL(gd.device(), attention_backward, b);
}

Tensor fused(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt, double scale) {
  // Stored [B, Sq, H, Dv] and returned as its [B, H, Sq, Dv] view: merging the heads back (the
  // usual next step) is then free.
  Tensor out = Tensor::empty({q.size(0), q.size(2), q.size(1), v.size(3)}, q.dtype(), q.device()).permute({0, 2, 1, 3});
  std::optional<FusedRun> run = fused_forward(q, k, v, opt, scale, out);
  if (!run) return Tensor();
  return autograd::record("scaled_dot_product_attention", {q, k, v}, out, [r = std::move(*run)](const Tensor& g) {
    Tensor dk = Tensor::empty(r.kd.shape(), r.kd.dtype(), r.kd.device());
    Tensor dv = Tensor::empty(r.vd.shape(), r.vd.dtype(), r.vd.device());
    Tensor dq = Tensor::empty(r.qd.shape(), accumulation_dtype(r.qd.dtype()), r.qd.device());
    fused_backward(r, g, dq, dk, dv);
    return std::vector<Tensor>{dq.to(r.qd.dtype()), dk, dv};
  });
}

// [B, S, 3, H, D] -> q, k or v as [B, H, S, D] (views)
Tensor packed_part(const Tensor& t, int64_t i) { return t.select(2, i).permute({0, 2, 1, 3}); }

// self_attention_packed through the fused kernel: dk and dv written straight into their slices of
// one [B, S, 3, H, D] gradient, dq converted into the first.
Tensor fused_packed(const Tensor& qkv, const AttentionOptions& opt) {
  const Tensor d = qkv.detach();
  const Tensor q = packed_part(d, 0), k = packed_part(d, 1), v = packed_part(d, 2);
  if (!fused_chosen(q, opt)) return Tensor();
  validate(q, k, v, opt);
  const int64_t B = qkv.size(0), S = qkv.size(1), H = qkv.size(3), Dh = qkv.size(4);
  Tensor out = Tensor::empty({B, S, H, Dh}, qkv.dtype(), qkv.device());
  std::optional<FusedRun> run = fused_forward(q, k, v, opt, scale_of(q, opt), out.permute({0, 2, 1, 3}));
  if (!run) return Tensor();
  return autograd::record("self_attention_packed", {qkv}, out, [r = std::move(*run)](const Tensor& g) {
    const Shape packed{r.qd.size(0), r.qd.size(2), 3, r.qd.size(1), r.qd.size(3)};
    Tensor dqkv = Tensor::empty(packed, r.qd.dtype(), r.qd.device());
    // dq straight into its slice where it accumulates in the input dtype (f32, f64); else converted there.
    const bool in_place = accumulation_dtype(r.qd.dtype()) == r.qd.dtype();
    Tensor dq = in_place ? packed_part(dqkv, 0) : Tensor::empty(r.qd.shape(), accumulation_dtype(r.qd.dtype()), r.qd.device());
    fused_backward(r, g.permute({0, 2, 1, 3}), dq, packed_part(dqkv, 1), packed_part(dqkv, 2));
    if (!in_place) LOOM_KERNEL(dqkv.device(), copy, dq.view_desc(), packed_part(dqkv, 0).view_desc());
    return std::vector<Tensor>{dqkv};
  });
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                    const AttentionOptions& opt_in) {
  LOOM_OP_SCOPE("scaled_dot_product_attention");
  const Tensor q = autocast_lower(q_in), k = autocast_lower(k_in), v = autocast_lower(v_in);
  AttentionOptions opt = opt_in;
  opt.bias = autocast_lower(opt_in.bias);
  validate(q, k, v, opt);
  const double scale = scale_of(q, opt);
  if (Tensor o = fused(q, k, v, opt, scale); o.defined()) return o;
  return composed(q, k, v, opt, scale);
}

Tensor self_attention_packed(const Tensor& qkv_in, const AttentionOptions& opt_in) {
  LOOM_OP_SCOPE("self_attention_packed");
  const Tensor qkv = autocast_lower(qkv_in);
  AttentionOptions opt = opt_in;
  opt.bias = autocast_lower(opt_in.bias);
  check_float_operands("self_attention_packed", {{"qkv", qkv}});
  if (qkv.dim() != 5 || qkv.size(2) != 3)
    fail("self_attention_packed", "qkv must be [B, S, 3, H, D]", {{"qkv", qkv}});
  if (Tensor o = fused_packed(qkv, opt); o.defined()) return o;
  Tensor o = scaled_dot_product_attention(packed_part(qkv, 0), packed_part(qkv, 1), packed_part(qkv, 2), opt);
  return o.permute({0, 2, 1, 3});
}

void set_attention_kernel(AttentionKernel k) { g_attention_kernel.store(k); }
AttentionKernel attention_kernel() { return g_attention_kernel.load(); }

}  // namespace loom::ops
