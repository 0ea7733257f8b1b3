// task.type: mim — BEiT's masked image modelling (Bao et al. 2021; BEiT v2's targets, Peng et al. 2022)
// on the model's image tower: block-wise masking (data/masking.h: about mask_ratio of the patches, in
// blocks of at least min_block), the masked patches' embeddings replaced by a learned mask token before
// the positions are added, and a linear head ("mim_head") predicting, at the masked positions, the
// visual-token id a frozen tokenizer (task.tokenizer: a vqkd model of the recipe's frozen section)
// gives the unmasked image. Loss: cross-entropy over the masked positions (train/mim, train/mim_acc).
// Evaluated on held-out images with the same masks every time (eval/mim_acc, eval/mim_loss) and a
// picture of the masks (eval/mim_masks_step_N.png); eval.probe measures the encoder.
// With `with_text: true` (VL-BEiT's masked vision-language modelling, image side) the masked image is
// read with its caption through the model's fusion encoder (model.type: vlmo), so the text can fill
// in what the mask hides.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include "core/autograd.h"
#include "data/image.h"
#include "data/masking.h"
#include "layers/vqkd.h"
#include "trainers/tasks/task.h"

namespace loom {
namespace {

constexpr uint64_t kMimSalt = 0x6D696Dull;  // "mim"

struct MimSpec {
  std::string input = "image";
  std::string tokenizer, tokenizer_tower = "image";
  std::string text;  // with_text: the text the fusion encoder reads beside the image; empty: the image alone
  double mask_ratio = 0.4;
  data::BlockMasking blocks;
  int64_t codebook_size = 0;
  int64_t pictures = 8;
};

// The mask token and the linear head onto the tokenizer's codebook. Parameters: mask_token [W];
// child: head (Linear W -> K).
class MimHead : public Module {
 public:
  MimHead(int64_t width, int64_t codes, Generator& gen) : width_(width), codes_(codes) {
    mask_token = register_parameter("mask_token", ops::mul(ops::randn({width}, gen), 0.02), NoDecay);
    head = std::make_shared<Linear>(width, codes, true, gen, 0.02);
    register_module("head", head);
  }
  bool fits(int64_t width, int64_t codes) const { return width == width_ && codes == codes_; }
  Tensor mask_token;
  std::shared_ptr<Linear> head;

 private:
  int64_t width_, codes_;
};

// Row-major masked positions of mask [B, N] as flat indices into [B * N] (CPU).
Tensor masked_positions(const Tensor& mask) {
  const std::vector<float> m = mask.to_vector<float>();
  std::vector<int64_t> pos;
  for (size_t i = 0; i < m.size(); ++i)
    if (m[i] != 0) pos.push_back(int64_t(i));
  return Tensor::from(pos, {int64_t(pos.size())}, DType::i64);
}

class MimTask : public Task {
 public:
  MimTask(const MimSpec& s, TaskEnv& env)
      : s_(s), tok_(env.tokenizer), mask_gen_(env.seed ^ kMimSalt), eval_seed_(env.seed ^ kMimSalt ^ 0xE7A1ull) {
    encoder_ = &patch_tower(env.model, s.input, "task mim");
    if (!s.text.empty()) {
      fusion_ = env.model.fusion();
      LOOM_CHECK(fusion_ && fusion_->fuses() == std::vector<std::string>({s.text, s.input}),
                 "task mim with_text needs a model whose fusion encoder reads [", s.text, "; ", s.input, "] (model.type: vlmo)");
      LOOM_CHECK(tok_, "task mim with_text needs a tokenizer");
      text_tower_ = &env.model.tower(s.text);
    }
    MultimodalModel& tok = frozen_model(env, s.tokenizer, "task mim");
    tok_vit_ = &patch_tower(tok, s.tokenizer_tower, "task mim's tokenizer");
    tok_vq_ = dynamic_cast<VqKd*>(tok.child("vqkd").get());
    LOOM_CHECK(tok_vq_, "task mim: the frozen model '", s.tokenizer, "' is no visual tokenizer (it has no vqkd)");
    LOOM_CHECK(tok_vq_->config.codebook_size == s.codebook_size, "task mim: the tokenizer's codebook has ",
               tok_vq_->config.codebook_size, " codes, its recipe says ", s.codebook_size);
    const int64_t N = encoder_->config.num_patches();
    s_.blocks.count = std::clamp<int64_t>(std::llround(s.mask_ratio * double(N)), 1, N - 1);
    if (auto existing = std::dynamic_pointer_cast<MimHead>(env.model.child("mim_head"))) {
      LOOM_CHECK(existing->fits(encoder_->config.width, s.codebook_size), "stage ", env.stage,
                 ": its mim head differs from the one an earlier stage added to the model");
      head_ = existing.get();
    } else {
      LOOM_CHECK(!env.model.has_child("mim_head"), "task mim: the model already has a child 'mim_head' of another kind");
      Generator g(env.seed ^ kMimSalt ^ 0x1ull);
      auto h = std::make_shared<MimHead>(encoder_->config.width, s.codebook_size, g);
      added_ = h->parameter_count();
      head_ = &env.model.register_module("mim_head", h);
    }
  }
  int64_t added_parameters() const { return added_; }
  void configure(data::LoaderConfig& c) const override {
    configure_input(encoder_->input(), c);
    if (text_tower_) configure_input(text_tower_->input(), c);
  }

