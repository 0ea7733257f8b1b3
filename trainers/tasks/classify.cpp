// task.type: classify — supervised fine-tuning of one tower on labels (MAE's and AudioMAE's
// fine-tuning): the tower's pooled output (pool: cls, the tower's own; or mean, MAE's global pool over
// the patch tokens of an image or audio tower) through a head registered as "classifier" (linear, or an MLP with head.hidden units),
// cross-entropy with label smoothing; rows without a label are left out. Logged: train/classify and
// train/acc. Evaluated on the labelled rows of the stage's evaluation data: eval/top1, eval/top5 and
// eval/classify_loss (without smoothing).
// multi_label: true (AudioSet): the manifest's "labels" lists (the batch's "labels"), binary
// cross-entropy per class (losses/classification.h), and eval/mAP (scikit-learn's average precision per
// class, averaged over the classes with a positive in the evaluation data) with eval/classify_loss.
// mixup / cutmix (alpha; tasks/mixup.h, timm's Mixup): each training batch's labelled rows mixed
// with the batch reversed, soft targets (label smoothing first), cross-entropy against them (binary
// cross-entropy for multi-label); mixup on an audio tower's spectrograms is AudioMAE's. No train/acc
// then. A class-balanced sampler is the data's (data.NAME.sampler: balanced).
#include <algorithm>
#include <cmath>
#include "core/autograd.h"
#include "losses/classification.h"
#include "trainers/eval/average_precision.h"
#include "trainers/tasks/mixup.h"
#include "trainers/tasks/task.h"

namespace loom {
namespace {

constexpr uint64_t kClassifierSalt = 0x636C7366ull;  // "clsf"
constexpr uint64_t kMixSalt = 0x6D6978ull;          // "mix"

struct ClassifySpec {
  std::string input;
  bool mean_pool = false;
  int64_t classes = 0;
  int64_t hidden = 0;  // 0: a linear head
  double label_smoothing = 0.0;
  bool multi_label = false;
  MixSpec mix;
  double init_std = 0.01;  // the last layer's weights; small, as MAE's fine-tuning starts its head
};

// Linear(width, classes), or Linear(width, hidden) → GELU → Linear(hidden, classes).
class Classifier : public Module {
 public:
  Classifier(int64_t width, const ClassifySpec& s, Generator& gen) : classes(s.classes), width(width) {
    if (s.hidden > 0) {
      hidden = std::make_shared<Linear>(width, s.hidden, true, gen);
      register_module("hidden", hidden);
    }
    out = std::make_shared<Linear>(s.hidden > 0 ? s.hidden : width, s.classes, true, gen, s.init_std);
    register_module("out", out);
  }
  Tensor forward(const Tensor& x) const { return out->forward(hidden ? hidden->forward(x, ops::Activation::gelu) : x); }
  int64_t classes, width;
  std::shared_ptr<Linear> hidden, out;
};

class ClassifyTask : public Task {
 public:
  ClassifyTask(const ClassifySpec& s, TaskEnv& env) : s_(s), model_(env.model), mix_gen_(env.seed ^ kMixSalt) {
    LOOM_CHECK(env.model.has_tower(s.input), "task classify: the model has no ", s.input, " tower");
    const int64_t width = env.model.tower(s.input).output_width();
    if (s.mean_pool) vit_ = &patch_tower(env.model, s.input, "task classify's pool: mean");
    if (auto existing = std::dynamic_pointer_cast<Classifier>(env.model.child("classifier"))) {
      LOOM_CHECK(existing->classes == s.classes && existing->width == width && bool(existing->hidden) == (s.hidden > 0),
                 "stage ", env.stage, ": its classifier differs from the one an earlier stage added to the model");
      head_ = existing.get();
    } else {
      LOOM_CHECK(!env.model.has_child("classifier"), "task classify: the model already has a child 'classifier' of another kind");
      Generator gen(env.seed ^ kClassifierSalt);  // its own stream: the model's other weights do not depend on it
      auto h = std::make_shared<Classifier>(width, s, gen);
      added_ = h->parameter_count();
      head_ = &env.model.register_module("classifier", h);
    }
  }
  int64_t added_parameters() const { return added_; }

