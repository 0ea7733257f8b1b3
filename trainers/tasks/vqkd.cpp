// task.type: vqkd — BEiT v2's visual tokenizer by vector-quantised knowledge distillation (Peng et al.
// 2022): the model's image tower encodes the patches, "vqkd" (layers/vqkd.h) projects each into a
// small l2-normalised code space and snaps it to the nearest of codebook_size codes by cosine
// similarity, and a decoder regresses the patch features of a frozen teacher (task.teacher: a model of
// the recipe's frozen section, e.g. the CLIP demo's image tower) from the codes, with the
// straight-through gradient. Losses: vqkd_rec (1 - cosine to the teacher's features, per patch) and
// vqkd_commit (the squared distance of each vector to its code, task.commitment times). The codebook is
// no parameter: k-means on the first batch starts it, moving averages keep it, codes unused for long
// restart at vectors of the batch. Evaluated on held-out images: the fraction of codes used, the
// perplexity of their use, and the teacher-feature cosine similarity of the decoder's output. Its
// checkpoint is the visual tokenizer task mim reads (frozen.NAME).
#include <algorithm>
#include <cmath>
#include "core/autograd.h"
#include "layers/vqkd.h"
#include "trainers/distributed/communicator.h"
#include "trainers/distributed/reducer.h"
#include "trainers/tasks/task.h"

namespace loom {
namespace {

constexpr uint64_t kVqSalt = 0x76716B64ull;  // "vqkd"

struct VqKdSpec {
  std::string input = "image";
  std::string teacher, teacher_tower = "image";
  VqKdConfig vq;
  double commitment = 1.0;
  double restart_below = 1.0;  // codes whose moving-average count per step falls below this restart
};

class VqKdTask : public Task {
 public:
  VqKdTask(const VqKdSpec& s, TaskEnv& env) : s_(s), comm_(env.comm), gen_(env.seed ^ kVqSalt) {
    encoder_ = &patch_tower(env.model, s.input, "task vqkd");
    teacher_ = &patch_tower(frozen_model(env, s.teacher, "task vqkd"), s.teacher_tower, "task vqkd's teacher");
    LOOM_CHECK(teacher_->config.grid_h() == encoder_->config.grid_h() && teacher_->config.grid_w() == encoder_->config.grid_w(),
               "task vqkd: the teacher's patch grid differs from the tokenizer's");
    VqKdConfig c = s.vq;
    c.encoder_width = encoder_->config.width;
    c.grid_h = encoder_->config.grid_h();
    c.grid_w = encoder_->config.grid_w();
    c.teacher_width = teacher_->config.width;
    if (auto existing = std::dynamic_pointer_cast<VqKd>(env.model.child("vqkd"))) {
      vq_ = existing.get();
    } else {
      LOOM_CHECK(!env.model.has_child("vqkd"), "task vqkd: the model already has a child 'vqkd' of another kind");
      Generator g(env.seed ^ kVqSalt ^ 0x1ull);
      auto v = std::make_shared<VqKd>(c, g);
      added_ = v->parameter_count();
      vq_ = &env.model.register_module("vqkd", v);
    }
  }
  int64_t added_parameters() const { return added_; }
  int64_t min_batch() const override { return 1; }
  void configure(data::LoaderConfig& c) const override { configure_input(encoder_->input(), c); }

  struct Pass {
    Tensor z, ids, rec, commit, cosine;  // z [B, N, d]; ids [B, N]; losses; mean teacher cosine (no gradient)
  };
  // `training`: the first training batch starts the codebook (an evaluation before it uses the random one).
  Pass run(const Tensor& images, Generator* drop_gen, bool training) {
    const int64_t N = encoder_->config.num_patches();
    Tensor tokens = encoder_->forward_tokens(images, drop_gen).narrow(1, 1, N);
    Pass p;
    p.z = vq_->project(tokens);
    if (training && !vq_->initialised()) start_codebook(p.z);
    p.ids = vq_->lookup(p.z);
    const Tensor zq = vq_->codes(p.ids);
    const Tensor z_st = ops::add(p.z, ops::sub(zq, p.z).detach());  // straight through: forward zq, gradient to z
    const Tensor pred = vq_->decode(z_st, drop_gen);
    Tensor target;
    {
      NoGradGuard ng;
      target = teacher_->forward_tokens(images).narrow(1, 1, N);
    }
    const Tensor cos = ops::sum(ops::mul(ops::l2_normalize(pred, -1), ops::l2_normalize(target.to(pred.dtype()), -1)), {-1});
    p.rec = ops::rsub(1.0, ops::mean(cos));
    p.commit = ops::mse_loss(p.z, zq.detach());
    p.cosine = ops::mean(cos).detach();
    return p;
  }

