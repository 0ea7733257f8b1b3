// The op API. Each op checks its operands (throwing OpError naming the op and the operands' dtypes
// and shapes), dispatches to kernels by device, and records its gradient rule next to its forward in
// core/ops/<family>.cpp. Ops without a gradient say so below.
#pragma once
#include <optional>
#include <utility>
#include <vector>
#include "core/autograd.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace loom::ops {

// ---- elementwise, broadcasting (core/ops/elementwise.cpp) ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double b);
Tensor mul(const Tensor& a, double b);
Tensor rsub(double a, const Tensor& b);  // a - b
Tensor rdiv(double a, const Tensor& b);  // a / b
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor pow(const Tensor& x, double exponent);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
enum class GeluApprox { erf, tanh };
Tensor gelu(const Tensor& x, GeluApprox approx = GeluApprox::erf);
Tensor quick_gelu(const Tensor& x);  // x·σ(1.702x), OpenAI CLIP's activation
// Either bound may be left out (nullopt). The gradient passes where min <= x <= max.
Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max);
// cond ? a : b, all three broadcast. cond is bool.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

// Comparisons (no gradient): bool results, broadcasting.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, double b);
Tensor lt(const Tensor& a, double b);
Tensor gt(const Tensor& a, double b);
Tensor logical_not(const Tensor& x);

// Shape that a and b broadcast to; throws OpError naming `op` if they do not.
Shape broadcast_shapes(const char* op, const Tensor& a, const Tensor& b);
// Sums `g` down to `shape` (the reverse of broadcasting).
Tensor sum_to(const Tensor& g, const Shape& shape);

// ---- reductions (core/ops/reduce.cpp). Empty `dims` means all dims. ----
Tensor sum(const Tensor& x, const std::vector<int>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int>& dims = {}, bool keepdim = false);
Tensor amax(const Tensor& x, const std::vector<int>& dims = {}, bool keepdim = false);
Tensor logsumexp(const Tensor& x, const std::vector<int>& dims, bool keepdim = false);
Tensor argmax(const Tensor& x, int dim, bool keepdim = false);  // no gradient, i64

// ---- matrix products (core/ops/matmul.cpp) ----
// Batched matmul: [..., m, k] x [..., k, n], batch dims broadcast; 1-D operands as in numpy.
Tensor matmul(const Tensor& a, const Tensor& b);
enum class Activation { none, gelu, gelu_tanh };
// x [..., in] · weightᵀ [out, in] + bias [out], then the activation, in one op.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              Activation act = Activation::none);

// ---- normalisation and softmax (core/ops/norm.cpp, core/ops/softmax.cpp) ----
Tensor softmax(const Tensor& x, int dim);
Tensor log_softmax(const Tensor& x, int dim);
// Over the last dim; weight and bias [C] may be undefined (no affine).
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
Tensor l2_normalize(const Tensor& x, int dim = -1, double eps = 1e-12);

// ---- losses (core/ops/loss.cpp) ----
// logits [N, C] or [..., C], targets i64 [N] or [...]; mean over rows whose target != ignore_index.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100,
                     double label_smoothing = 0.0);
Tensor mse_loss(const Tensor& input, const Tensor& target);

// ---- attention (core/ops/attention.cpp) ----
struct AttentionOptions {
  bool causal = false;
  Tensor key_padding_mask;  // bool [B, Sk], true = padding (ignored key)
  Tensor bias;              // additive, broadcastable to [B, H, Sq, Sk]
  std::optional<double> scale;  // default 1/sqrt(D)
};
// q [B, H, Sq, D], k [B, H, Sk, D], v [B, H, Sk, Dv] -> [B, H, Sq, Dv]. A query whose keys are all
// masked gets a zero output (and zero gradient), not NaN.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& opt = {});
// Self-attention on the fused projection: qkv [B, S, 3, H, D] (q, k, v along dim 2) -> [B, S, H, D].
// The same result as scaled_dot_product_attention on its three slices, but the gradient of qkv is
// written as one tensor instead of three zero-padded slices added up.
Tensor self_attention_packed(const Tensor& qkv, const AttentionOptions& opt = {});

// Which kernels run attention on CUDA in bf16/f16 (process-wide; a recipe's kernels.attention sets
// it): composed (cuBLASLt products and the softmax kernel, the default until the flash kernels are
// validated on a GPU) or flash (kernels/cuda/attention.cu: head dims 64 and 128; other cases
// still compose). The CPU always runs its own fused kernel or the composed path.
enum class AttentionKernel { composed, flash };
void set_attention_kernel(AttentionKernel k);
AttentionKernel attention_kernel();
// Which kernel runs bf16/f16 GEMMs on CUDA (process-wide; kernels.gemm): cublas (cuBLASLt, the
// default until the hand-written kernel is validated on a GPU) or loom (kernels/cuda/gemm_mma.cu
// where it takes the problem: 16-byte aligned operands; batched products stay with cuBLASLt).
enum class GemmKernel { cublas, loom };
void set_gemm_kernel(GemmKernel k);
GemmKernel gemm_kernel();

