// Transformer building blocks; initialisation as open_clip (see layers/README.md).
#include "layers/transformer.h"
#include "core/autograd.h"
#include "core/autocast.h"

#include <algorithm>
#include <cmath>

namespace loom {

namespace {

// N(0, std²), or PyTorch's nn.Linear default U(±1/√fan_in) when std <= 0.
Tensor init_weight(const Shape& shape, int64_t fan_in, double std, Generator& gen) {
  if (std > 0) return ops::mul(ops::randn(shape, gen), std);
  const double bound = 1.0 / std::sqrt(double(fan_in));
  return ops::mul(ops::add(ops::mul(ops::rand(shape, gen), 2.0), -1.0), bound);
}

}  // namespace

Tensor drop_path(const Tensor& branch, double p, bool training, Generator* gen) {
  if (!training || gen == nullptr || p <= 0.0) return branch;
  const int64_t B = branch.size(0);
  Shape s(std::vector<int64_t>(size_t(branch.dim()), 1));
  s[0] = B;
  // Drawn on the branch's device (Philox gives the same stream on the CPU and on CUDA), in f32 (f64
  // for an f64 branch): in bf16 the threshold and 1/(1-p) round, and the branch's expectation drifts.
  const DType mask_dtype = branch.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor keep = ops::lt(ops::rand({B}, *gen, mask_dtype, branch.device()), 1.0 - p).to(mask_dtype);
  Tensor factor = ops::mul(keep, 1.0 / (1.0 - p)).reshape(s);
  // Under autocast the product promotes a bf16 branch to f32; without it the operands must agree.
  if (!autocast_dtype() && factor.dtype() != branch.dtype()) factor = factor.to(branch.dtype());
  return ops::mul(branch, factor);
}

// ---- Linear, LayerNorm, Mlp ----

Linear::Linear(int64_t in, int64_t out, bool has_bias, Generator& gen, double std) {
  LOOM_CHECK(in > 0 && out > 0, "Linear: sizes must be positive, got in=", in, " out=", out);
  weight = register_parameter("weight", init_weight({out, in}, in, std, gen));
  if (has_bias) bias = register_parameter("bias", Tensor::zeros({out}), NoDecay);
}

LayerNorm::LayerNorm(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", Tensor::ones({dim}), NoDecay);
  bias = register_parameter("bias", Tensor::zeros({dim}), NoDecay);
}

Mlp::Mlp(int64_t dim, int64_t hidden, Generator& gen, double fc_std, double proj_std, std::string act_) : act(std::move(act_)) {
  LOOM_CHECK(act == "gelu" || act == "quick_gelu", "Mlp: act must be gelu or quick_gelu, got '", act, "'");
  fc1 = std::make_shared<Linear>(dim, hidden, true, gen, fc_std);
  register_module("fc1", fc1);
  fc2 = std::make_shared<Linear>(hidden, dim, true, gen, proj_std);
  register_module("fc2", fc2);
}

Tensor Mlp::forward(const Tensor& x) const {
  if (act == "gelu") return fc2->forward(fc1->forward(x, ops::Activation::gelu));
  Tensor h = fc1->forward(x);
  return fc2->forward(ops::mul(h, ops::sigmoid(ops::mul(h, 1.702))));
}

// ---- Attention ----

Attention::Attention(int64_t dim, int64_t heads_, Generator& gen, double qkv_std, double proj_std) : heads(heads_) {
  LOOM_CHECK(heads > 0 && dim % heads == 0, "Attention: width ", dim, " is not divisible by heads ", heads);
  qkv = std::make_shared<Linear>(dim, 3 * dim, true, gen, qkv_std);
  register_module("qkv", qkv);
  proj = std::make_shared<Linear>(dim, dim, true, gen, proj_std);
  register_module("proj", proj);
}

Tensor Attention::forward(const Tensor& x, const ops::AttentionOptions& opt) const {
  const int64_t D = qkv->weight.size(1);
  if (x.dim() != 3 || x.size(2) != D)
    throw OpError(str_cat("Attention: x must be [B, S, ", D, "], got ", x.describe()));
  const int64_t B = x.size(0), S = x.size(1), H = heads, Dh = D / H;
  // [B, S, 3D] -> [B, S, 3, H, Dh] -> attention -> [B, S, H, Dh] -> [B, S, D]
  Tensor o = ops::self_attention_packed(qkv->forward(x).reshape({B, S, 3, H, Dh}), opt);
  return proj->forward(o.reshape({B, S, D}));
}

// ---- Block ----

Block::Block(const BlockConfig& c, Generator& gen) : c_(c) {
  const double w = double(c.width);
  const double attn_std = std::pow(w, -0.5);
  const double proj_std = std::pow(w, -0.5) * std::pow(2.0 * double(c.total_layers), -0.5);
  const double fc_std = std::pow(2.0 * w, -0.5);
  ln1 = std::make_shared<LayerNorm>(c.width);
  register_module("ln1", ln1);
  attn = std::make_shared<Attention>(c.width, c.heads, gen, attn_std, proj_std);
  register_module("attn", attn);
  ln2 = std::make_shared<LayerNorm>(c.width);
  register_module("ln2", ln2);
  mlp = std::make_shared<Mlp>(c.width, int64_t(double(c.width) * c.mlp_ratio), gen, fc_std, proj_std, c.act);
  register_module("mlp", mlp);
  if (c.layer_scale_init > 0) {
    ls1 = register_parameter("ls1", Tensor::full({c.width}, c.layer_scale_init), NoDecay);
    ls2 = register_parameter("ls2", Tensor::full({c.width}, c.layer_scale_init), NoDecay);
  }
}

Tensor Block::forward(const Tensor& x, const ops::AttentionOptions& opt, Generator* drop_gen) const {
  Tensor a = attn->forward(ln1->forward(x), opt);
  if (ls1.defined()) a = ops::mul(a, ls1);
  Tensor h = ops::add(x, drop_path(a, c_.drop_path, is_training(), drop_gen));
  Tensor m = mlp->forward(ln2->forward(h));
  if (ls2.defined()) m = ops::mul(m, ls2);
  return ops::add(h, drop_path(m, c_.drop_path, is_training(), drop_gen));
}

// ---- PatchEmbed ----

PatchEmbed::PatchEmbed(int64_t channels_, int64_t patch_, int64_t width, Generator& gen, int64_t stride_, bool bias)
    : patch(patch_), channels(channels_), stride(stride_ > 0 ? stride_ : patch_) {
  proj = std::make_shared<Linear>(patch * patch * channels, width, bias, gen, -1.0);
  register_module("proj", proj);
}

Tensor PatchEmbed::forward(const Tensor& images) const {
  if (images.dim() != 4 || images.size(1) != channels)
    throw OpError(str_cat("PatchEmbed: images must be [B, ", channels, ", H, W], got ", images.describe()));
  return proj->forward(stride == patch ? ops::patchify(images, patch) : ops::extract_patches(images, patch, stride));
}

// ---- sin-cos position embeddings (MAE's get_2d_sincos_pos_embed) ----

Tensor sincos_pos_embed_2d(int64_t width, int64_t grid_h, int64_t grid_w, bool cls_token) {
  LOOM_CHECK(width > 0 && width % 4 == 0, "sincos_pos_embed_2d: width ", width, " must be divisible by 4");
  LOOM_CHECK(grid_h > 0 && grid_w > 0, "sincos_pos_embed_2d: grid ", grid_h, "x", grid_w, " must be positive");
  const int64_t rows = grid_h * grid_w + (cls_token ? 1 : 0);
  std::vector<double> v(size_t(rows * width), 0.0);
  const int64_t half = width / 2, quarter = width / 4;
  // 1-D embedding of `pos` into `half` dims: [sin(pos·ω_k)]_k ++ [cos(pos·ω_k)]_k, ω_k = 10000^(-k/quarter).
  auto fill_1d = [&](double* out, double pos) {
    for (int64_t k = 0; k < quarter; ++k) {
      const double omega = 1.0 / std::pow(10000.0, double(k) / double(quarter));
      out[k] = std::sin(pos * omega);
      out[quarter + k] = std::cos(pos * omega);
    }
  };
  for (int64_t i = 0; i < grid_h; ++i)      // patch row
    for (int64_t j = 0; j < grid_w; ++j) {  // patch column
      double* row = v.data() + (i * grid_w + j + (cls_token ? 1 : 0)) * width;
      fill_1d(row, double(j));          // MAE: the first half encodes the column (meshgrid's w)
      fill_1d(row + half, double(i));   // and the second half the row
    }
  return Tensor::from(v, {rows, width}, DType::f32);
}

// ---- ViT ----

std::shared_ptr<ModuleList<Block>> make_blocks(Module& owner, int64_t width, int64_t heads, double mlp_ratio,
                                               int64_t layers, double layer_scale_init, double drop_path, Generator& gen,
                                               const std::string& act) {
  auto blocks = std::make_shared<ModuleList<Block>>();
  owner.register_module("blocks", blocks);
  for (int64_t i = 0; i < layers; ++i) {
    BlockConfig b;
    b.width = width;
    b.heads = heads;
    b.mlp_ratio = mlp_ratio;
    b.layer_scale_init = layer_scale_init;
    b.drop_path = layers > 1 ? drop_path * double(i) / double(layers - 1) : drop_path;
    b.total_layers = layers;
    b.act = act;
    blocks->push_back(std::make_shared<Block>(b, gen));
  }
  return blocks;
}

ViT::ViT(const ViTConfig& c, Generator& gen) : config(c) {
  if (c.overlapping())
    LOOM_CHECK(c.patch > 0 && c.stride > 0 && c.stride <= c.patch && c.patch <= c.height() && c.patch <= c.width_px(),
               "ViT: stride ", c.stride, " must be in [1, patch ", c.patch, "] and the patch no larger than the image ",
               c.height(), "x", c.width_px());
  else
    LOOM_CHECK(c.patch > 0 && c.height() % c.patch == 0 && c.width_px() % c.patch == 0, "ViT: patch ", c.patch,
               " must divide the image size ", c.height(), "x", c.width_px());
  const int64_t tokens = 1 + c.num_patches();
  patch_embed = std::make_shared<PatchEmbed>(c.channels, c.patch, c.width, gen, c.step(), c.patch_bias);
  register_module("patch_embed", patch_embed);
  const double scale = std::pow(double(c.width), -0.5);
  cls_token = register_parameter("cls_token", ops::mul(ops::randn({c.width}, gen), scale), NoDecay);
  if (c.pos_embed == "learned")
    pos_embed = register_parameter("pos_embed", ops::mul(ops::randn({tokens, c.width}, gen), scale), NoDecay);
  else if (c.pos_embed == "sincos")
    pos_embed = register_buffer("pos_embed", sincos_pos_embed_2d(c.width, c.grid_h(), c.grid_w(), true));
  else
    throw Error(str_cat("ViT: pos_embed must be 'learned' or 'sincos', got '", c.pos_embed, "'"));
  if (c.ln_pre) {
    ln_pre = std::make_shared<LayerNorm>(c.width);
    register_module("ln_pre", ln_pre);
  }
  blocks = make_blocks(*this, c.width, c.heads, c.mlp_ratio, c.layers, c.layer_scale_init, c.drop_path, gen, c.act);
  if (c.ln_post) {
    ln_post = std::make_shared<LayerNorm>(c.width);
    register_module("ln_post", ln_post);
  }
}

void ViT::check_images(const Tensor& images) const {
  const auto& c = config;
  if (images.dim() != 4 || images.size(1) != c.channels || images.size(2) != c.height() || images.size(3) != c.width_px())
    throw OpError(str_cat("ViT: images must be [B, ", c.channels, ", ", c.height(), ", ", c.width_px(), "], got ",
                          images.describe()));
}

Tensor ViT::forward_tokens(const Tensor& images, Generator* drop_gen) const {
  // The class token and the patches are joined before the position embedding is added: the same
  // numbers as embed_patches + prepend_cls, in fewer ops.
  check_images(images);
  const int64_t W = config.width;
  Tensor x = patch_embed->forward(images);  // [B, N, W]
  const int64_t B = x.size(0);
  Tensor cls = cls_token.reshape({1, 1, W}).expand({B, 1, W});
  x = ops::add(ops::cat({cls, x}, 1), pos_embed);
  if (config.patch_dropout > 0 && drop_gen && is_training()) {
    const int64_t N = x.size(1) - 1;
    const int64_t K = std::max<int64_t>(1, std::llround(double(N) * (1.0 - config.patch_dropout)));
    // The K patches of smallest uniform noise, in their grid order, after the class token (row 0).
    const std::vector<int64_t> order = ops::argsort(ops::rand({B, N}, *drop_gen, DType::f64), 1).to_vector<int64_t>();
    std::vector<int64_t> rows;
    rows.reserve(size_t(B * (K + 1)));
    for (int64_t b = 0; b < B; ++b) {
      std::vector<int64_t> kept(order.begin() + b * N, order.begin() + b * N + K);
      std::sort(kept.begin(), kept.end());
      rows.push_back(0);
      for (int64_t k : kept) rows.push_back(k + 1);
    }
    const Tensor index = Tensor::from(rows, {B, K + 1, 1}).to(x.device());
    x = ops::gather(x, 1, index.expand({B, K + 1, W}).contiguous());
  }
  return forward_blocks(x, drop_gen);
}

Tensor ViT::forward(const Tensor& images, Generator* drop_gen) const {
  return forward_tokens(images, drop_gen).select(1, 0);
}

Tensor ViT::embed_patches(const Tensor& images) const {
  check_images(images);
  return ops::add(patch_embed->forward(images), pos_embed.narrow(0, 1, config.num_patches()));
}

Tensor ViT::embed_patches(const Tensor& images, const Tensor& mask, const Tensor& mask_token) const {
  check_images(images);
  const int64_t B = images.size(0), N = config.num_patches(), W = config.width;
  if (!(mask.shape() == Shape{B, N}) || !(mask_token.shape() == Shape{W}))
    throw OpError(str_cat("ViT::embed_patches: mask must be [", B, ", ", N, "] and mask_token [", W, "], got ",
                          mask.describe(), " and ", mask_token.describe()));
  Tensor x = patch_embed->forward(images);
  const Tensor m = mask.to(x.dtype()).reshape({B, N, 1});
  x = ops::add(ops::mul(x, ops::rsub(1.0, m)), ops::mul(mask_token.reshape({1, 1, W}), m));
  return ops::add(x, pos_embed.narrow(0, 1, N));
}

Tensor ViT::prepend_cls(const Tensor& tokens) const {
  const int64_t W = config.width;
  if (tokens.dim() != 3 || tokens.size(2) != W)
    throw OpError(str_cat("ViT::prepend_cls: tokens must be [B, K, ", W, "], got ", tokens.describe()));
  const int64_t B = tokens.size(0);
  Tensor cls = ops::add(cls_token, pos_embed.select(0, 0)).reshape({1, 1, W}).expand({B, 1, W});
  return ops::cat({cls, tokens}, 1);
}

Tensor ViT::forward_blocks(const Tensor& x, Generator* drop_gen) const {
  Tensor h = ln_pre ? ln_pre->forward(x) : x;
  const int64_t every = config.checkpoint_every;
  for (size_t i = 0; i < blocks->size(); ++i) {
    const Block* b = &(*blocks)[i];
    if (every > 0 && int64_t(i) % every == 0)
      h = autograd::checkpoint([b, drop_gen](const Tensor& in) { return b->forward(in, {}, drop_gen); }, h, b->parameters(),
                               drop_gen);
    else
      h = b->forward(h, {}, drop_gen);
  }
  return ln_post ? ln_post->forward(h) : h;
}

std::vector<Tensor> ViT::block_outputs(const Tensor& images) const {
  check_images(images);
  Tensor h = prepend_cls(embed_patches(images));
  if (ln_pre) h = ln_pre->forward(h);
  std::vector<Tensor> out;
  for (size_t i = 0; i < blocks->size(); ++i) {
    h = (*blocks)[i].forward(h, {}, nullptr);
    out.push_back(ln_post ? ln_post->forward(h) : h);
  }
  return out;
}

// ---- TextTransformer ----

TextTransformer::TextTransformer(const TextConfig& c, Generator& gen) : TextEncoder(c) {
  token_embedding = register_parameter("token_embedding", ops::mul(ops::randn({c.vocab_size, c.width}, gen), 0.02), NoDecay);
  pos_embed = register_parameter("pos_embed", ops::mul(ops::randn({c.context, c.width}, gen), 0.01), NoDecay);
  blocks = make_blocks(*this, c.width, c.heads, c.mlp_ratio, c.layers, 0.0, 0.0, gen, c.act);
  ln_final = std::make_shared<LayerNorm>(c.width);
  register_module("ln_final", ln_final);
}

Tensor TextTransformer::forward(const Tensor& tokens, int64_t eot_id) const {
  const auto& c = config;
  if (tokens.dim() != 2 || tokens.size(1) < 1 || tokens.size(1) > c.context ||
      (tokens.dtype() != DType::i64 && tokens.dtype() != DType::i32))
    throw OpError(str_cat("TextTransformer: tokens must be i64 [B, S] with 1 <= S <= context ", c.context, ", got ",
                          tokens.describe()));
  const int64_t B = tokens.size(0), S = tokens.size(1);
  // First end-of-text position per row; every row must have one. Checked where it costs nothing
  // (tokens on the CPU): on a GPU the read-back would stall every step, and batches there come from
  // loom's tokenizers, which end every row with one.
  Tensor is_eot = ops::eq(tokens, double(eot_id)).to(DType::f32);
  Tensor pos = ops::argmax(is_eot, 1);  // first maximum: the first eot
  if (tokens.device().is_cpu()) {
    std::vector<float> hit = ops::amax(is_eot, {1}).to_vector<float>();
    for (int64_t b = 0; b < B; ++b)
      if (hit[size_t(b)] == 0.f)
        throw OpError(str_cat("TextTransformer: row ", b, " of tokens ", tokens.describe(), " has no eot token (id ",
                              eot_id, ")"));
  }
  Tensor x = ops::add(ops::embedding(token_embedding, tokens), pos_embed.narrow(0, 0, S));
  ops::AttentionOptions causal;
  causal.causal = true;
  for (size_t i = 0; i < blocks->size(); ++i) {
    const Block* b = &(*blocks)[i];
    if (c.checkpoint_every > 0 && int64_t(i) % c.checkpoint_every == 0)
      x = autograd::checkpoint([b, causal](const Tensor& in) { return b->forward(in, causal); }, x, b->parameters());
    else
      x = b->forward(x, causal);
  }
  x = ln_final->forward(x);
  Tensor index = pos.reshape({B, 1, 1}).expand({B, 1, c.width});
  return ops::gather(x, 1, index).reshape({B, c.width});
}

}  // namespace loom
