// scaled_dot_product_attention: one recorded op. On the CPU in f32/f64 without an additive bias it
// runs the fused kernel (kernels/cpu/attention.cpp: no [B, H, Sq, Sk] probabilities kept, the
// backward recomputes them); on CUDA in bf16/f16 with kernels.attention: flash, the flash kernels
// (kernels/cuda/flash_attention.cu); otherwise the composed path below, which materialises the
// probabilities and is the reference for both. self_attention_packed takes the
// fused q/k/v projection as it comes out of the GEMM, so its gradient lands in one buffer.
#include <atomic>
#include <cmath>
#include <optional>
#include "core/ops/common.h"
#ifdef LOOM_WITH_CUDA
#include "kernels/cuda/flash_attention.h"
#endif

namespace loom::ops {
using namespace detail;

namespace {

std::atomic<AttentionKernel> g_attention_kernel{AttentionKernel::composed};

bool fused_applies(const Tensor& q, const AttentionOptions& opt) {
  return q.device().is_cpu() && !opt.bias.defined() && (q.dtype() == DType::f32 || q.dtype() == DType::f64);
}

// A [B, H, S, D] view BLAS can read row by row (unit-stride last dim, rows not overlapping), or a copy.
Tensor blas_rows(const Tensor& t) {
  const int64_t rows = t.size(2), cols = t.size(3);
  const bool ok = (cols <= 1 || t.strides()[3] == 1) && (rows <= 1 || t.strides()[2] >= std::max<int64_t>(1, cols));
  return ok ? t : t.contiguous();
}

kernels::View padding_view(const AttentionOptions& opt) {
  return opt.key_padding_mask.defined() ? opt.key_padding_mask.view_desc() : kernels::View{};
}

// The fused path for q, k, v already detached and BLAS-readable; `out` a [B, H, Sq, Dv] view of
// fresh storage. Returns the log-sum-exp the backward needs.
Tensor fused_forward(const Tensor& qd, const Tensor& kd, const Tensor& vd, const AttentionOptions& opt, double scale,
                     const Tensor& out) {
  Tensor lse = Tensor::empty({qd.size(0), qd.size(1), qd.size(2)}, qd.dtype(), qd.device());
  LOOM_CPU_KERNEL(attention_forward, qd.view_desc(), kd.view_desc(), vd.view_desc(), padding_view(opt), opt.causal,
                  scale, out.view_desc(), lse.view_desc());
  return lse;
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

#ifdef LOOM_WITH_CUDA
// The hand-written CUDA flash kernels (kernels/cuda/flash_attention.cu), when chosen
// (kernels.attention: flash) and they take these tensors; an undefined tensor otherwise, and the
// caller composes. An additive bias that needs its own gradient is composed (flash never forms dS).
kernels::cuda::FlashTensor flash_tensor(const Tensor& t) {
  return {t.raw_data(), t.strides()[0], t.strides()[1], t.strides()[2]};
}

// One forward through the flash kernels, with what its backward needs.
struct FlashRun {
  kernels::cuda::FlashParams p;
  Tensor qd, kd, vd, out, lse, mask, bias;  // kept alive for the pointers in p
};

// The forward into `out` (a [B, H, Sq, D] view of fresh storage), or nothing when the kernels are
// not chosen or do not take these tensors (the caller composes).
// Whether the flash kernels are chosen and may take these tensors (the alignment rules are the
// kernels' own, checked once the parameters are built).
bool flash_may_apply(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt) {
  if (!q.device().is_cuda() || attention_kernel() != AttentionKernel::flash) return false;
  if (q.dtype() != DType::bf16 && q.dtype() != DType::f16) return false;
  if (v.size(3) != q.size(3) || (opt.bias.defined() && opt.bias.requires_grad())) return false;
  for (const Tensor* t : {&q, &k, &v})
    if (t->strides()[3] != 1 && t->size(3) > 1) return false;
  return true;
}

std::optional<FlashRun> flash_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt,
                                      double scale, const Tensor& out) {
  if (!flash_may_apply(q, k, v, opt)) return std::nullopt;
  FlashRun r;
  const int64_t B = q.size(0), H = q.size(1), Sq = q.size(2), Sk = k.size(2), D = q.size(3);
  r.qd = q.detach(), r.kd = k.detach(), r.vd = v.detach(), r.out = out.detach();
  r.lse = Tensor::empty({B, H, Sq}, DType::f32, q.device());
  kernels::cuda::FlashParams& p = r.p;
  p.dtype = q.dtype();
  p.B = B, p.H = H, p.Sq = Sq, p.Sk = Sk, p.D = D;
  p.q = flash_tensor(r.qd), p.k = flash_tensor(r.kd), p.v = flash_tensor(r.vd), p.out = flash_tensor(r.out);
  p.lse = r.lse.data_ptr<float>();
  p.scale = float(scale);
  p.causal = opt.causal;
  r.mask = opt.key_padding_mask;
  r.bias = opt.bias.defined() ? opt.bias.detach() : Tensor();
  if (r.mask.defined()) {
    p.key_padding = static_cast<const uint8_t*>(r.mask.raw_data());
    p.key_padding_stride_b = r.mask.strides()[0];
    p.key_padding_stride_k = r.mask.strides()[1];
  }
  if (r.bias.defined()) {
    const kernels::View bv = broadcast_view(r.bias, {B, H, Sq, Sk});
    p.bias = bv.data;
    p.bias_stride_b = bv.strides[0], p.bias_stride_h = bv.strides[1], p.bias_stride_q = bv.strides[2], p.bias_stride_k = bv.strides[3];
  }
  if (!kernels::cuda::flash_attention_supported(p, false)) return std::nullopt;
  (profiler::KernelScope("flash_attention_forward"),
   cuda_kernel("flash_attention_forward", [&] { kernels::cuda::flash_attention_forward(p); }));
  return r;
}

// The backward of a flash forward for the output gradient g ([B, H, Sq, D]): dk and dv written into
// the given views (fresh storage or slices of one packed gradient); dQ returned as the kernels add
// it up, in f32.
Tensor flash_backward(const FlashRun& r, const Tensor& g, const Tensor& dk, const Tensor& dv) {
  kernels::cuda::FlashParams b = r.p;
  // The kernels read dout rows as unit-stride: an expanded gradient (sum's backward) is not.
  Tensor gd = g.size(3) <= 1 || g.strides()[3] == 1 ? g : g.contiguous();
  b.dout = flash_tensor(gd);
  Tensor dq_accum = Tensor::zeros({b.B, b.H, b.Sq, b.D}, DType::f32, gd.device());
  Tensor delta = Tensor::empty({b.B, b.H, b.Sq}, DType::f32, gd.device());
  b.dk = flash_tensor(dk), b.dv = flash_tensor(dv);
  b.dq_accum = dq_accum.data_ptr<float>();
  b.delta = delta.data_ptr<float>();
  if (!kernels::cuda::flash_attention_supported(b, true)) {  // an odd gradient layout: rows made aligned
    gd = g.contiguous();
    b.dout = flash_tensor(gd);
  }
  LOOM_CHECK(kernels::cuda::flash_attention_supported(b, true), "flash attention backward: the gradient buffers are not "
             "aligned as the forward's were (dk ", dk.describe(), ", dv ", dv.describe(), ")");
  (profiler::KernelScope("flash_attention_backward"),
   cuda_kernel("flash_attention_backward", [&] { kernels::cuda::flash_attention_backward(b); }));
  return dq_accum;
}

Tensor flash(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt, double scale) {
  if (!flash_may_apply(q, k, v, opt)) return Tensor();
  Tensor out = Tensor::empty({q.size(0), q.size(2), q.size(1), q.size(3)}, q.dtype(), q.device()).permute({0, 2, 1, 3});
  std::optional<FlashRun> run = flash_forward(q, k, v, opt, scale, out);
  if (!run) return Tensor();
  return autograd::record("scaled_dot_product_attention", {q, k, v}, out, [r = std::move(*run)](const Tensor& g) {
    Tensor dk = Tensor::empty(r.kd.shape(), r.kd.dtype(), r.kd.device());
    Tensor dv = Tensor::empty(r.vd.shape(), r.vd.dtype(), r.vd.device());
    Tensor dq_accum = flash_backward(r, g, dk, dv);
    return std::vector<Tensor>{dq_accum.to(r.qd.dtype()), dk, dv};
  });
}

// self_attention_packed through the flash kernels: dK and dV written straight into their slices of
// one [B, S, 3, H, D] gradient, dQ converted into the first.
Tensor flash_packed(const Tensor& qkv, const AttentionOptions& opt) {
  auto part = [](const Tensor& t, int64_t i) { return t.select(2, i).permute({0, 2, 1, 3}); };
  const Tensor d = qkv.detach();
  const Tensor q = part(d, 0), k = part(d, 1), v = part(d, 2);
  if (!flash_may_apply(q, k, v, opt)) return Tensor();
  validate(q, k, v, opt);
  const int64_t B = qkv.size(0), S = qkv.size(1), H = qkv.size(3), Dh = qkv.size(4);
  Tensor out = Tensor::empty({B, S, H, Dh}, qkv.dtype(), qkv.device());
  std::optional<FlashRun> run = flash_forward(q, k, v, opt, scale_of(q, opt), out.permute({0, 2, 1, 3}));
  if (!run) return Tensor();
  return autograd::record("self_attention_packed", {qkv}, out, [r = std::move(*run), part](const Tensor& g) {
    Tensor dqkv = Tensor::empty({r.p.B, r.p.Sq, 3, r.p.H, r.p.D}, r.qd.dtype(), r.qd.device());
    Tensor dq_accum = flash_backward(r, g.permute({0, 2, 1, 3}), part(dqkv, 1), part(dqkv, 2));
    LOOM_KERNEL(dqkv.device(), copy, dq_accum.view_desc(), part(dqkv, 0).view_desc());  // f32 -> the input dtype
    return std::vector<Tensor>{dqkv};
  });
}
#endif

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                    const AttentionOptions& opt_in) {
  LOOM_OP_SCOPE("scaled_dot_product_attention");
  const Tensor q = autocast_lower(q_in), k = autocast_lower(k_in), v = autocast_lower(v_in);
  AttentionOptions opt = opt_in;
  opt.bias = autocast_lower(opt_in.bias);
  validate(q, k, v, opt);
  const double scale = scale_of(q, opt);
#ifdef LOOM_WITH_CUDA
  if (Tensor o = flash(q, k, v, opt, scale); o.defined()) return o;
#endif
  if (!fused_applies(q, opt)) return composed(q, k, v, opt, scale);

  const int64_t B = q.size(0), H = q.size(1), Sq = q.size(2), Dv = v.size(3);
  Tensor qd = blas_rows(q.detach()), kd = blas_rows(k.detach()), vd = blas_rows(v.detach());
  // Stored [B, Sq, H, Dv] and returned as its [B, H, Sq, Dv] view: merging the heads back (the
  // usual next step) is then free.
  Tensor out = Tensor::empty({B, Sq, H, Dv}, q.dtype(), q.device()).permute({0, 2, 1, 3});
  Tensor lse = fused_forward(qd, kd, vd, opt, scale, out);
  const Tensor od = out.detach(), mask = opt.key_padding_mask;
  const bool causal = opt.causal;
  return autograd::record("scaled_dot_product_attention", {q, k, v}, out,
                          [qd, kd, vd, od, lse, mask, causal, scale](const Tensor& g) {
                            Tensor gd = blas_rows(g);
                            Tensor dq = Tensor::empty(qd.shape(), qd.dtype(), qd.device());
                            Tensor dk = Tensor::empty(kd.shape(), kd.dtype(), kd.device());
                            Tensor dv = Tensor::empty(vd.shape(), vd.dtype(), vd.device());
                            AttentionOptions o;
                            o.key_padding_mask = mask;
                            LOOM_CPU_KERNEL(attention_backward, qd.view_desc(), kd.view_desc(), vd.view_desc(),
                                            padding_view(o), causal, scale, od.view_desc(), lse.view_desc(),
                                            gd.view_desc(), dq.view_desc(), dk.view_desc(), dv.view_desc());
                            return std::vector<Tensor>{dq, dk, dv};
                          });
}

Tensor self_attention_packed(const Tensor& qkv_in, const AttentionOptions& opt_in) {
  LOOM_OP_SCOPE("self_attention_packed");
  const Tensor qkv = autocast_lower(qkv_in);
  AttentionOptions opt = opt_in;
  opt.bias = autocast_lower(opt_in.bias);
  check_float_operands("self_attention_packed", {{"qkv", qkv}});
  if (qkv.dim() != 5 || qkv.size(2) != 3)
    fail("self_attention_packed", "qkv must be [B, S, 3, H, D]", {{"qkv", qkv}});
  // [B, S, 3, H, D] -> q, k, v [B, H, S, D] (views)
  auto part = [](const Tensor& t, int64_t i) { return t.select(2, i).permute({0, 2, 1, 3}); };
#ifdef LOOM_WITH_CUDA
  if (Tensor o = flash_packed(qkv, opt); o.defined()) return o;
#endif
  if (!fused_applies(qkv, opt)) {
    Tensor o = scaled_dot_product_attention(part(qkv, 0), part(qkv, 1), part(qkv, 2), opt);
    return o.permute({0, 2, 1, 3});
  }
  Tensor d = qkv.detach().contiguous();
  Tensor q = part(d, 0), k = part(d, 1), v = part(d, 2);
  validate(q, k, v, opt);
  const double scale = scale_of(q, opt);
  const int64_t B = qkv.size(0), S = qkv.size(1), H = qkv.size(3), Dh = qkv.size(4);
  Tensor out = Tensor::empty({B, S, H, Dh}, qkv.dtype(), qkv.device());
  Tensor lse = fused_forward(q, k, v, opt, scale, out.permute({0, 2, 1, 3}));
  const Tensor od = out.detach(), mask = opt.key_padding_mask;
  const bool causal = opt.causal;
  return autograd::record("self_attention_packed", {qkv}, out, [d, od, lse, mask, causal, scale, part](const Tensor& g) {
    Tensor gd = blas_rows(g.permute({0, 2, 1, 3}));
    Tensor dqkv = Tensor::empty(d.shape(), d.dtype(), d.device());  // every element written by the kernel
    AttentionOptions o;
    o.key_padding_mask = mask;
    LOOM_CPU_KERNEL(attention_backward, part(d, 0).view_desc(), part(d, 1).view_desc(), part(d, 2).view_desc(),
                    padding_view(o), causal, scale, od.permute({0, 2, 1, 3}).view_desc(), lse.view_desc(),
                    gd.view_desc(), part(dqkv, 0).view_desc(), part(dqkv, 1).view_desc(), part(dqkv, 2).view_desc());
    return std::vector<Tensor>{dqkv};
  });
}

void set_attention_kernel(AttentionKernel k) { g_attention_kernel.store(k); }
AttentionKernel attention_kernel() { return g_attention_kernel.load(); }

}  // namespace loom::ops