// ---- indexing (core/ops/index.cpp) ----
Tensor embedding(const Tensor& weight, const Tensor& ids);  // weight [V, D], ids int -> [..., D]
Tensor cat(const std::vector<Tensor>& xs, int dim);
Tensor stack(const std::vector<Tensor>& xs, int dim);
// out[..i..] = x[..index[..i..]..] along dim; index has x's shape except along dim.
Tensor gather(const Tensor& x, int dim, const Tensor& index);
Tensor index_select(const Tensor& x, int dim, const Tensor& index);  // index 1-D
// x with src added at index along dim; index and src share a shape, equal to x's except along dim.
Tensor scatter_add(const Tensor& x, int dim, const Tensor& index, const Tensor& src);

// ---- images (core/ops/patchify.cpp) ----
// [B, C, H, W] -> [B, (H/p)(W/p), p*p*C], patch pixels ordered (row, col, channel) as MAE does.
Tensor patchify(const Tensor& images, int64_t patch);
Tensor unpatchify(const Tensor& patches, int64_t patch, int64_t channels, int64_t height, int64_t width);
// Patches every `stride` pixels, as a patch x patch convolution with that stride would see them (AST's
// overlapping patches: 16 with stride 10): [B, C, H, W] -> [B, gh * gw, p*p*C] with gh = (H - p) / stride + 1
// (floored; pixels past the last whole patch are not covered) and gw likewise, patches in row-major
// grid order, pixels ordered as patchify's. stride == patch on a divisible image is patchify.
Tensor extract_patches(const Tensor& images, int64_t patch, int64_t stride);

// ---- randomness (core/ops/random.cpp); no gradient except dropout ----
Tensor rand(const Shape& shape, Generator& gen = default_generator(), DType dtype = DType::f32,
            Device device = Device::cpu());
Tensor randn(const Shape& shape, Generator& gen = default_generator(), DType dtype = DType::f32,
             Device device = Device::cpu());
Tensor randperm(int64_t n, Generator& gen = default_generator());
// Zeroes each element with probability p and scales the rest by 1/(1-p); identity when !train.
Tensor dropout(const Tensor& x, double p, bool train = true, Generator& gen = default_generator());

// ---- sorting (core/ops/sort.cpp); no gradient for indices ----
Tensor argsort(const Tensor& x, int dim = -1, bool descending = false);  // stable, i64
struct TopK { Tensor values, indices; };
// values are gather(x, dim, indices), so they carry a gradient.
TopK topk(const Tensor& x, int64_t k, int dim = -1, bool largest = true);

// ---- optimizer updates (core/ops/optim.cpp); in place, no gradient ----
// One parameter of a fused AdamW step. param, grad, exp_avg and exp_avg_sq are contiguous, have the
// parameter's shape and dtype (f32 or f64) and share one device; step is this parameter's own step
// count, this update included (>= 1), for the bias corrections; weight_decay is 0 for no decay.
struct AdamWParam {
  Tensor param, grad, exp_avg, exp_avg_sq;
  int64_t step = 1;
  double weight_decay = 0.0;
};
// AdamW with decoupled weight decay on every entry, elementwise, with bc1 = 1 - beta1^step and
// bc2 = 1 - beta2^step:
//   m = beta1·m + (1 - beta1)·g;  v = beta2·v + (1 - beta2)·g²
//   p = p·(1 - lr·weight_decay) - (lr / bc1)·m / (sqrt(v) / sqrt(bc2) + eps)
// One fused kernel call per dtype (a few launches on a GPU). A parameter that requires grad is
// updated only under NoGradGuard, as optimizers do.
void adamw_step(const std::vector<AdamWParam>& params, double lr, double beta1, double beta2, double eps);

}  // namespace loom::ops

namespace loom {
inline Tensor operator+(const Tensor& a, const Tensor& b) { return ops::add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return ops::sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return ops::mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return ops::div(a, b); }
inline Tensor operator+(const Tensor& a, double b) { return ops::add(a, b); }
inline Tensor operator-(const Tensor& a, double b) { return ops::add(a, -b); }
inline Tensor operator*(const Tensor& a, double b) { return ops::mul(a, b); }
inline Tensor operator/(const Tensor& a, double b) { return ops::mul(a, 1.0 / b); }
inline Tensor operator+(double a, const Tensor& b) { return ops::add(b, a); }
inline Tensor operator-(double a, const Tensor& b) { return ops::rsub(a, b); }
inline Tensor operator*(double a, const Tensor& b) { return ops::mul(b, a); }
inline Tensor operator/(double a, const Tensor& b) { return ops::rdiv(a, b); }
inline Tensor operator-(const Tensor& x) { return ops::neg(x); }
}  // namespace loom