  void configure(data::LoaderConfig& c) const override { configure_input(model_.tower(s_.input).input(), c); }

  // Labels of a batch as a CPU i64 tensor, each checked against the class count (-1: the row has
  // none, and is left out of the loss and the metrics); `labelled` counts the others.
  Tensor labels_of(const data::Batch& b, const char* where, int64_t& labelled) const {
    const Tensor y = b["label"];
    labelled = 0;
    for (int64_t v : y.to_vector<int64_t>()) {
      LOOM_CHECK(v >= -1 && v < s_.classes, "task classify: a ", where, " example has label ", v, ", and task.classes is ",
                 s_.classes);
      labelled += v >= 0;
    }
    return y;
  }

  Tensor features(const Tensor& x, Generator* drop_gen) const {
    if (!vit_) return model_.encode(s_.input, x, drop_gen);
    const Tensor tokens = vit_->forward_tokens(x, drop_gen);  // [B, 1 + N, W], the class token first
    return ops::mean(tokens.narrow(1, 1, tokens.size(1) - 1), {1});
  }

  // A multi-label batch's "labels" [B, L] (class ids padded with -1) as 0/1 targets [B, C] in
  // `dtype`, and the rows that have any (a row without labels is left out); ids checked.
  struct MultiHot {
    Tensor targets;
    std::vector<int64_t> rows;
  };
  MultiHot multi_hot(const data::Batch& b, const char* where, DType dtype) const {
    const Tensor ids = b["labels"];
    const int64_t B = ids.size(0), L = ids.size(1), C = s_.classes;
    const std::vector<int64_t> v = ids.to_vector<int64_t>();
    MultiHot out;
    std::vector<float> hot;
    for (int64_t i = 0; i < B; ++i) {
      std::vector<float> row(size_t(C), 0.0f);
      bool any = false;
      for (int64_t j = 0; j < L; ++j) {
        const int64_t c = v[size_t(i * L + j)];
        if (c < 0) continue;
        LOOM_CHECK(c < C, "task classify: a ", where, " example lists class ", c, ", and task.classes is ", C);
        row[size_t(c)] = 1.0f;
        any = true;
      }
      if (!any) continue;
      out.rows.push_back(i);
      hot.insert(hot.end(), row.begin(), row.end());
    }
    out.targets = Tensor::from(hot, {int64_t(out.rows.size()), C}).to(dtype);
    return out;
  }

