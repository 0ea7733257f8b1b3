// loom-bench attention: the fused kernels' forward and backward (CPU f32; CUDA bf16 flash beside the composed path).
#include "kernels/bench/harness.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <limits>
#include <utility>
#include <vector>

namespace loom::bench {
namespace {

// Attention (CPU): the fused kernel's forward and backward; the forward checked on sampled rows.

void bench_attention_cpu(const Args& a) {
  struct Shape { int64_t b, h, s, d; };
  std::vector<Shape> shapes;
  if (a.has("b") || a.has("h") || a.has("s") || a.has("d")) shapes.push_back({a.get("b", 8), a.get("h", 4), a.get("s", 256), a.get("d", 64)});
  else shapes = {{128, 4, 50, 32}, {64, 3, 129, 64}, {8, 4, 1024, 64}};  // CLIP demo ViT, CLAP-AST, a long audio clip
  for (const Shape& sh : shapes) {
    const int64_t n = sh.b * sh.h * sh.s * sh.d, rows = sh.b * sh.h * sh.s;
    const size_t N = static_cast<size_t>(n), R = static_cast<size_t>(rows);
    std::vector<float> q = random_floats(N, 3), k = random_floats(N, 4), v = random_floats(N, 5), dout = random_floats(N, 6),
                       out(N), lse(R), dq(N), dk(N), dv(N);
    const std::vector<int64_t> s4 = {sh.b, sh.h, sh.s, sh.d};
    const double scale = 1.0 / std::sqrt(double(sh.d));
    std::vector<float> delta(R);
    AttentionArgs args;
    args.q = view(q.data(), s4), args.k = view(k.data(), s4), args.v = view(v.data(), s4), args.out = view(out.data(), s4);
    args.lse = view(lse.data(), {sh.b, sh.h, sh.s});
    args.dout = view(dout.data(), s4), args.dq = view(dq.data(), s4), args.dk = view(dk.data(), s4), args.dv = view(dv.data(), s4);
    args.delta = view(delta.data(), {sh.b, sh.h, sh.s});
    args.causal = a.causal;
    args.scale = scale;
    auto fwd = [&] { cpu::attention_forward(args); };
    auto bwd = [&] { cpu::attention_backward(args); };
    poison(out);
    fwd();
    // Forward reference on 64 sampled (batch·head, query) rows, in double.
    std::mt19937 rng(11);
    double worst = 0;
    for (int t = 0; t < 64; ++t) {
      const int64_t bh = int64_t(rng() % uint64_t(sh.b * sh.h)), i = int64_t(rng() % uint64_t(sh.s));
      const float* Q = q.data() + (bh * sh.s + i) * sh.d;
      const int64_t visible = a.causal ? i + 1 : sh.s;
      std::vector<double> p(static_cast<size_t>(visible));
      double m = -INFINITY, sum = 0;
      for (int64_t j = 0; j < visible; ++j) {
        const float* K = k.data() + (bh * sh.s + j) * sh.d;
        double dot = 0;
        for (int64_t c = 0; c < sh.d; ++c) dot += double(Q[c]) * K[c];
        p[size_t(j)] = dot * scale;
        m = std::max(m, p[size_t(j)]);
      }
      for (auto& x : p) { x = std::exp(x - m); sum += x; }
      for (int64_t c = 0; c < sh.d; ++c) {
        double want = 0;
        for (int64_t j = 0; j < visible; ++j) want += p[size_t(j)] / sum * v[size_t((bh * sh.s + j) * sh.d + c)];
        const double got = out[size_t((bh * sh.s + i) * sh.d + c)];
        worst = std::isfinite(got) ? std::max(worst, std::fabs(got - want)) : INFINITY;
      }
    }
    // Backward: every gradient written and finite (its values are checked against central
    // differences in the op-case table; here it is timed).
    poison(dq); poison(dk); poison(dv);
    bwd();
    bool finite = true;
    for (const auto* g : {&dq, &dk, &dv})
      for (float x : *g) finite = finite && std::isfinite(x);
    // FLOPs of the products the kernel computes (all S x S scores, also under a causal mask): two in
    // the forward, five in the backward (the scores again, dV, dP, dQ, dK).
    const double fwd_flops = 4.0 * double(sh.b * sh.h) * double(sh.s) * double(sh.s) * double(sh.d);
    const std::string name = std::to_string(sh.b) + "x" + std::to_string(sh.h) + "x" + std::to_string(sh.s) + "x" +
                             std::to_string(sh.d) + (a.causal ? " causal" : "");
    report(a, "attn_fwd", name, "fused", "cpu", worst <= 1e-5, worst, time_host(a.reps, fwd), fwd_flops, "GFLOP/s");
    report(a, "attn_bwd", name, "fused", "cpu", finite, NAN, time_host(a.reps, bwd), 2.5 * fwd_flops,
           "GFLOP/s");
  }
}

#ifdef LOOM_BENCH_CUDA
// Attention (CUDA, bf16): the flash kernels' forward and backward beside the composed forward
// (cuBLASLt strided-batched Q·Kᵀ, the softmax kernel, P·V). Checked in double on sampled rows: the
// flash output and dQ on 16 query rows, dK and dV on 16 key rows; the composed output likewise.


// Attention of one (batch·head) slice in double on bf16-valued inputs: P row i (softmax), and helpers.
struct SliceRef {
  const std::vector<float>&q, &k, &v, &dout;
  int64_t S, D;
  double scale;
  bool causal;
  const float* at(const std::vector<float>& t, int64_t bh, int64_t i) const { return t.data() + (bh * S + i) * D; }
  std::vector<double> probs(int64_t bh, int64_t i) const {
    std::vector<double> p(static_cast<size_t>(S), 0.0);
    double m = -INFINITY, sum = 0;
    const int64_t visible = causal ? i + 1 : S;
    for (int64_t j = 0; j < visible; ++j) {
      double dot = 0;
      for (int64_t c = 0; c < D; ++c) dot += double(at(q, bh, i)[c]) * at(k, bh, j)[c];
      p[size_t(j)] = dot * scale;
      m = std::max(m, p[size_t(j)]);
    }
    for (int64_t j = 0; j < visible; ++j) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - m));
    for (int64_t j = 0; j < visible; ++j) p[size_t(j)] /= sum;
    return p;
  }
  // dS row i: P ∘ (dP - rowsum(dP ∘ P)), dP = dO·Vᵀ.
  std::vector<double> dscores(int64_t bh, int64_t i, const std::vector<double>& p) const {
    std::vector<double> dp(static_cast<size_t>(S));
    double delta = 0;
    for (int64_t j = 0; j < S; ++j) {
      for (int64_t c = 0; c < D; ++c) dp[size_t(j)] += double(at(dout, bh, i)[c]) * at(v, bh, j)[c];
      delta += p[size_t(j)] * dp[size_t(j)];
    }
    for (int64_t j = 0; j < S; ++j) dp[size_t(j)] = p[size_t(j)] * (dp[size_t(j)] - delta);
    return dp;
  }
};

