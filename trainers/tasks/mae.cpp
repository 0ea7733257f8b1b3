// task.type: mae — masked autoencoding (He et al. 2021; AudioMAE, Huang et al. 2022, on spectrograms)
// on the model's image or audio tower (task.input; the first by default): random (or time / frequency structured,
// task.masking) masking by argsort of noise per sample, the encoder on the visible patches (plus the class
// token) only, a decoder of its own width and depth ("mae_decoder", added to the model), MSE over the
// masked patches with norm_pix_loss. Evaluated by the loss on held-out images and a picture
// (original | masked | reconstruction | reconstruction with the visible patches pasted in; for audio,
// spectrograms with low frequencies at the bottom).
#include <algorithm>
#include <cmath>
#include <functional>
#include <filesystem>
#include "data/image.h"
#include "layers/mae.h"
#include "losses/masked.h"
#include "trainers/tasks/task.h"

namespace loom {
namespace {

constexpr uint64_t kMaskSalt = 0x6D61736Bull;    // "mask"
constexpr uint64_t kDecoderSalt = 0x646563ull;   // "dec"

struct MaeSpec {
  double mask_ratio = 0.75;
  std::string masking = "random";  // random | time | frequency (mask_noise)
  bool norm_pix_loss = true;
  MaeDecoderConfig decoder;
  int64_t reconstructions = 8;  // images in eval/recon_step_N.png (0: no picture)
  std::string input;            // the modality (batch key) whose tower it trains: image | audio
  bool spectrogram = false;     // the tower reads audio (pictures drawn as spectrograms)
  // Joint MAE (CAV-MAE): several inputs under the model's joint layers, one shared decoder.
  std::vector<std::string> inputs;
};

// The model's "mae_decoder": the one an earlier stage added (a second MAE stage continues with it;
// `same` checks it is the decoder this stage describes), or a new one from `config`, drawn from its own
// stream so the model's other weights do not depend on it. `added`: its parameters when new.
template <class Decoder, class Config_, class Same>
Decoder* find_or_add_decoder(TaskEnv& env, const Config_& config, int64_t& added, Same same) {
  if (auto existing = std::dynamic_pointer_cast<Decoder>(env.model.child("mae_decoder"))) {
    LOOM_CHECK(same(existing->config), "stage ", env.stage, ": its mae decoder differs from the one an earlier stage added to the model");
    return existing.get();
  }
  LOOM_CHECK(!env.model.has_child("mae_decoder"), "task mae: the model already has a child 'mae_decoder' of another kind");
  Generator gen(env.seed ^ kDecoderSalt);
  auto d = std::make_shared<Decoder>(config, gen);
  added = d->parameter_count();
  return &env.model.register_module("mae_decoder", d);
}

// Rows of [original | masked | reconstruction | reconstruction + visible], upscaled for viewing, to `path`.
void draw_reconstruction(const Tensor& images, const Tensor& pred_patches, const Tensor& mask_, const ViTConfig& v,
                       bool norm_pix_loss, bool spectrogram, const data::ImageTransform& transform, int64_t count,
                       const std::filesystem::path& path) {
  const int64_t n = std::min<int64_t>(count, images.size(0)), C = v.channels, H = v.height(), W = v.width_px();
  // Drawn on the CPU in f32, whatever the device and precision of the run.
  auto host = [n](const Tensor& t) { return t.narrow(0, 0, n).to(DType::f32).to(Device::cpu()); };
  Tensor img = host(images);
  Tensor patches = ops::patchify(img, v.patch);  // [n, N, P]
  Tensor pred = host(pred_patches);
  if (norm_pix_loss) {  // undo the per-patch normalisation with the true patch's statistics
    PatchStats st = patch_stats(patches);
    pred = ops::add(ops::mul(pred, ops::sqrt(ops::add(st.var, 1e-6))), st.mean);
  }
  Tensor mask = host(mask_).reshape({n, mask_.size(1), 1});  // 1 = masked
  Tensor keep = ops::rsub(1.0, mask);
  Tensor masked = ops::unpatchify(ops::mul(patches, keep), v.patch, C, H, W);
  Tensor recon = ops::unpatchify(pred, v.patch, C, H, W);
  Tensor pasted = ops::unpatchify(ops::add(ops::mul(patches, keep), ops::mul(pred, mask)), v.patch, C, H, W);
  std::function<Tensor(const Tensor&)> show;
  if (spectrogram) {  // spectrograms: scaled by the originals' range to [0, 1], low frequencies at the bottom
    const float lo = ops::neg(ops::amax(ops::neg(img))).item<float>(), hi = ops::amax(img).item<float>();
    const double scale = 1.0 / std::max(1e-6f, hi - lo);
    std::vector<int64_t> rows(static_cast<size_t>(H));
    for (int64_t i = 0; i < H; ++i) rows[size_t(i)] = H - 1 - i;
    const Tensor flip = Tensor::from(rows, {H}, DType::i64);
    show = [lo, scale, flip](const Tensor& x) { return ops::index_select(ops::mul(ops::add(x, -lo), scale), 2, flip); };
  } else {  // images: back from the loader's normalisation to [0, 1]
    const auto& t = transform;
    std::vector<float> means(static_cast<size_t>(C)), stds(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) {
      means[size_t(c)] = float(t.mean.size() == 1 ? t.mean[0] : t.mean[size_t(c)]);
      stds[size_t(c)] = float(t.std.size() == 1 ? t.std[0] : t.std[size_t(c)]);
    }
    Tensor mean_t = Tensor::from(means, {1, C, 1, 1}), std_t = Tensor::from(stds, {1, C, 1, 1});
    show = [mean_t, std_t](const Tensor& x) { return ops::add(ops::mul(x, std_t), mean_t); };
  }
  Tensor grid = ops::cat({show(img), show(masked), show(recon), show(pasted)}, 3);  // [n, C, H, 4W]
  grid = grid.permute({1, 0, 2, 3}).reshape({C, n * H, 4 * W});
  const int64_t up = std::max<int64_t>(1, 128 / std::max<int64_t>(H, 1));  // nearest-neighbour upscale
  grid = grid.reshape({C, n * H, 1, 4 * W, 1}).expand({C, n * H, up, 4 * W, up}).reshape({C, n * H * up, 4 * W * up});
  std::filesystem::create_directories(path.parent_path());
  data::write_png(path.string(), grid);
}


class MaeTask : public Task {
 public:
  MaeTask(const MaeSpec& s, TaskEnv& env)
      : s_(s), mask_gen_(env.seed ^ kMaskSalt), eval_seed_(env.seed ^ kMaskSalt ^ 0xE7A1ull) {
    encoder_ = &patch_tower(env.model, s.input, "task mae");
    const ViTConfig& v = encoder_->config;
    MaeDecoderConfig dc = s.decoder;
    dc.encoder_width = v.width;
    dc.grid_h = v.grid_h();
    dc.grid_w = v.grid_w();
    dc.patch_dim = v.patch * v.patch * v.channels;
    decoder_ = find_or_add_decoder<MaeDecoder>(env, dc, added_, [&](const MaeDecoderConfig& e) {
      return e.width == dc.width && e.layers == dc.layers && e.heads == dc.heads && e.patch_dim == dc.patch_dim;
    });
  }
  int64_t added_parameters() const { return added_; }

