// task.type: contrastive — CLIP's symmetric InfoNCE (or VSE++ triplet) over image-text pairs (model
// clip) or audio-text pairs (model clap, LAION-CLAP), with open_clip's learnable temperature clamped
// after every step; evaluated by zero-shot classification and retrieval.
#include <algorithm>
#include <cmath>
#include "layers/clap.h"
#include "layers/clip.h"
#include "losses/contrastive.h"
#include "trainers/distributed/gather.h"
#include "trainers/eval/retrieval.h"
#include "trainers/tasks/task.h"

namespace loom {
namespace {

struct ContrastiveSpec {
  std::string loss = "infonce";  // infonce | triplet
  std::string pair = "image";    // the non-text side of pairs: image | audio
  ContrastiveOptions options;
  double margin = 0.2;
  ClipEvalOptions eval;
};

class ContrastiveTask : public Task {
 public:
  ContrastiveTask(const ContrastiveSpec& s, TaskEnv& env) : s_(s), tok_(env.tokenizer), comm_(env.comm) {
    if (comm_ && comm_->world() > 1 && s.loss == "triplet")
      throw Error("task.loss triplet is not supported across processes yet (its hardest negatives would be "
                  "this process's only); use infonce, or one process");
    towers_.model = &env.model;
    towers_.key = s.pair;
    if (s.pair == "image") {
      auto* m = dynamic_cast<Clip*>(&env.model);
      if (!m) throw Error("task contrastive over [image, text] pairs needs model.type clip (an image and a text tower)");
      bind(m, &Clip::encode_image, "i");
    } else {
      auto* m = dynamic_cast<Clap*>(&env.model);
      if (!m) throw Error("task contrastive over [audio, text] pairs needs model.type clap (an audio and a text tower)");
      bind(m, &Clap::encode_audio, "a");
    }
    input_ = input_tower(env.model, "task contrastive");
    towers_.encode = [this](const Tensor& x) { return encode_(x, nullptr); };
    towers_.configure = [this](data::LoaderConfig& c) { configure(c); };
  }
  int64_t min_batch() const override { return 2; }  // a pair needs at least one negative
  const ContrastiveTowers* towers() const override { return &towers_; }
  void configure(data::LoaderConfig& c) const override {
    input_.configure(c);
    c.context = towers_.context;
  }
  std::vector<LossPart> forward(const data::Batch& b, Generator& drop_gen) override {
    Tensor labels;
    if (s_.options.same_label_positives) {
      labels = b["label"];
      for (int64_t y : labels.to_vector<int64_t>())
        LOOM_CHECK(y >= 0, "task.same_label_positives needs a label on every training example, and a row has none");
    }
    Tensor x = encode_(b[s_.pair], &drop_gen);
    Tensor txt = towers_.encode_text(b["text"]);
    if (s_.loss == "triplet") return {{"triplet", triplet_loss(x, txt, s_.margin)}};
    if (comm_ && comm_->world() > 1) {
      // open_clip's gather_with_grad + local_loss: this rank's rows against every rank's columns.
      const distributed::GatheredRows xs = distributed::gather_rows_with_grad(*comm_, x);
      const distributed::GatheredRows ts = distributed::gather_rows_with_grad(*comm_, txt);
      Tensor labels_all;
      if (labels.defined()) labels_all = comm_->all_gather_rows(labels.contiguous());
      return {{"infonce", clip_loss(x, txt, xs.all, ts.all, xs.offset, logit_scale_, labels, labels_all, s_.options)}};
    }
    return {{"infonce", clip_loss(x, txt, logit_scale_, labels, s_.options)}};
  }
  void after_step() override {  // open_clip clamps the learnable log-scale to [0, log max] after each step
    NoGradGuard ng;
    logit_scale_.copy_(ops::clamp(logit_scale_, 0.0, s_.options.max_logit_scale));
  }
  Metrics train_metrics() const override {
    return {{"train/logit_scale", double(std::exp(logit_scale_.item<float>()))}};
  }
  bool evaluates() const override { return s_.eval.zeroshot || s_.eval.retrieval; }
  Metrics evaluate(const EvalEnv& env) override {
    if (!env.data || !evaluates()) return {};
    return evaluate_contrastive(towers_, *tok_, s_.eval, *env.data, env.max_samples);
  }