  std::vector<LossPart> forward(const data::Batch& b, Generator& drop_gen, StepContext&) override {
    Pass p = run(b[s_.input], &drop_gen, true);
    Tensor counts, sums;
    vq_->batch_statistics(p.z, p.ids, counts, sums);
    pending_counts_ = pending_counts_.defined() ? ops::add(pending_counts_, counts) : counts;
    pending_sums_ = pending_sums_.defined() ? ops::add(pending_sums_, sums) : sums;
    pending_z_ = p.z.detach();
    return {{"vqkd_rec", p.rec}, {"vqkd_commit", p.commit, s_.commitment}};
  }

  // The codebook follows the step's assignments (every micro-batch's, every process's).
  void after_step() override {
    if (!pending_counts_.defined()) return;
    NoGradGuard ng;
    if (comm_ && comm_->world() > 1) {
      comm_->all_reduce_sum(pending_counts_);
      comm_->all_reduce_sum(pending_sums_);
    }
    const std::vector<float> c = pending_counts_.to_vector<float>();
    used_ = double(std::count_if(c.begin(), c.end(), [](float v) { return v > 0; })) / double(c.size());
    restarted_ = vq_->ema_update(pending_counts_, pending_sums_, pending_z_, gen_, s_.restart_below);
    if (comm_ && comm_->world() > 1) broadcast_tensors(*comm_, {vq_->codebook, vq_->ema_count, vq_->ema_sum}, 0);
    pending_counts_ = pending_sums_ = pending_z_ = Tensor();
  }
  Metrics train_metrics() const override { return {{"train/codebook_usage", used_}, {"train/codes_restarted", double(restarted_)}}; }

  bool evaluates() const override { return true; }
  Metrics evaluate(const EvalEnv& env) override {
    if (!env.data) return {};
    const bool was_training = encoder_->is_training();
    encoder_->eval();
    vq_->eval();
    NoGradGuard ng;
    data::LoaderConfig lc = loader_config(*env.data, 0, false);
    configure(lc);
    lc.read_audio = false;
    data::Loader loader(env.data->rows, nullptr, lc);
    const int64_t limit = env.max_samples > 0 ? env.max_samples : 2000, K = vq_->config.codebook_size;
    std::vector<double> uses(size_t(K), 0.0);
    double cos_sum = 0, rec_sum = 0;
    int64_t seen = 0;
    while (seen < limit) {
      auto b = loader.next();
      if (!b) break;
      Tensor images = (*b)[s_.input].to(encoder_->device());
      if (images.size(0) > limit - seen) images = images.narrow(0, 0, limit - seen);
      Pass p = run(images, nullptr, false);
      for (int64_t id : p.ids.to_vector<int64_t>()) uses[size_t(id)] += 1;
      cos_sum += p.cosine.item<double>() * double(images.size(0));
      rec_sum += p.rec.item<double>() * double(images.size(0));
      seen += images.size(0);
    }
    LOOM_CHECK(seen > 0, env.data->manifest, ": no evaluation images could be read");
    encoder_->train(was_training);
    vq_->train(was_training);
    double total = 0, used = 0, entropy = 0;
    for (double u : uses) total += u, used += u > 0;
    for (double u : uses)
      if (u > 0) entropy -= u / total * std::log(u / total);
    return {{"eval/codebook_usage", used / double(K)}, {"eval/codebook_perplexity", std::exp(entropy)},
            {"eval/teacher_cosine", cos_sum / double(seen)}, {"eval/vqkd_rec", rec_sum / double(seen)},
            {"eval/samples", double(seen)}};
  }

  nlohmann::json state() const override { return generator_state("vq_rng", gen_); }
  void load_state(const nlohmann::json& st, const std::string& source) override {
    load_generator_state(gen_, st, "vq_rng", source, "vqkd");
  }

 private:
  // k-means on the first batch's vectors (process 0's, then shared, so every process starts alike).
  void start_codebook(const Tensor& z) {
    vq_->init_kmeans(z, gen_);
    if (comm_ && comm_->world() > 1)
      broadcast_tensors(*comm_, {vq_->codebook, vq_->ema_count, vq_->ema_sum, vq_->initialised_flag}, 0);
  }