  void configure(data::LoaderConfig& c) const override { configure_input(encoder_->input(), c); }

  struct Pass { Tensor pred, target, mask, loss; };
  // The batch's rows are rows [offset, offset + B) of a global batch of `whole` (data parallelism):
  // the noise is drawn for all of it, so every example gets the mask it gets in one process.
  Pass run(const Tensor& images, Generator& noise_gen, Generator* drop_gen, int64_t offset = 0, int64_t whole = 0) const {
    Tensor tokens = encoder_->embed_patches(images);  // [B, N, W]
    const int64_t B = tokens.size(0);
    whole = std::max(whole, offset + B);
    const ViTConfig& v = encoder_->config;
    Tensor noise = mask_noise(whole, v.grid_h(), v.grid_w(), s_.masking, noise_gen, tokens.device());
    if (whole != B) noise = noise.narrow(0, offset, B).contiguous();
    Masking m = random_masking(tokens, s_.mask_ratio, noise);
    Tensor latent = encoder_->forward_blocks(encoder_->prepend_cls(m.kept), drop_gen);
    Pass p;
    p.pred = decoder_->forward(latent, m.ids_restore, drop_gen);
    p.target = mae_target(ops::patchify(images, encoder_->config.patch), s_.norm_pix_loss);
    p.mask = m.mask;
    p.loss = masked_mse(p.pred, p.target, p.mask);
    return p;
  }