 private:
  // The towers of a two-tower model M (Clip or Clap): `encode` for the non-text side, `letter` for metric names.
  template <class M>
  void bind(M* m, Tensor (M::*encode)(const Tensor&, Generator*) const, const char* letter) {
    encode_ = [m, encode](const Tensor& x, Generator* g) { return (m->*encode)(x, g); };
    // The text tower pools at the tokenizer's end of text (a causal tower; BERT pools at [CLS]).
    const int64_t eot = tok_ ? tok_->end_token() : data::BpeTokenizer::eot_id;
    towers_.encode_text = [m, eot](const Tensor& t) { return m->encode_text(t, eot); };
    towers_.context = m->config.text.context;
    towers_.letter = letter;
    logit_scale_ = m->logit_scale;
  }

  ContrastiveSpec s_;
  const data::TextTokenizer* tok_;
  distributed::Communicator* comm_;
  std::function<Tensor(const Tensor&, Generator*)> encode_;
  ContrastiveTowers towers_;
  InputTower input_;
  Tensor logit_scale_;  // the model's parameter (a shared handle)
};

}  // namespace

TaskSpec parse_contrastive(const Config& c, const std::string& k) {
  ContrastiveSpec s;
  if (c.has(k + ".pairs")) {  // one pair of modalities: [[image, text]] or [[audio, text]]
    YAML::Node p = c.node(k + ".pairs");
    const bool ok = p.IsSequence() && p.size() == 1 && p[0].IsSequence() && p[0].size() == 2 &&
                    (p[0][0].as<std::string>("") == "image" || p[0][0].as<std::string>("") == "audio") &&
                    p[0][1].as<std::string>("") == "text";
    if (!ok) c.fail(k + ".pairs", "expected [[image, text]] or [[audio, text]] (one pair of modalities)");
    s.pair = p[0][0].as<std::string>();
  } else {
    const std::string type = c.str("model.type", "clip");
    s.pair = type == "clap" ? "audio" : "image";
  }
  TaskSpec spec;
  spec.temperature_init = c.f64(k + ".temperature_init", 0.07);
  if (!(spec.temperature_init > 0)) c.fail(k + ".temperature_init", "must be > 0");
  s.loss = c.choice(k + ".loss", {"infonce", "triplet"}, "infonce");
  s.options.same_label_positives = c.boolean(k + ".same_label_positives", false);
  const double max_scale = c.f64(k + ".max_logit_scale", 100.0);
  if (!(max_scale > 1.0)) c.fail(k + ".max_logit_scale", "must be > 1 (the scale is clamped to [1, max])");
  s.options.max_logit_scale = std::log(max_scale);
  s.margin = c.f64(k + ".margin", 0.2);

  // Evaluation settings are recipe-wide (eval.*); this task is the one that reads them.
  if (c.has("eval.zeroshot")) {
    s.eval.zeroshot = true;
    s.eval.zeroshot_labels = c.existing_path("eval.zeroshot.labels_from");
    s.eval.zeroshot_templates = c.str_list("eval.zeroshot.templates", {"a photo of a {}."});
    for (const auto& t : s.eval.zeroshot_templates)
      if (t.find("{}") == std::string::npos) c.fail("eval.zeroshot.templates", str_cat("template '", t, "' has no {}"));
  }
  s.eval.retrieval = c.boolean("eval.retrieval", false);
  s.eval.retrieval_samples = c.i64("eval.retrieval_samples", 1000);
  if (s.eval.retrieval_samples < 1) c.fail("eval.retrieval_samples", "must be >= 1");

  spec.needs_text = true;
  spec.needs_eval_data = s.eval.zeroshot || s.eval.retrieval;
  spec.needs = s.options.same_label_positives ? std::vector<std::string>{s.pair, "text", "label"}
                                              : std::vector<std::string>{s.pair, "text"};
  spec.build = [s](TaskEnv& env) -> std::unique_ptr<Task> { return std::make_unique<ContrastiveTask>(s, env); };
  return spec;
}

}  // namespace loom