  std::vector<LossPart> forward(const data::Batch& b, Generator& drop_gen, StepContext&) override {
    if (s_.mix.on()) return {{"classify", mixed_loss(b, drop_gen)}};
    if (s_.multi_label) {
      const Tensor& x = b[s_.input];
      const MultiHot y = multi_hot(b, "training", DType::f32);
      LOOM_CHECK(!y.rows.empty(), "task classify: a training batch of ", x.size(0), " rows holds no labels");
      Tensor logits = head_->forward(features(x, &drop_gen));
      if (int64_t(y.rows.size()) < x.size(0))
        logits = ops::index_select(logits, 0, Tensor::from(y.rows, {int64_t(y.rows.size())}).to(logits.device()));
      return {{"classify", binary_cross_entropy_with_logits(logits, y.targets.to(logits.dtype()).to(logits.device()))}};
    }
    const Tensor logits = head_->forward(features(b[s_.input], &drop_gen));
    int64_t labelled = 0;
    const Tensor y = labels_of(b, "training", labelled).to(logits.device());
    LOOM_CHECK(labelled > 0, "task classify: a training batch of ", y.size(0), " rows holds no label");
    {
      NoGradGuard ng;
      last_correct_ = ops::sum(ops::eq(ops::argmax(logits, -1), y).to(DType::f32));  // -1 never matches
      last_rows_ = labelled;
    }
    return {{"classify", ops::cross_entropy(logits, y, -1, s_.label_smoothing)}};
  }
  // Mixup / CutMix: the labelled rows, their (smoothed one-hot or multi-hot) targets mixed with the
  // reversed batch's, and the loss against the soft targets.
  Tensor mixed_loss(const data::Batch& b, Generator& drop_gen) {
    const Tensor& x = b[s_.input];
    Tensor targets;
    std::vector<int64_t> rows;
    if (s_.multi_label) {
      MultiHot y = multi_hot(b, "training", DType::f32);
      targets = y.targets;
      rows = std::move(y.rows);
    } else {
      int64_t labelled = 0;
      const std::vector<int64_t> y = labels_of(b, "training", labelled).to_vector<int64_t>();
      const double off = s_.label_smoothing / double(s_.classes), on = 1.0 - s_.label_smoothing + off;
      std::vector<float> t;
      for (size_t i = 0; i < y.size(); ++i) {
        if (y[i] < 0) continue;
        rows.push_back(int64_t(i));
        for (int64_t c = 0; c < s_.classes; ++c) t.push_back(float(c == y[i] ? on : off));
      }
      targets = Tensor::from(t, {int64_t(rows.size()), s_.classes});
    }
    LOOM_CHECK(!rows.empty(), "task classify: a training batch of ", x.size(0), " rows holds no label");
    const Tensor inputs = int64_t(rows.size()) == x.size(0)
                              ? x
                              : ops::index_select(x, 0, Tensor::from(rows, {int64_t(rows.size())}).to(x.device()));
    LOOM_CHECK(inputs.dim() == 4, "task classify: mixup and CutMix mix images or spectrograms [B, C, H, W]; the ", s_.input,
               " batch is ", inputs.describe());
    const Mixed m = mix_batch(inputs, targets.to(inputs.device()), s_.mix, mix_gen_);
    last_rows_ = 0;  // no train/acc against mixed targets
    const Tensor logits = head_->forward(features(m.inputs, &drop_gen));
    const Tensor t = m.targets.to(logits.dtype());
    return s_.multi_label ? binary_cross_entropy_with_logits(logits, t) : soft_target_cross_entropy(logits, t);
  }

  nlohmann::json state() const override { return s_.mix.on() ? generator_state("mix_rng", mix_gen_) : nlohmann::json::object(); }
  void load_state(const nlohmann::json& st, const std::string& source) override {
    if (s_.mix.on() && st.contains("mix_rng")) load_generator_state(mix_gen_, st, "mix_rng", source, "classify");
  }

  Metrics train_metrics() const override {
    if (!last_correct_.defined() || last_rows_ == 0) return {};
    return {{"train/acc", last_correct_.item<double>() / double(last_rows_)}};
  }