  std::vector<LossPart> forward(const data::Batch& b, Generator& drop_gen, StepContext&) override {
    return {{"mae", run(b[s_.input], mask_gen_, &drop_gen, b.global_offset, b.global_size).loss}};
  }

  bool evaluates() const override { return true; }
  Metrics evaluate(const EvalEnv& env) override {
    if (!env.data) return {};
    const bool was_training = encoder_->is_training();
    encoder_->eval();
    decoder_->eval();
    NoGradGuard ng;
    data::LoaderConfig lc = loader_config(*env.data, 0, false);
    configure(lc);
    lc.read_images = s_.input == "image";
    lc.read_audio = s_.input == "audio";
    data::Loader loader(env.data->rows, nullptr, lc);
    Generator noise(eval_seed_);  // the same masks at every evaluation, so pictures and losses compare
    const int64_t limit = env.max_samples > 0 ? env.max_samples : 1000;
    double sum = 0;
    int64_t seen = 0;
    while (seen < limit) {
      auto b = loader.next();
      if (!b) break;
      Tensor images = (*b)[s_.input].to(encoder_->device());
      if (images.size(0) > limit - seen) images = images.narrow(0, 0, limit - seen);
      Pass p = run(images, noise, nullptr);
      if (seen == 0 && s_.reconstructions > 0 && !env.run_dir.empty()) picture(images, p, *env.data, env);
      sum += p.loss.item<double>() * double(images.size(0));
      seen += images.size(0);
    }
    LOOM_CHECK(seen > 0, env.data->manifest, ": no evaluation examples could be read");
    encoder_->train(was_training);
    decoder_->train(was_training);
    return {{"eval/mae_loss", sum / double(seen)}, {"eval/samples", double(seen)}};
  }

  nlohmann::json state() const override { return generator_state("mask_rng", mask_gen_); }
  void load_state(const nlohmann::json& st, const std::string& source) override { load_generator_state(mask_gen_, st, "mask_rng", source, "mae"); }

 private:
  void picture(const Tensor& images, const Pass& p, const DataSpec& data, const EvalEnv& env) const {
    const auto path = std::filesystem::path(env.run_dir) / "eval" / str_cat("recon_step_", env.step, ".png");
    draw_reconstruction(images, p.pred, p.mask, encoder_->config, s_.norm_pix_loss, s_.spectrogram, data.transform,
                        s_.reconstructions, path);
    if (env.pictures) env.pictures->emplace_back("eval/reconstruction", path.string());
  }

