// Matrix products: batched matmul with broadcasting, and linear with fused bias and GELU.
// Transposed views are passed to BLAS as transposes, not copied.
#include "core/ops/common.h"

namespace loom::ops {
using namespace detail;

namespace {

// How BLAS should read the last two dims of t; copies only if neither dim is unit-stride.
struct MatrixLayout {
  Tensor t;  // t itself, or a contiguous copy
  bool trans;
  int64_t ld;
};

MatrixLayout layout_of(const Tensor& t) {
  const int n = t.dim();
  const int64_t r = t.shape()[n - 2], c = t.shape()[n - 1], sr = t.strides()[n - 2], sc = t.strides()[n - 1];
  if ((sc == 1 || c == 1) && (sr >= std::max<int64_t>(1, c) || r == 1)) return {t, false, r == 1 ? std::max<int64_t>(1, c) : sr};
  if ((sr == 1 || r == 1) && (sc >= std::max<int64_t>(1, r) || c == 1)) return {t, true, c == 1 ? std::max<int64_t>(1, r) : sc};
  Tensor cont = t.detach().contiguous();
  return {cont, false, std::max<int64_t>(1, c)};
}

// The batch dims as one stride per linear batch index, when they step the operand uniformly (each
// dim's stride is the next inner one's times its size; broadcast dims, stride 0, only if all are).
bool uniform_batch_stride(const Shape& batch, const int64_t* strides, int64_t* stride) {
  int64_t step = -1, span = 1;
  for (int d = int(batch.size()) - 1; d >= 0; --d) {
    if (batch[d] == 1) continue;
    if (step < 0) step = strides[d];
    else if (strides[d] != step * span) return false;
    span *= batch[d];
  }
  *stride = step < 0 ? 0 : step;
  return true;
}

// out[batch, m, n] = a[batch', m, k] · b[batch'', k, n] where batch' and batch'' broadcast to batch.
void batched_gemm(const Tensor& a, const Tensor& b, const Tensor& out) {
  const int nd = out.dim();
  const int64_t m = out.shape()[nd - 2], n = out.shape()[nd - 1], k = a.shape()[a.dim() - 1];
  MatrixLayout la = layout_of(a), lb = layout_of(b);
  Shape batch;
  for (int d = 0; d < nd - 2; ++d) batch.push_back(out.shape()[d]);
  kernels::View va = broadcast_view(la.t, [&] { Shape s = batch; s.push_back(m); s.push_back(k); return s; }());
  kernels::View vb = broadcast_view(lb.t, [&] { Shape s = batch; s.push_back(k); s.push_back(n); return s; }());
  const size_t es = dtype_size(out.dtype());
  const int64_t count = batch.numel();
  char* po = static_cast<char*>(out.raw_data());
  // The usual case (attention's [B, H] batches, broadcast or not): every batch dim steps each
  // operand uniformly, so the whole batch is one strided-batched call (one cuBLASLt launch on a GPU).
  int64_t stride_a = 0, stride_b = 0;
  if (count > 1 && uniform_batch_stride(batch, va.strides, &stride_a) && uniform_batch_stride(batch, vb.strides, &stride_b)) {
    LOOM_KERNEL(out.device(), gemm_strided_batched, out.dtype(), count, m, n, k, 1.0, {va.data, la.trans, la.ld}, stride_a,
                {vb.data, lb.trans, lb.ld}, stride_b, 0.0, po, std::max<int64_t>(1, n), m * n);
    return;
  }
  auto product = [&](int64_t i) {
    int64_t oa = 0, ob = 0, rem = i;
    for (int d = batch.size() - 1; d >= 0; --d) {
      const int64_t idx = rem % batch[d];
      rem /= batch[d];
      oa += idx * va.strides[d];
      ob += idx * vb.strides[d];
    }
    LOOM_KERNEL(out.device(), gemm, out.dtype(), m, n, k, 1.0,
                {static_cast<const char*>(va.data) + oa * int64_t(es), la.trans, la.ld},
                {static_cast<const char*>(vb.data) + ob * int64_t(es), lb.trans, lb.ld}, 0.0,
                po + i * m * n * int64_t(es), std::max<int64_t>(1, n));
  };
  // Small products spread over the threads, as the CPU's gemm_strided_batched spreads them.
  if (out.device().is_cpu() && count > 1 && m * n * k <= (int64_t(1) << 20)) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; ++i) product(i);
  } else {
    for (int64_t i = 0; i < count; ++i) product(i);
  }
}

}  // namespace