  bool evaluates() const override { return true; }
  Metrics evaluate(const EvalEnv& env) override {
    if (!env.data) return {};
    if (s_.multi_label) return evaluate_multi_label(env);
    const bool was_training = model_.is_training();
    model_.eval();
    NoGradGuard ng;
    data::LoaderConfig lc = loader_config(*env.data, 0, false);
    configure(lc);
    data::Loader loader(env.data->rows, nullptr, lc);
    const int64_t limit = env.max_samples > 0 ? env.max_samples : INT64_MAX;
    const int64_t k = std::min<int64_t>(5, s_.classes);
    double loss_sum = 0, top1 = 0, topk = 0;
    int64_t seen = 0;
    while (seen < limit) {
      auto b = loader.next();
      if (!b) break;
      if (b->size() == 0) continue;
      int64_t labelled = 0;
      const Tensor all = labels_of(*b, "evaluation", labelled);
      if (labelled == 0) continue;
      std::vector<int64_t> rows;
      const std::vector<int64_t> yv = all.to_vector<int64_t>();
      for (size_t i = 0; i < yv.size() && seen + int64_t(rows.size()) < limit; ++i)
        if (yv[i] >= 0) rows.push_back(int64_t(i));
      const Tensor pick = Tensor::from(rows, {int64_t(rows.size())});
      const Tensor y = ops::index_select(all, 0, pick);
      const Tensor x = ops::index_select((*b)[s_.input], 0, pick.to((*b)[s_.input].device()));
      const Tensor logits = head_->forward(features(x, nullptr)).to(DType::f32).to(Device::cpu());
      loss_sum += ops::cross_entropy(logits, y).item<double>() * double(x.size(0));
      const int64_t C = s_.classes, n = x.size(0);
      const std::vector<float> l = logits.contiguous().to_vector<float>();
      const std::vector<int64_t> t = y.to_vector<int64_t>();
      for (int64_t i = 0; i < n; ++i) {
        const float* row = l.data() + i * C;
        // The target's rank: how many classes score above it (ties count against it).
        int64_t above = 0;
        for (int64_t c = 0; c < C; ++c)
          if (c != t[size_t(i)] && row[c] >= row[t[size_t(i)]]) ++above;
        top1 += above == 0;
        topk += above < k;
      }
      seen += n;
    }
    LOOM_CHECK(seen > 0, env.data->manifest, ": task classify found no labelled evaluation example that could be read");
    model_.train(was_training);
    return {{"eval/top1", top1 / double(seen)}, {str_cat("eval/top", k), topk / double(seen)},
            {"eval/classify_loss", loss_sum / double(seen)}, {"eval/samples", double(seen)}};
  }

  Metrics evaluate_multi_label(const EvalEnv& env) {
    const bool was_training = model_.is_training();
    model_.eval();
    NoGradGuard ng;
    data::LoaderConfig lc = loader_config(*env.data, 0, false);
    configure(lc);
    data::Loader loader(env.data->rows, nullptr, lc);
    const int64_t limit = env.max_samples > 0 ? env.max_samples : INT64_MAX;
    std::vector<float> scores;
    std::vector<bool> targets;
    double loss_sum = 0;
    int64_t seen = 0;
    while (seen < limit) {
      auto b = loader.next();
      if (!b) break;
      if (b->size() == 0) continue;
      MultiHot y = multi_hot(*b, "evaluation", DType::f32);
      if (y.rows.empty()) continue;
      if (seen + int64_t(y.rows.size()) > limit) y.rows.resize(size_t(limit - seen));
      const Tensor pick = Tensor::from(y.rows, {int64_t(y.rows.size())});
      const Tensor t = y.targets.narrow(0, 0, pick.size(0));
      const Tensor x = ops::index_select((*b)[s_.input], 0, pick.to((*b)[s_.input].device()));
      const Tensor logits = head_->forward(features(x, nullptr)).to(DType::f32).to(Device::cpu()).contiguous();
      loss_sum += binary_cross_entropy_with_logits(logits, t).item<double>() * double(x.size(0));
      for (float v : logits.to_vector<float>()) scores.push_back(v);
      for (float v : t.to_vector<float>()) targets.push_back(v != 0);
      seen += x.size(0);
    }
    LOOM_CHECK(seen > 0, env.data->manifest, ": task classify found no evaluation example with labels that could be read");
    model_.train(was_training);
    const MeanAveragePrecision ap = mean_average_precision(scores, targets, s_.classes);
    return {{"eval/mAP", ap.map}, {"eval/mAP_classes", double(ap.classes_scored)},
            {"eval/classify_loss", loss_sum / double(seen)}, {"eval/samples", double(seen)}};
  }