  MaeSpec s_;
  ViT* encoder_ = nullptr;
  MaeDecoder* decoder_ = nullptr;
  int64_t added_ = 0;
  Generator mask_gen_;
  uint64_t eval_seed_;
};


// task.inputs: [audio, image] — CAV-MAE's joint masked autoencoding: each modality masked on its own
// (mask_ratio of its patches), its visible tokens through its tower's blocks, then the model's joint
// layers over all of them together, one decoder (layers/mae.h: JointMaeDecoder) reconstructing every
// modality; a loss per modality (train/mae_<m>). Each tower's outputs on its visible tokens are shared
// with the stage's other tasks as "<m>.tokens" (CAV-MAE's contrastive loss reads the same masked pass).
class JointMaeTask : public Task {
 public:
  JointMaeTask(const MaeSpec& s, TaskEnv& env)
      : s_(s), model_(env.model), mask_gen_(env.seed ^ kMaskSalt), eval_seed_(env.seed ^ kMaskSalt ^ 0xE7A1ull) {
    const JointLayers* joint = model_.joint();
    LOOM_CHECK(joint, "task mae over inputs [", join_names(s.inputs), "] needs joint layers over them (model.joint)");
    JointMaeDecoderConfig dc;
    dc.width = s.decoder.width, dc.layers = s.decoder.layers, dc.heads = s.decoder.heads, dc.mlp_ratio = s.decoder.mlp_ratio;
    for (const std::string& m : s.inputs) {
      LOOM_CHECK(joint->covers(m), "task mae: the model's joint layers do not cover the ", m, " tower");
      ViT* v = &patch_tower(model_, m, "task mae");
      encoders_.push_back(v);
      dc.encoder_width = v->config.width;
      dc.parts.push_back({m, v->config.grid_h(), v->config.grid_w(), v->config.patch * v->config.patch * v->config.channels});
    }
    decoder_ = find_or_add_decoder<JointMaeDecoder>(env, dc, added_, [&](const JointMaeDecoderConfig& e) {
      bool same = e.width == dc.width && e.layers == dc.layers && e.heads == dc.heads && e.parts.size() == dc.parts.size();
      for (size_t i = 0; same && i < e.parts.size(); ++i)
        same = e.parts[i].modality == dc.parts[i].modality && e.parts[i].patch_dim == dc.parts[i].patch_dim;
      return same;
    });
  }
  int64_t added_parameters() const { return added_; }
  void configure(data::LoaderConfig& c) const override {
    for (const ViT* v : encoders_) configure_input(v->input(), c);
  }

  struct Pass {
    std::vector<Tensor> pred, target, mask, loss, visible;  // per input; visible: the tower's tokens [B, 1+K, W]
  };
  Pass run(const data::Batch& b, Generator& noise_gen, Generator* drop_gen, int64_t offset, int64_t whole) const {
    Pass p;
    std::vector<Tensor> ids_restore;
    for (size_t i = 0; i < s_.inputs.size(); ++i) {
      const ViT& enc = *encoders_[i];
      const Tensor& x = b[s_.inputs[i]];
      Tensor tokens = enc.embed_patches(x);
      const int64_t B = tokens.size(0);
      const int64_t all = std::max(whole, offset + B);
      Tensor noise = mask_noise(all, enc.config.grid_h(), enc.config.grid_w(), s_.masking, noise_gen, tokens.device());
      if (all != B) noise = noise.narrow(0, offset, B).contiguous();
      Masking m = random_masking(tokens, s_.mask_ratio, noise);
      p.visible.push_back(enc.forward_blocks(enc.prepend_cls(m.kept), drop_gen));
      p.mask.push_back(m.mask);
      p.target.push_back(mae_target(ops::patchify(x, enc.config.patch), s_.norm_pix_loss));
      ids_restore.push_back(m.ids_restore);
    }
    std::vector<Tensor> fused = model_.joint()->forward(p.visible, drop_gen);
    std::vector<Tensor> latents;  // the visible patches after the joint layers, class tokens dropped
    for (const Tensor& f : fused) latents.push_back(f.narrow(1, 1, f.size(1) - 1));
    p.pred = decoder_->forward(latents, ids_restore, drop_gen);
    for (size_t i = 0; i < s_.inputs.size(); ++i) p.loss.push_back(masked_mse(p.pred[i], p.target[i], p.mask[i]));
    return p;
  }

  std::vector<LossPart> forward(const data::Batch& b, Generator& drop_gen, StepContext& step) override {
    Pass p = run(b, mask_gen_, &drop_gen, b.global_offset, b.global_size);
    std::vector<LossPart> out;
    for (size_t i = 0; i < s_.inputs.size(); ++i) {
      out.push_back({"mae_" + s_.inputs[i], p.loss[i]});
      step.shared[s_.inputs[i] + ".tokens"] = p.visible[i];
    }
    return out;
  }

