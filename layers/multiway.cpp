#include "layers/multiway.h"
#include <cmath>

namespace loom {

namespace {

// open_clip's initialisation, as Block (layers/transformer.cpp).
struct BlockStd {
  double attn, proj, fc;
  explicit BlockStd(const BlockConfig& c)
      : attn(std::pow(double(c.width), -0.5)),
        proj(std::pow(double(c.width), -0.5) * std::pow(2.0 * double(c.total_layers), -0.5)),
        fc(std::pow(2.0 * double(c.width), -0.5)) {}
};

}  // namespace

FeedForwardExpert::FeedForwardExpert(const BlockConfig& c, Generator& gen) {
  const BlockStd s(c);
  norm = std::make_shared<LayerNorm>(c.width);
  register_module("norm", norm);
  mlp = std::make_shared<Mlp>(c.width, int64_t(double(c.width) * c.mlp_ratio), gen, s.fc, s.proj, c.act);
  register_module("mlp", mlp);
}

MultiwayBlock::MultiwayBlock(const BlockConfig& c, bool has_vl, Generator& gen) : c_(c) {
  const BlockStd s(c);
  ln1 = std::make_shared<LayerNorm>(c.width);
  register_module("ln1", ln1);
  attn = std::make_shared<Attention>(c.width, c.heads, gen, s.attn, s.proj);
  register_module("attn", attn);
  image = std::make_shared<FeedForwardExpert>(c, gen);
  register_module("image", image);
  text = std::make_shared<FeedForwardExpert>(c, gen);
  register_module("text", text);
  if (has_vl) {
    vl = std::make_shared<FeedForwardExpert>(c, gen);
    register_module("vl", vl);
  }
  if (c.layer_scale_init > 0) {
    ls1 = register_parameter("ls1", Tensor::full({c.width}, c.layer_scale_init), NoDecay);
    ls2 = register_parameter("ls2", Tensor::full({c.width}, c.layer_scale_init), NoDecay);
  }
}

Tensor MultiwayBlock::forward(const Tensor& x, const std::vector<ExpertSpan>& spans, bool fused,
                              const ops::AttentionOptions& opt, Generator* drop_gen) const {
  Tensor a = attn->forward(ln1->forward(x), opt);
  if (ls1.defined()) a = ops::mul(a, ls1);
  Tensor h = ops::add(x, drop_path(a, c_.drop_path, is_training(), drop_gen));
  auto expert = [&](Expert e) -> const FeedForwardExpert& {
    if (e == Expert::image) return *image;
    if (e == Expert::text) return *text;
    LOOM_CHECK(vl, "MultiwayBlock: this block has no vision-language expert");
    return *vl;
  };
  Tensor m;
  if (fused && vl) {
    m = vl->forward(h);
  } else if (spans.size() == 1) {
    m = expert(spans[0].expert).forward(h);
  } else {
    std::vector<Tensor> parts;
    int64_t start = 0;
    for (const ExpertSpan& s : spans) {
      parts.push_back(expert(s.expert).forward(h.narrow(1, start, s.length)));
      start += s.length;
    }
    m = ops::cat(parts, 1);
  }
  if (ls2.defined()) m = ops::mul(m, ls2);
  return ops::add(h, drop_path(m, c_.drop_path, is_training(), drop_gen));
}

MultiwayTransformer::MultiwayTransformer(const MultiwayConfig& c, Generator& gen) : config(c) {
  LOOM_CHECK(c.layers >= 1 && c.width >= 1 && c.heads >= 1 && c.width % c.heads == 0, "MultiwayTransformer: width ",
             c.width, ", heads ", c.heads, " and layers ", c.layers, " must be positive, the heads dividing the width");
  LOOM_CHECK(c.vl_from >= 0 && c.vl_from <= c.layers, "MultiwayTransformer: vl_from ", c.vl_from, " must be in [0, layers ",
             c.layers, "]");
  blocks = std::make_shared<ModuleList<MultiwayBlock>>();
  register_module("blocks", blocks);
  for (int64_t i = 0; i < c.layers; ++i) {
    BlockConfig b;
    b.width = c.width;
    b.heads = c.heads;
    b.mlp_ratio = c.mlp_ratio;
    b.layer_scale_init = c.layer_scale_init;
    b.drop_path = c.layers > 1 ? c.drop_path * double(i) / double(c.layers - 1) : c.drop_path;
    b.total_layers = c.layers;
    blocks->push_back(std::make_shared<MultiwayBlock>(b, i >= c.vl_from, gen));
  }
  norm = std::make_shared<LayerNorm>(c.width);
  register_module("norm", norm);
  if (c.rel_pos_bias) {
    LOOM_CHECK(c.grid_h >= 1 && c.grid_w >= 1, "MultiwayTransformer: rel_pos_bias needs the image's patch grid");
    const int64_t Gh = c.grid_h, Gw = c.grid_w, N = Gh * Gw, R = (2 * Gh - 1) * (2 * Gw - 1) + 3;
    // BEiT's table starts at zero: the blocks begin as without a bias.
    rel_pos_table = register_parameter("rel_pos_bias", Tensor::zeros({R, c.heads}), NoDecay);
    std::vector<int64_t> index(size_t((N + 1) * (N + 1)));
    for (int64_t i = 0; i <= N; ++i)
      for (int64_t j = 0; j <= N; ++j) {
        int64_t v;
        if (i == 0 && j == 0) v = R - 1;  // class token to itself
        else if (i == 0) v = R - 3;       // class token to a patch
        else if (j == 0) v = R - 2;       // a patch to the class token
        else {
          const int64_t dh = (i - 1) / Gw - (j - 1) / Gw, dw = (i - 1) % Gw - (j - 1) % Gw;
          v = (dh + Gh - 1) * (2 * Gw - 1) + (dw + Gw - 1);
        }
        index[size_t(i * (N + 1) + j)] = v;
      }
    rel_pos_index = Tensor::from(index, {(N + 1) * (N + 1)}, DType::i64);
  }
}

Tensor MultiwayTransformer::image_position_bias() const {
  LOOM_CHECK(rel_pos_table.defined(), "MultiwayTransformer: no relative position bias (rel_pos_bias: false)");
  const int64_t T = config.grid_h * config.grid_w + 1, H = config.heads;
  Tensor idx = rel_pos_index.device() == rel_pos_table.device() ? rel_pos_index : rel_pos_index.to(rel_pos_table.device());
  return ops::embedding(rel_pos_table, idx).reshape({T, T, H}).permute({2, 0, 1}).reshape({1, H, T, T});
}

bool MultiwayTransformer::prepare(const Tensor& x, const std::vector<ExpertSpan>& spans, ops::AttentionOptions& opt) const {
  LOOM_CHECK(x.dim() == 3 && x.size(2) == config.width, "MultiwayTransformer: x must be [B, S, ", config.width, "], got ",
             x.describe());
  int64_t total = 0, start = 0;
  const ExpertSpan* img = nullptr;
  bool has_text = false;
  for (const ExpertSpan& s : spans) {
    if (s.expert == Expert::image && !img) {
      img = &s;
      start = total;
    }
    has_text |= s.expert == Expert::text;
    total += s.length;
  }
  LOOM_CHECK(total == x.size(1), "MultiwayTransformer: the spans cover ", total, " tokens of ", x.describe());
  if (rel_pos_table.defined() && img) {
    const int64_t T = config.grid_h * config.grid_w + 1, H = config.heads, S = x.size(1);
    if (img->length != T)
      throw OpError(str_cat("MultiwayTransformer: the relative position bias needs all ", T,
                            " image tokens (class token and every patch), got ", img->length,
                            " (MAE drops patches: use task mim, or rel_pos_bias: false)"));
    Tensor b = image_position_bias();  // [1, H, T, T]
    if (S != T) {
      // Zero elsewhere: the bias is the image's alone.
      auto zeros = [&](int64_t r, int64_t c) { return Tensor::zeros({1, H, r, c}, b.dtype(), b.device()); };
      const int64_t after = S - start - T;
      std::vector<Tensor> row, col;
      if (start > 0) row.push_back(zeros(T, start));
      row.push_back(b);
      if (after > 0) row.push_back(zeros(T, after));
      b = ops::cat(row, 3);
      if (start > 0) col.push_back(zeros(start, S));
      col.push_back(b);
      if (after > 0) col.push_back(zeros(after, S));
      b = ops::cat(col, 2);
    }
    opt.bias = opt.bias.defined() ? ops::add(opt.bias, b) : b;
  }
  return img && has_text;
}

Tensor MultiwayTransformer::forward(const Tensor& x, const std::vector<ExpertSpan>& spans, ops::AttentionOptions opt,
                                    Generator* drop_gen) const {
  const bool fused = prepare(x, spans, opt);
  Tensor h = x;
  for (size_t i = 0; i < blocks->size(); ++i) h = (*blocks)[i].forward(h, spans, fused, opt, drop_gen);
  return norm->forward(h);
}

std::vector<Tensor> MultiwayTransformer::forward_each(const Tensor& x, const std::vector<ExpertSpan>& spans,
                                                      ops::AttentionOptions opt) const {
  const bool fused = prepare(x, spans, opt);
  std::vector<Tensor> out;
  Tensor h = x;
  for (size_t i = 0; i < blocks->size(); ++i) {
    h = (*blocks)[i].forward(h, spans, fused, opt, nullptr);
    out.push_back(norm->forward(h));
  }
  return out;
}

Tensor MultiwayTransformer::fuse(const std::map<std::string, Tensor>& inputs, Generator* drop_gen, const PatchMask* masked) const {
  LOOM_CHECK(image_ && text_, "MultiwayTransformer: fuse needs the image and text towers attached");
  auto it = inputs.find("image"), tt = inputs.find("text");
  LOOM_CHECK(it != inputs.end() && tt != inputs.end(), "MultiwayTransformer: fuse reads 'text' and 'image'");
  LOOM_CHECK(!masked || masked->modality == "image", "MultiwayTransformer: only the image's patches can be masked, not ",
             masked ? masked->modality : "");
  const Tensor& tokens = tt->second;
  Tensor text = text_->embed_tokens(tokens);  // [B, T, W]
  Tensor image = masked ? image_->prepend_cls(image_->embed_patches(it->second, masked->mask, masked->token))
                        : image_->embed_image(it->second);  // [B, 1+N, W]
  LOOM_CHECK(text.size(0) == image.size(0), "MultiwayTransformer: fuse got ", text.size(0), " texts and ", image.size(0),
             " images");
  const int64_t B = text.size(0), T = text.size(1), I = image.size(1);
  ops::AttentionOptions opt;
  Tensor pad = text_->padding_mask(tokens);
  opt.key_padding_mask = ops::cat({pad, Tensor::zeros({B, I}, pad.dtype(), pad.device())}, 1);
  return forward(ops::cat({text, image}, 1), {{Expert::text, T}, {Expert::image, I}}, opt, drop_gen);
}

MultiwayImageTower::MultiwayImageTower(ViTConfig c, std::shared_ptr<MultiwayTransformer> shared, Generator& gen)
    : ViT([&] {
        c.layers = 0;
        c.ln_post = false;
        c.width = shared->config.width;
        return c;
      }(),
          gen),
      shared_(std::move(shared)) {
  LOOM_CHECK(!shared_->config.rel_pos_bias ||
                 (shared_->config.grid_h == config.grid_h() && shared_->config.grid_w == config.grid_w()),
             "MultiwayImageTower: the relative position bias is for a ", shared_->config.grid_h, "x",
             shared_->config.grid_w, " grid, the images make ", config.grid_h(), "x", config.grid_w());
  shared_->attach(this);
}

Tensor MultiwayImageTower::forward_blocks(const Tensor& x, Generator* drop_gen) const {
  return shared_->forward(x, {{Expert::image, x.size(1)}}, {}, drop_gen);
}

std::vector<Tensor> MultiwayImageTower::block_outputs(const Tensor& images) const {
  const Tensor x = embed_image(images);
  return shared_->forward_each(x, {{Expert::image, x.size(1)}}, {});
}

MultiwayTextTower::MultiwayTextTower(TextConfig c, std::shared_ptr<MultiwayTransformer> shared, Generator& gen)
    : Bert([&] {
        c.type = "bert";
        c.layers = 0;
        c.width = shared->config.width;
        c.heads = shared->config.heads;
        return c;
      }(),
          gen),
      shared_(std::move(shared)) {
  shared_->attach(this);
}

Tensor MultiwayTextTower::forward_layers(const Tensor& x, const ops::AttentionOptions& opt, Generator* drop_gen) const {
  return shared_->forward(x, {{Expert::text, x.size(1)}}, opt, drop_gen);
}

}  // namespace loom