  struct Pass { Tensor loss, correct, mask; int64_t masked = 0; };
  // texts: the token ids read beside the images (with_text), else undefined.
  Pass run(const Tensor& images, const Tensor& texts, Generator& gen, Generator* drop_gen, int64_t offset) const {
    const ViTConfig& v = encoder_->config;
    const int64_t B = images.size(0), N = v.num_patches();
    const Device dev = images.device();
    Tensor targets;
    {
      NoGradGuard ng;  // the tokenizer's ids of the whole image
      targets = tok_vq_->lookup(tok_vq_->project(tok_vit_->forward_tokens(images).narrow(1, 1, N))).reshape({B * N});
    }
    Pass p;
    p.mask = data::block_mask(B, v.grid_h(), v.grid_w(), s_.blocks, gen, offset);
    const Tensor pos = masked_positions(p.mask).to(dev);
    p.masked = pos.size(0);
    Tensor h;
    if (fusion_) {  // [text; class token; patches]: the patches follow the text and the image's class token
      const FusionEncoder::PatchMask masked{s_.input, p.mask.to(dev), head_->mask_token};
      h = fusion_->fuse({{s_.text, texts.to(dev)}, {s_.input, images}}, drop_gen, &masked).narrow(1, texts.size(1) + 1, N);
    } else {
      Tensor x = encoder_->embed_patches(images, p.mask.to(dev), head_->mask_token);
      h = encoder_->forward_blocks(encoder_->prepend_cls(x), drop_gen).narrow(1, 1, N);
    }
    h = ops::index_select(h.reshape({B * N, v.width}), 0, pos);
    const Tensor logits = head_->head->forward(h);
    const Tensor want = ops::index_select(targets, 0, pos);
    p.loss = ops::cross_entropy(logits, want);
    NoGradGuard ng;
    p.correct = ops::sum(ops::eq(ops::argmax(logits, -1), want).to(DType::f32));
    return p;
  }

  std::vector<LossPart> forward(const data::Batch& b, Generator& drop_gen, StepContext&) override {
    Pass p = run(b[s_.input], s_.text.empty() ? Tensor() : b[s_.text], mask_gen_, &drop_gen, b.global_offset);
    last_correct_ = p.correct;
    last_masked_ = p.masked;
    return {{"mim", p.loss}};
  }
  Metrics train_metrics() const override {
    if (!last_correct_.defined() || last_masked_ == 0) return {};
    return {{"train/mim_acc", last_correct_.item<double>() / double(last_masked_)}};
  }