void bench_attention_cuda(const Args& a) {
  struct Shape { int64_t b, h, s, d; };
  std::vector<Shape> shapes;
  if (a.has("b") || a.has("h") || a.has("s") || a.has("d")) shapes.push_back({a.get("b", 8), a.get("h", 4), a.get("s", 256), a.get("d", 64)});
  else shapes = {{256, 12, 197, 64}, {256, 12, 50, 64}, {8, 16, 4096, 128}};  // ViT-B/16, ViT-B/32 at batch 256; long sequences
  for (const Shape& sh : shapes) {
    const int64_t BH = sh.b * sh.h, n = BH * sh.s * sh.d;
    const size_t N = static_cast<size_t>(n);
    std::vector<float> q = random_floats(N, 3), k = random_floats(N, 4), v = random_floats(N, 5), dout = random_floats(N, 6);
    const auto qb = to_bf16_bits(q), kb = to_bf16_bits(k), vb = to_bf16_bits(v), db = to_bf16_bits(dout);
    const double scale = 1.0 / std::sqrt(double(sh.d));
    const SliceRef ref{q, k, v, dout, sh.s, sh.d, scale, a.causal};
    DeviceBuffers d;
    void *dq_in = d.up_bytes(qb.data(), N * 2), *dk_in = d.up_bytes(kb.data(), N * 2), *dv_in = d.up_bytes(vb.data(), N * 2),
         *ddo = d.up_bytes(db.data(), N * 2);
    const std::vector<float> zeros_n(N, 0.f), zeros_r(static_cast<size_t>(BH * sh.s), 0.f);
    void *dout_buf = d.up_bytes(qb.data(), N * 2), *ddk = d.up_bytes(qb.data(), N * 2), *ddv = d.up_bytes(qb.data(), N * 2);
    float *lse = d.up(zeros_r), *delta = d.up(zeros_r), *dq_acc = d.up(zeros_n);
    const int64_t row = sh.s * sh.d;
    auto view_of = [&](void* ptr, DType dtype, int ndim) {  // contiguous [b, h, s(, d)]
      View v;
      v.data = ptr, v.dtype = dtype, v.ndim = ndim;
      const int64_t dims[4] = {sh.b, sh.h, sh.s, sh.d};
      int64_t stride = 1;
      for (int i = ndim - 1; i >= 0; --i) v.shape[i] = dims[i], v.strides[i] = stride, stride *= dims[i];
      return v;
    };
    AttentionArgs p;
    p.q = view_of(dq_in, DType::bf16, 4), p.k = view_of(dk_in, DType::bf16, 4), p.v = view_of(dv_in, DType::bf16, 4);
    p.out = view_of(dout_buf, DType::bf16, 4), p.dout = view_of(ddo, DType::bf16, 4);
    p.dk = view_of(ddk, DType::bf16, 4), p.dv = view_of(ddv, DType::bf16, 4);
    p.lse = view_of(lse, DType::f32, 3), p.delta = view_of(delta, DType::f32, 3), p.dq = view_of(dq_acc, DType::f32, 4);
    p.scale = scale;
    p.causal = a.causal;
    const std::string name = std::to_string(sh.b) + "x" + std::to_string(sh.h) + "x" + std::to_string(sh.s) + "x" +
                             std::to_string(sh.d) + (a.causal ? " causal" : "");
    const double fwd_flops = 4.0 * double(BH) * double(sh.s) * double(sh.s) * double(sh.d);
    const size_t flush = size_t(256) << 20;
    std::mt19937 rng(11);
    std::vector<std::pair<int64_t, int64_t>> rows;  // (bh, row) samples
    for (int t = 0; t < 16; ++t) rows.push_back({int64_t(rng() % uint64_t(BH)), int64_t(rng() % uint64_t(sh.s))});
    // A relative error: largest |got - want| over largest |want| of the sampled values.
    auto rel = [](double diff, double mag) { return diff / std::max(mag, 1e-30); };
    // The output in dout_buf against the reference on the sampled rows (a NaN counts as infinite).
    auto forward_error = [&] {
      const std::vector<float> out = from_bf16_device(dout_buf, N);
      double diff = 0, mag = 0;
      for (auto [bh, i] : rows) {
        const std::vector<double> pr = ref.probs(bh, i);
        for (int64_t c = 0; c < sh.d; ++c) {
          double want = 0;
          for (int64_t j = 0; j < sh.s; ++j) want += pr[size_t(j)] * ref.at(v, bh, j)[c];
          const double got = out[size_t((bh * sh.s + i) * sh.d + c)];
          diff = std::isfinite(got) ? std::max(diff, std::fabs(got - want)) : INFINITY;
          mag = std::max(mag, std::fabs(want));
        }
      }
      return rel(diff, mag);
    };
    if (!cu::attention_supported(p, true)) {
      std::printf("attention %s: the flash kernels do not take this shape (D must be 64 or 128)\n", name.c_str());
    } else {
      auto fwd = [&] { cu::attention_forward(p); };
      auto bwd = [&] {
        cu::memset_async(dq_acc, 0, N * 4);
        cu::attention_backward(p);
      };
      cu::memset_async(dout_buf, 0xff, N * 2);  // NaN in bf16
      fwd();
      const double err_fwd = forward_error();
      report(a, "attn_fwd", name, "flash", "cuda", err_fwd <= 2e-2, err_fwd, time_cuda(a.reps, fwd, flush), fwd_flops, "GFLOP/s");
      cu::memset_async(ddk, 0xff, N * 2);
      cu::memset_async(ddv, 0xff, N * 2);
      bwd();
      std::vector<float> dqv(N);
      cu::memcpy(dqv.data(), dq_acc, N * 4, cu::CopyKind::device_to_host);
      const std::vector<float> dkv = from_bf16_device(ddk, N), dvv = from_bf16_device(ddv, N);
      double dq_diff = 0, dq_mag = 0, dkv_diff = 0, dkv_mag = 0;
      for (auto [bh, i] : rows) {  // dQ row i
        const std::vector<double> pr = ref.probs(bh, i), ds = ref.dscores(bh, i, pr);
        for (int64_t c = 0; c < sh.d; ++c) {
          double want = 0;
          for (int64_t j = 0; j < sh.s; ++j) want += ds[size_t(j)] * ref.at(k, bh, j)[c] * scale;
          const double got = dqv[size_t((bh * sh.s + i) * sh.d + c)];
          dq_diff = std::isfinite(got) ? std::max(dq_diff, std::fabs(got - want)) : INFINITY;
          dq_mag = std::max(dq_mag, std::fabs(want));
        }
      }
      {  // dK and dV of 4 keys of one slice: sums over every query, one pass over the queries
        const int64_t bh = rows[0].first;
        std::vector<int64_t> keys;
        for (int t = 0; t < 4; ++t) keys.push_back(rows[size_t(t)].second);
        const size_t D = static_cast<size_t>(sh.d);
        std::vector<double> want_k(keys.size() * D), want_v(keys.size() * D);
        for (int64_t i = 0; i < sh.s; ++i) {
          const std::vector<double> pr = ref.probs(bh, i), ds = ref.dscores(bh, i, pr);
          for (size_t t = 0; t < keys.size(); ++t)
            for (int64_t c = 0; c < sh.d; ++c) {
              want_k[t * D + size_t(c)] += ds[size_t(keys[t])] * ref.at(q, bh, i)[c] * scale;
              want_v[t * D + size_t(c)] += pr[size_t(keys[t])] * ref.at(dout, bh, i)[c];
            }
        }
        for (size_t t = 0; t < keys.size(); ++t)
          for (int64_t c = 0; c < sh.d; ++c) {
            const size_t at = size_t((bh * sh.s + keys[t]) * sh.d + c);
            const double gk = dkv[at], gv = dvv[at], wk = want_k[t * D + size_t(c)], wv = want_v[t * D + size_t(c)];
            dkv_diff = std::isfinite(gk) && std::isfinite(gv) ? std::max({dkv_diff, std::fabs(gk - wk), std::fabs(gv - wv)})
                                                               : INFINITY;
            dkv_mag = std::max({dkv_mag, std::fabs(wk), std::fabs(wv)});
          }
      }
      const double err_bwd = std::max(rel(dq_diff, dq_mag), rel(dkv_diff, dkv_mag));
      report(a, "attn_bwd", name, "flash", "cuda", err_bwd <= 4e-2, err_bwd, time_cuda(a.reps, bwd, flush), 2.5 * fwd_flops,
             "GFLOP/s");
    }
    // The composed forward: scores materialised in bf16, as the composed op runs them.
    if (a.causal) {
      std::printf("attention %s: the composed baseline here has no causal mask; skipped\n", name.c_str());
      continue;
    }
    const double score_bytes = double(BH) * double(sh.s) * double(sh.s) * 2;
    if (score_bytes * 2 > 24e9) {
      std::printf("attention %s: composed scores would take %.1f GB; skipped\n", name.c_str(), score_bytes * 2 / 1e9);
      continue;
    }
    const std::vector<float> zeros_s(static_cast<size_t>(BH * sh.s * sh.s / 2 + 1), 0.f);
    float *scores = d.up(zeros_s), *probs = d.up(zeros_s);
    const View sv = view(scores, {BH, sh.s, sh.s}, DType::bf16), pv = view(probs, {BH, sh.s, sh.s}, DType::bf16);
    auto composed = [&] {
      cu::gemm_strided_batched(DType::bf16, BH, sh.s, sh.s, sh.d, scale, {dq_in, false, sh.d}, row, {dk_in, true, sh.d}, row,
                               0.0, scores, sh.s, sh.s * sh.s);
      cu::softmax(sv, pv, false);
      cu::gemm_strided_batched(DType::bf16, BH, sh.s, sh.d, sh.s, 1.0, {probs, false, sh.s}, sh.s * sh.s, {dv_in, false, sh.d},
                               row, 0.0, dout_buf, sh.d, row);
    };
    cu::memset_async(dout_buf, 0xff, N * 2);
    composed();
    const double err = forward_error();
    report(a, "attn_fwd", name, "composed", "cuda", err <= 3e-2, err, time_cuda(a.reps, composed, flush), fwd_flops, "GFLOP/s");
  }
}
#endif

}  // namespace

void bench_attention(const Args& a) {
#ifdef LOOM_BENCH_CUDA
  if (a.device == "cuda") return bench_attention_cuda(a);
#endif
  bench_attention_cpu(a);
}

}  // namespace loom::bench