 private:
  ClassifySpec s_;
  MultimodalModel& model_;
  ViT* vit_ = nullptr;  // with pool: mean
  Classifier* head_ = nullptr;
  int64_t added_ = 0;
  Tensor last_correct_;
  int64_t last_rows_ = 0;
  Generator mix_gen_;
};

}  // namespace

TaskSpec parse_classify(const Config& c, const std::string& k, const ModelSpec& model) {
  ClassifySpec s;
  s.input = c.str(k + ".input", model.towers.size() == 1 ? model.towers.begin()->first : default_patch_modality(model));
  if (!model.tower(s.input))
    c.fail(c.has(k + ".input") ? k + ".input" : k + ".type",
           str_cat("task classify needs the tower it fine-tunes, '", s.input, "', and the model has: ", model.describe_towers()));
  s.mean_pool = c.choice(k + ".pool", {"cls", "mean"}, "cls") == "mean";
  if (s.mean_pool && model.tower(s.input)->input.kind == "text")
    c.fail(k + ".pool", "mean pooling is over patch tokens; the text tower pools as its type does (pool: cls)");
  if (!c.has(k + ".classes")) c.fail(k + ".classes", "required: the number of classes (labels are 0 .. classes-1)");
  s.classes = c.i64(k + ".classes", 0);
  if (s.classes < 2) c.fail(k + ".classes", str_cat("must be >= 2, got ", s.classes));
  s.hidden = c.i64(k + ".head.hidden", 0);
  if (s.hidden < 0) c.fail(k + ".head.hidden", "must be >= 0 (0: a linear head)");
  s.label_smoothing = c.f64(k + ".label_smoothing", 0.0);
  if (!(s.label_smoothing >= 0 && s.label_smoothing < 1)) c.fail(k + ".label_smoothing", "must be in [0, 1)");
  s.init_std = c.f64(k + ".head.init_std", 0.01);
  if (!(s.init_std > 0)) c.fail(k + ".head.init_std", "must be > 0");
  s.multi_label = c.boolean(k + ".multi_label", false);
  if (s.multi_label && s.label_smoothing > 0)
    c.fail(k + ".label_smoothing", "multi_label trains binary cross-entropy per class, which has no label smoothing here");
  s.mix.mixup_alpha = c.f64(k + ".mixup", 0.0);
  s.mix.cutmix_alpha = c.f64(k + ".cutmix", 0.0);
  for (const char* key : {".mixup", ".cutmix"})
    if (!(c.f64(k + key, 0.0) >= 0) || !std::isfinite(c.f64(k + key, 0.0)))
      c.fail(k + key, "must be >= 0 (the Beta distribution's alpha; 0: off)");
  s.mix.prob = c.f64(k + ".mix_prob", 1.0);
  if (!(s.mix.prob > 0 && s.mix.prob <= 1)) c.fail(k + ".mix_prob", "must be in (0, 1]");
  s.mix.switch_prob = c.f64(k + ".mix_switch_prob", 0.5);
  if (!(s.mix.switch_prob >= 0 && s.mix.switch_prob <= 1)) c.fail(k + ".mix_switch_prob", "must be in [0, 1]");
  const std::string kind = model.tower(s.input)->input.kind;
  if (s.mix.on() && kind == "text") c.fail(c.has(k + ".mixup") ? k + ".mixup" : k + ".cutmix", "mixup and CutMix mix images or spectrograms, not token ids");
  if (s.mix.cutmix_alpha > 0 && kind == "audio")
    c.fail(k + ".cutmix", "CutMix pastes image boxes; on spectrograms use mixup (AudioMAE's)");
  TaskSpec spec;
  spec.needs = {s.input, s.multi_label ? "labels" : "label"};
  spec.needs_text = model.tower(s.input)->input.kind == "text";
  spec.build = [s](TaskEnv& env) -> std::unique_ptr<Task> {
    auto t = std::make_unique<ClassifyTask>(s, env);
    report_added(env, "classify", "classifier", t->added_parameters());
    return t;
  };
  return spec;
}

}  // namespace loom