  bool evaluates() const override { return true; }
  Metrics evaluate(const EvalEnv& env) override {
    if (!env.data) return {};
    const bool was_training = encoder_->is_training();
    encoder_->eval();
    head_->eval();
    if (fusion_) const_cast<FusionEncoder*>(fusion_)->eval();
    NoGradGuard ng;
    data::LoaderConfig lc = loader_config(*env.data, 0, false);
    configure(lc);
    lc.read_audio = false;
    data::Loader loader(env.data->rows, fusion_ ? tok_ : nullptr, lc);
    Generator gen(eval_seed_);
    const int64_t limit = env.max_samples > 0 ? env.max_samples : 2000;
    double loss_sum = 0, correct = 0;
    int64_t seen = 0, masked = 0;
    while (seen < limit) {
      auto b = loader.next();
      if (!b) break;
      Tensor images = (*b)[s_.input].to(encoder_->device());
      Tensor texts = fusion_ ? (*b)[s_.text] : Tensor();
      if (images.size(0) > limit - seen) {
        images = images.narrow(0, 0, limit - seen);
        if (texts.defined()) texts = texts.narrow(0, 0, limit - seen);
      }
      Pass p = run(images, texts, gen, nullptr, seen);
      if (seen == 0 && s_.pictures > 0 && !env.run_dir.empty()) picture(images, p.mask, *env.data, env);
      loss_sum += p.loss.item<double>() * double(p.masked);
      correct += p.correct.item<double>();
      masked += p.masked;
      seen += images.size(0);
    }
    LOOM_CHECK(seen > 0, env.data->manifest, ": no evaluation images could be read");
    encoder_->train(was_training);
    head_->train(was_training);
    if (fusion_) const_cast<FusionEncoder*>(fusion_)->train(was_training);
    return {{"eval/mim_loss", loss_sum / double(masked)}, {"eval/mim_acc", correct / double(masked)},
            {"eval/samples", double(seen)}};
  }

  nlohmann::json state() const override { return generator_state("mask_rng", mask_gen_); }
  void load_state(const nlohmann::json& st, const std::string& source) override {
    load_generator_state(mask_gen_, st, "mask_rng", source, "mim");
  }

 private:
  // Rows of [image | image with its masked patches darkened], upscaled, to eval/mim_masks_step_N.png.
  void picture(const Tensor& images_in, const Tensor& mask, const DataSpec& data, const EvalEnv& env) const {
    const ViTConfig& v = encoder_->config;
    const int64_t n = std::min<int64_t>(s_.pictures, images_in.size(0)), C = v.channels, H = v.height(), W = v.width_px();
    Tensor img = images_in.narrow(0, 0, n).to(DType::f32).to(Device::cpu());
    std::vector<float> means(static_cast<size_t>(C)), stds(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) {
      means[size_t(c)] = float(data.transform.mean.size() == 1 ? data.transform.mean[0] : data.transform.mean[size_t(c)]);
      stds[size_t(c)] = float(data.transform.std.size() == 1 ? data.transform.std[0] : data.transform.std[size_t(c)]);
    }
    img = ops::add(ops::mul(img, Tensor::from(stds, {1, C, 1, 1})), Tensor::from(means, {1, C, 1, 1}));
    const Tensor patches = ops::patchify(img, v.patch);  // [n, N, P]
    const Tensor m = mask.narrow(0, 0, n).reshape({n, mask.size(1), 1});
    const Tensor shaded = ops::unpatchify(ops::add(ops::mul(patches, ops::rsub(1.0, ops::mul(m, 0.75))), ops::mul(m, 0.15)),
                                          v.patch, C, H, W);
    Tensor grid = ops::cat({img, shaded}, 3);  // [n, C, H, 2W]
    grid = grid.permute({1, 0, 2, 3}).reshape({C, n * H, 2 * W});
    const int64_t up = std::max<int64_t>(1, 128 / std::max<int64_t>(H, 1));
    grid = grid.reshape({C, n * H, 1, 2 * W, 1}).expand({C, n * H, up, 2 * W, up}).reshape({C, n * H * up, 2 * W * up});
    const auto path = std::filesystem::path(env.run_dir) / "eval" / str_cat("mim_masks_step_", env.step, ".png");
    std::filesystem::create_directories(path.parent_path());
    data::write_png(path.string(), ops::clamp(grid, 0.0, 1.0));
    if (env.pictures) env.pictures->emplace_back("eval/mim_masks", path.string());
  }