  bool evaluates() const override { return true; }
  Metrics evaluate(const EvalEnv& env) override {
    if (!env.data) return {};
    const bool was_training = model_.is_training();
    model_.eval();
    NoGradGuard ng;
    data::LoaderConfig lc = loader_config(*env.data, 0, false);
    configure(lc);
    lc.read_images = std::find(s_.inputs.begin(), s_.inputs.end(), "image") != s_.inputs.end();
    lc.read_audio = std::find(s_.inputs.begin(), s_.inputs.end(), "audio") != s_.inputs.end();
    data::Loader loader(env.data->rows, nullptr, lc);
    Generator noise(eval_seed_);  // the same masks at every evaluation
    const int64_t limit = env.max_samples > 0 ? env.max_samples : 1000;
    std::vector<double> sums(s_.inputs.size(), 0.0);
    int64_t seen = 0;
    const Device dev = model_.device();
    while (seen < limit) {
      auto b = loader.next();
      if (!b) break;
      data::Batch on;
      const int64_t take = std::min<int64_t>(b->size(), limit - seen);
      for (const std::string& m : s_.inputs) on.tensors[m] = (*b)[m].narrow(0, 0, take).to(dev);
      on.indices.assign(b->indices.begin(), b->indices.begin() + take);
      Pass p = run(on, noise, nullptr, 0, 0);
      if (seen == 0 && s_.reconstructions > 0 && !env.run_dir.empty())
        for (size_t i = 0; i < s_.inputs.size(); ++i) {
          const auto path = std::filesystem::path(env.run_dir) / "eval" / str_cat("recon_", s_.inputs[i], "_step_", env.step, ".png");
          draw_reconstruction(on[s_.inputs[i]], p.pred[i], p.mask[i], encoders_[i]->config, s_.norm_pix_loss,
                              encoders_[i]->input().kind == "audio", env.data->transform, s_.reconstructions, path);
          if (env.pictures) env.pictures->emplace_back("eval/reconstruction_" + s_.inputs[i], path.string());
        }
      for (size_t i = 0; i < s_.inputs.size(); ++i) sums[i] += p.loss[i].item<double>() * double(take);
      seen += take;
    }
    LOOM_CHECK(seen > 0, env.data->manifest, ": no evaluation examples could be read");
    model_.train(was_training);
    Metrics out{{"eval/samples", double(seen)}};
    double total = 0;
    for (size_t i = 0; i < s_.inputs.size(); ++i) {
      out["eval/mae_loss_" + s_.inputs[i]] = sums[i] / double(seen);
      total += sums[i] / double(seen);
    }
    out["eval/mae_loss"] = total;
    return out;
  }

  nlohmann::json state() const override { return generator_state("mask_rng", mask_gen_); }
  void load_state(const nlohmann::json& st, const std::string& source) override { load_generator_state(mask_gen_, st, "mask_rng", source, "mae"); }