  VqKdSpec s_;
  distributed::Communicator* comm_ = nullptr;
  ViT* encoder_ = nullptr;
  ViT* teacher_ = nullptr;
  VqKd* vq_ = nullptr;
  int64_t added_ = 0;
  Generator gen_;
  Tensor pending_counts_, pending_sums_, pending_z_;
  double used_ = 0;
  int64_t restarted_ = 0;
};

}  // namespace

TaskSpec parse_vqkd(const Config& c, const std::string& k, const ModelSpec& model) {
  VqKdSpec s;
  s.input = c.str(k + ".input", "image");
  const TowerSpec* tower = model.tower(s.input);
  if (!tower || tower->input.kind != "image" || tower->grid_h == 0)
    c.fail(c.has(k + ".input") ? k + ".input" : k + ".type",
           str_cat("task vqkd tokenizes an image tower '", s.input, "', and the model has: ", model.describe_towers()));
  if (tower->patch_dropout > 0)
    c.fail(tower->key + ".patch_dropout", "task vqkd gives every patch a code, so its encoder cannot drop patches (set it to 0)");
  if (!c.has(k + ".teacher")) c.fail(k + ".teacher", "required key is missing: the frozen model whose features the decoder regresses");
  const FrozenModel& teacher = named_frozen(c, k + ".teacher", model);
  s.teacher = c.str(k + ".teacher");
  s.teacher_tower = c.str(k + ".teacher_tower", "image");
  const TowerSpec* tt = teacher.model->tower(s.teacher_tower);
  if (!tt || tt->input.kind != "image" || tt->grid_h == 0)
    c.fail(c.has(k + ".teacher_tower") ? k + ".teacher_tower" : k + ".teacher",
           str_cat("the teacher (", teacher.key, ") has no image tower '", s.teacher_tower, "' (its towers: ",
                   teacher.model->describe_towers(), ")"));
  if (tt->grid_h != tower->grid_h || tt->grid_w != tower->grid_w || !(tt->input.channels == tower->input.channels) ||
      tt->input.height != tower->input.height)
    c.fail(k + ".teacher", str_cat("the teacher's ", s.teacher_tower, " tower reads ", tt->input.channels, "x", tt->input.height,
                                   " images in a ", tt->grid_h, "x", tt->grid_w, " patch grid, the model's ", s.input, " tower ",
                                   tower->input.channels, "x", tower->input.height, " in ", tower->grid_h, "x", tower->grid_w,
                                   ": distillation pairs patch with patch, so they must agree"));
  s.vq.codebook_size = c.i64(k + ".codebook_size", 256);
  if (s.vq.codebook_size < 2) c.fail(k + ".codebook_size", "must be >= 2");
  s.vq.code_dim = c.i64(k + ".code_dim", 32);
  if (s.vq.code_dim < 1) c.fail(k + ".code_dim", "must be >= 1");
  s.vq.decay = c.f64(k + ".decay", 0.99);
  if (!(s.vq.decay > 0 && s.vq.decay < 1)) c.fail(k + ".decay", "must be in (0, 1)");
  s.vq.decoder_width = c.i64(k + ".decoder.width", 128);
  s.vq.decoder_layers = c.i64(k + ".decoder.layers", 1);
  s.vq.decoder_heads = c.i64(k + ".decoder.heads", 4);
  for (const char* key : {".decoder.width", ".decoder.layers", ".decoder.heads"})
    if (c.i64(k + key, 1) < 1) c.fail(k + key, "must be >= 1");
  if (s.vq.decoder_width % s.vq.decoder_heads != 0)
    c.fail(k + ".decoder.heads", str_cat("heads ", s.vq.decoder_heads, " does not divide width ", s.vq.decoder_width));
  s.commitment = c.f64(k + ".commitment", 1.0);
  if (!(s.commitment >= 0)) c.fail(k + ".commitment", "must be >= 0");
  s.restart_below = c.f64(k + ".restart_below", 1.0);
  if (!(s.restart_below >= 0)) c.fail(k + ".restart_below", "must be >= 0");
  TaskSpec spec;
  spec.needs = {s.input};
  spec.sizes = {{"codebook_size", s.vq.codebook_size}, {"code_dim", s.vq.code_dim}};
  spec.build = [s](TaskEnv& env) -> std::unique_ptr<Task> {
    auto t = std::make_unique<VqKdTask>(s, env);
    report_added(env, "vqkd", "vqkd", t->added_parameters());
    return t;
  };
  return spec;
}

}  // namespace loom