  MimSpec s_;
  const data::TextTokenizer* tok_ = nullptr;
  const FusionEncoder* fusion_ = nullptr;
  const Encoder* text_tower_ = nullptr;
  ViT* encoder_ = nullptr;
  ViT* tok_vit_ = nullptr;
  VqKd* tok_vq_ = nullptr;
  MimHead* head_ = nullptr;
  int64_t added_ = 0;
  Generator mask_gen_;
  uint64_t eval_seed_;
  Tensor last_correct_;
  int64_t last_masked_ = 0;
};

}  // namespace

TaskSpec parse_mim(const Config& c, const std::string& k, const ModelSpec& model) {
  MimSpec s;
  s.input = c.str(k + ".input", "image");
  const TowerSpec* tower = model.tower(s.input);
  if (!tower || tower->input.kind != "image" || tower->grid_h == 0)
    c.fail(c.has(k + ".input") ? k + ".input" : k + ".type",
           str_cat("task mim needs an image tower '", s.input, "', and the model has: ", model.describe_towers()));
  if (!c.has(k + ".tokenizer")) c.fail(k + ".tokenizer", "required key is missing: the frozen visual tokenizer (a vqkd run) whose ids are the targets");
  const FrozenModel& tok = named_frozen(c, k + ".tokenizer", model);
  s.tokenizer = c.str(k + ".tokenizer");
  if (std::find(tok.task_types.begin(), tok.task_types.end(), "vqkd") == tok.task_types.end() || !tok.sizes.count("codebook_size"))
    c.fail(k + ".tokenizer", str_cat(tok.key, " is no visual tokenizer: its recipe trains no vqkd task"));
  s.codebook_size = tok.sizes.at("codebook_size");
  s.tokenizer_tower = c.str(k + ".tokenizer_tower", "image");
  const TowerSpec* tt = tok.model->tower(s.tokenizer_tower);
  if (!tt || tt->grid_h == 0)
    c.fail(k + ".tokenizer", str_cat(tok.key, " has no image tower '", s.tokenizer_tower, "' (its towers: ", tok.model->describe_towers(), ")"));
  if (tt->grid_h != tower->grid_h || tt->grid_w != tower->grid_w || tt->input.channels != tower->input.channels ||
      tt->input.height != tower->input.height || tt->input.width != tower->input.width)
    c.fail(k + ".tokenizer", str_cat("the tokenizer (", tok.key, ") reads ", tt->input.channels, "x", tt->input.height, "x",
                                     tt->input.width, " images as a ", tt->grid_h, "x", tt->grid_w, " patch grid, and the ",
                                     s.input, " tower ", tower->input.channels, "x", tower->input.height, "x", tower->input.width,
                                     " as ", tower->grid_h, "x", tower->grid_w, ": its ids would not be this tower's patches"));
  s.mask_ratio = c.f64(k + ".mask_ratio", 0.4);
  if (!(s.mask_ratio > 0 && s.mask_ratio < 1)) c.fail(k + ".mask_ratio", str_cat("must be in (0, 1), got ", s.mask_ratio));
  const int64_t N = tower->grid_h * tower->grid_w;
  s.blocks.min_block = c.i64(k + ".min_block", 16);
  if (s.blocks.min_block < 1) c.fail(k + ".min_block", "must be >= 1");
  if (s.blocks.min_block >= N)
    c.fail(k + ".min_block", str_cat(s.blocks.min_block, " patches do not fit the ", tower->grid_h, "x", tower->grid_w, " grid"));
  const int64_t count = std::llround(s.mask_ratio * double(N));
  if (count < 1 || count >= N)
    c.fail(k + ".mask_ratio", str_cat(s.mask_ratio, " of ", N, " patches masks ", count, ": at least one and fewer than all"));
  if (s.blocks.min_block > count)
    c.fail(k + ".min_block", str_cat("blocks of ", s.blocks.min_block, " patches are larger than the ", count,
                                     " masked (mask_ratio ", s.mask_ratio, " of ", N, ")"));
  s.blocks.min_aspect = c.f64(k + ".min_aspect", 0.3);
  if (!(s.blocks.min_aspect > 0 && s.blocks.min_aspect <= 1)) c.fail(k + ".min_aspect", "must be in (0, 1]");
  if (c.boolean(k + ".with_text", false)) {
    s.text = "text";
    if (model.fusion_over.empty() || !model.has("text"))
      c.fail(k + ".with_text", str_cat("reading the masked image with its text needs a fusion encoder over both (model.type: "
                                       "vlmo); model.type ", model.type, " has none"));
  }
  s.pictures = c.i64(k + ".pictures", s.text.empty() ? 8 : 0);
  if (s.pictures < 0) c.fail(k + ".pictures", "must be >= 0");
  TaskSpec spec;
  spec.needs = {s.input};
  if (!s.text.empty()) {
    spec.needs.push_back(s.text);
    spec.needs_text = true;
  }
  spec.build = [s](TaskEnv& env) -> std::unique_ptr<Task> {
    auto t = std::make_unique<MimTask>(s, env);
    report_added(env, "mim", "mim_head", t->added_parameters());
    return t;
  };
  return spec;
}

}  // namespace loom