 private:
  static std::string join_names(const std::vector<std::string>& xs) {
    std::string o;
    for (const auto& x : xs) o += (o.empty() ? "" : ", ") + x;
    return o;
  }
  MaeSpec s_;
  MultimodalModel& model_;
  std::vector<ViT*> encoders_;
  JointMaeDecoder* decoder_ = nullptr;
  int64_t added_ = 0;
  Generator mask_gen_;
  uint64_t eval_seed_;
};

}  // namespace

TaskSpec parse_mae(const Config& c, const std::string& k, const ModelSpec& model) {
  MaeSpec s;
  if (c.has(k + ".inputs")) {
    if (c.has(k + ".input")) c.fail(k + ".inputs", "give input (one tower) or inputs (joint, several), not both");
    s.inputs = c.str_list(k + ".inputs", {});
    if (s.inputs.size() < 2) c.fail(k + ".inputs", "joint masked autoencoding needs at least two inputs; for one, use input");
    for (const std::string& m : s.inputs) {
      const TowerSpec* t = model.tower(m);
      if (!t || (t->input.kind != "image" && t->input.kind != "audio"))
        c.fail(k + ".inputs", str_cat(m, " is not an image or audio tower of the model (its towers: ", model.describe_towers(), ")"));
      if (std::find(model.joint_over.begin(), model.joint_over.end(), m) == model.joint_over.end())
        c.fail(k + ".inputs", str_cat("joint masked autoencoding needs joint layers over its inputs (model.joint.over), and ",
                                      m, " is not under them"));
      if (t->overlapping_patches)
        c.fail(k + ".inputs", str_cat("the ", m, " tower's patches overlap (set ", t->key, ".stride to the patch)"));
    }
  }
  s.input = c.str(k + ".input", s.inputs.empty() ? default_patch_modality(model) : s.inputs.front());
  const TowerSpec* tower = model.tower(s.input);
  if (!tower || (tower->input.kind != "image" && tower->input.kind != "audio"))
    c.fail(c.has(k + ".input") ? k + ".input" : k + ".type",
           str_cat("task mae needs an image or audio tower", s.input.empty() ? std::string() : " '" + s.input + "'",
                   ", and the model has: ", model.describe_towers()));
  if (tower->overlapping_patches)
    c.fail(k + ".type", str_cat("task mae reconstructs each patch on its own, so it needs non-overlapping patches; the ",
                                s.input, " tower's patches overlap (set ", tower->key, ".stride to the patch, as AudioMAE does)"));
  const bool audio = tower->input.kind == "audio";
  s.spectrogram = audio;
  s.mask_ratio = c.f64(k + ".mask_ratio", audio && s.inputs.empty() ? 0.8 : 0.75);  // AudioMAE masks 80%, MAE and CAV-MAE 75%
  if (!(s.mask_ratio > 0 && s.mask_ratio < 1)) c.fail(k + ".mask_ratio", "must be in (0, 1)");
  s.masking = c.choice(k + ".masking", {"random", "time", "frequency"}, "random");
  s.norm_pix_loss = c.boolean(k + ".norm_pix_loss", true);
  s.decoder.width = c.i64(k + ".decoder.width", 64);
  s.decoder.layers = c.i64(k + ".decoder.layers", 2);
  s.decoder.heads = c.i64(k + ".decoder.heads", 4);
  s.decoder.mlp_ratio = c.f64(k + ".decoder.mlp_ratio", 4.0);
  s.decoder.pos_embed = c.choice(k + ".decoder.pos_embed", {"sincos", "learned"}, "sincos");
  for (const char* key : {".decoder.width", ".decoder.layers", ".decoder.heads"})
    if (c.i64(k + key, 1) < 1) c.fail(k + key, "must be >= 1");
  if (s.decoder.width % s.decoder.heads != 0)
    c.fail(k + ".decoder.heads", str_cat("heads ", s.decoder.heads, " does not divide width ", s.decoder.width));
  if (s.decoder.pos_embed == "sincos" && s.decoder.width % 4 != 0)
    c.fail(k + ".decoder.pos_embed", "sincos needs a width divisible by 4");
  if (!(s.decoder.mlp_ratio > 0)) c.fail(k + ".decoder.mlp_ratio", "must be > 0");
  if (!s.inputs.empty() && s.decoder.pos_embed != "sincos")
    c.fail(k + ".decoder.pos_embed", "the joint decoder has fixed sin-cos positions per modality");
  s.reconstructions = c.i64(k + ".reconstructions", 8);
  if (s.reconstructions < 0) c.fail(k + ".reconstructions", "must be >= 0");
  TaskSpec spec;
  spec.needs = s.inputs.empty() ? std::vector<std::string>{s.input} : s.inputs;
  if (!s.inputs.empty()) {
    spec.build = [s](TaskEnv& env) -> std::unique_ptr<Task> {
      auto t = std::make_unique<JointMaeTask>(s, env);
      report_added(env, "mae", "a joint mae_decoder", t->added_parameters());
      return t;
    };
    return spec;
  }
  spec.build = [s](TaskEnv& env) -> std::unique_ptr<Task> {
    auto t = std::make_unique<MaeTask>(s, env);
    report_added(env, "mae", "mae_decoder", t->added_parameters());
    return t;
  };
  return spec;
}

}  // namespace loom