Tensor matmul(const Tensor& a_arg, const Tensor& b_arg) {
  LOOM_OP_SCOPE("matmul");
  const Tensor a_in = autocast_lower(a_arg), b_in = autocast_lower(b_arg);
  check_float_operands("matmul", {{"a", a_in}, {"b", b_in}});
  if (a_in.dim() == 0 || b_in.dim() == 0) fail("matmul", "operands must have at least 1 dim", {{"a", a_in}, {"b", b_in}});
  const bool va = a_in.dim() == 1, vb = b_in.dim() == 1;
  Tensor a = va ? a_in.unsqueeze(0) : a_in, b = vb ? b_in.unsqueeze(-1) : b_in;
  const int64_t k = a.shape()[a.dim() - 1];
  if (b.shape()[b.dim() - 2] != k) fail("matmul", "inner dimensions differ", {{"a", a_in}, {"b", b_in}});
  // broadcast batch dims
  Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  Shape batch;
  if (!broadcast_shape(ba, bb, batch)) fail("matmul", "batch dimensions do not broadcast", {{"a", a_in}, {"b", b_in}});
  Shape os = batch;
  os.push_back(a.shape()[a.dim() - 2]);
  os.push_back(b.shape()[b.dim() - 1]);
  Tensor out = Tensor::empty(os, a.dtype(), a.device());
  batched_gemm(a, b, out);
  const Shape sa = a.shape(), sb = b.shape();
  Tensor ad = a.requires_grad() || b.requires_grad() ? a.detach() : Tensor();
  Tensor bd = a.requires_grad() || b.requires_grad() ? b.detach() : Tensor();
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  out = autograd::record("matmul", {a, b}, out, [ad, bd, sa, sb, ga, gb](const Tensor& g) {
    return std::vector<Tensor>{ga ? sum_to(matmul(g, bd.transpose(-1, -2)), sa) : Tensor(),
                               gb ? sum_to(matmul(ad.transpose(-1, -2), g), sb) : Tensor()};
  });
  if (va) out = out.squeeze(-2);
  if (vb) out = out.squeeze(-1);
  return out;
}

Tensor linear(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in, Activation act) {
  const Tensor x = autocast_lower(x_in);
  const Tensor weight = autocast_lower(weight_in);
  const Tensor bias = autocast_lower(bias_in);
  LOOM_OP_SCOPE("linear");
  if (bias.defined()) check_float_operands("linear", {{"x", x}, {"weight", weight}, {"bias", bias}});
  else check_float_operands("linear", {{"x", x}, {"weight", weight}});
  if (x.dim() < 1 || weight.dim() != 2 || x.shape().back() != weight.shape()[1])
    fail("linear", "expected x [..., in] and weight [out, in]", {{"x", x}, {"weight", weight}});
  const int64_t in = weight.shape()[1], outf = weight.shape()[0];
  if (bias.defined() && (bias.dim() != 1 || bias.shape()[0] != outf))
    fail("linear", "bias must be [out]", {{"weight", weight}, {"bias", bias}});

  Tensor x2 = x.detach().reshape({-1, in});
  MatrixLayout lx = layout_of(x2);
  Tensor w = weight.detach().contiguous();
  const int64_t m = x2.shape()[0];
  Tensor y = Tensor::empty({m, outf}, x.dtype(), x.device());
  // The bias is written first and the GEMM adds onto it (beta = 1): one pass over y fewer than
  // zeroing it for the product and adding the bias after.
  if (bias.defined()) LOOM_KERNEL(y.device(), copy, broadcast_view(bias, y.shape()), y.view_desc());
  LOOM_KERNEL(y.device(), gemm, x.dtype(), m, outf, in, 1.0, {lx.t.raw_data(), lx.trans, lx.ld}, {w.raw_data(), true, std::max<int64_t>(1, in)},
                     bias.defined() ? 1.0 : 0.0, y.raw_data(), std::max<int64_t>(1, outf));
  Tensor pre;  // the GEMM+bias output, kept for the GELU gradient
  if (act != Activation::none) {
    pre = y;
    y = Tensor::empty(pre.shape(), pre.dtype(), pre.device());
    LOOM_KERNEL(y.device(), unary, act == Activation::gelu ? kernels::Unary::gelu_erf : kernels::Unary::gelu_tanh,
                pre.view_desc(), y.view_desc(), 0.0, 0.0);
  }
  Shape ys = x.shape();
  ys[ys.size() - 1] = outf;
  const Shape xs = x.shape();
  const bool gx = x.requires_grad(), gw = weight.requires_grad(), has_bias = bias.defined();
  Tensor out = autograd::record("linear", {x, weight, bias}, y, [x2, w, pre, act, xs, outf, gx, gw, has_bias](const Tensor& g) {
    Tensor gp = g.reshape({-1, outf});
    if (act != Activation::none) {  // through the GELU, from its saved input
      Tensor through = Tensor::empty(gp.shape(), gp.dtype(), gp.device());
      LOOM_KERNEL(through.device(), binary,
                  act == Activation::gelu ? kernels::Binary::gelu_erf_backward : kernels::Binary::gelu_tanh_backward,
                  gp.view_desc(), pre.view_desc(), through.view_desc());
      gp = through;
    }
    return std::vector<Tensor>{gx ? matmul(gp, w).reshape(xs) : Tensor(),
                               gw ? matmul(gp.transpose(0, 1), x2) : Tensor(),
                               has_bias ? sum(gp, {0}) : Tensor()};
  });
  return out.reshape(ys);
}

void set_gemm_kernel(GemmKernel k) {
#ifdef LOOM_WITH_CUDA
  kernels::cuda::set_gemm_mma_default(k == GemmKernel::loom);
#else
  (void)k;  // no CUDA GEMMs to choose between
#endif
}

GemmKernel gemm_kernel() {
#ifdef LOOM_WITH_CUDA
  return kernels::cuda::gemm_mma_default() ? GemmKernel::loom : GemmKernel::cublas;
#else
  return GemmKernel::cublas;
#endif
}

}  // namespace loom::ops
