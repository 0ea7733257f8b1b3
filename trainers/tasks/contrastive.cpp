// task.type: contrastive — CLIP's symmetric InfoNCE (or VSE++ triplet) over any pairs of the model's
// towers (task.pairs: [[image, text]] for CLIP, [[audio, text]] for CLAP, [[image, text], [image,
// audio]] for ImageBind-style binding through an anchor), each pair with its own temperature: learnable
// as open_clip's (clamped after every step; the model holds it) or fixed (temperature_fixed, as
// CAV-MAE's). Each modality is encoded once per step, whatever number of pairs reads it. Evaluated by
// zero-shot classification and retrieval over every pair and direction of the model's towers the
// evaluation data has, trained together or not (emergent).
#include <algorithm>
#include <cmath>
#include "losses/contrastive.h"
#include "trainers/distributed/gather.h"
#include "trainers/eval/retrieval.h"
#include "trainers/tasks/task.h"

namespace loom {
namespace {

struct ContrastiveSpec {
  std::string loss = "infonce";  // infonce | triplet
  std::vector<PairTemperature> pairs;
  ContrastiveOptions options;
  double margin = 0.2;
  ClipEvalOptions eval;
};

struct Pair {
  std::string a, b, part;  // part: the loss's name in metrics (train/<part>)
  Tensor log_scale;        // the model's parameter (learnable), or a constant
  bool learnable = true;
};

class ContrastiveTask : public Task {
 public:
  ContrastiveTask(const ContrastiveSpec& s, TaskEnv& env) : s_(s), model_(env.model), comm_(env.comm) {
    if (comm_ && comm_->world() > 1 && s.loss == "triplet")
      throw Error("task.loss triplet is not supported across processes yet (its hardest negatives would be "
                  "this process's only); use infonce, or one process");
    for (const PairTemperature& p : s.pairs) {
      for (const std::string& m : {p.a, p.b})
        LOOM_CHECK(model_.has_head(m), "task contrastive over [", p.a, ", ", p.b, "] needs a ", m,
                   " tower with a head into the shared space, and the model has none");
      Pair q{p.a, p.b, s.pairs.size() == 1 ? "infonce" : p.a + "_" + p.b, {}, p.learnable};
      if (p.learnable) {
        q.log_scale = model_.pair_logit_scale(p.a, p.b);
        LOOM_CHECK(q.log_scale.defined(), "task contrastive over [", p.a, ", ", p.b,
                   "]: the model holds no temperature for this pair");
      } else {
        q.log_scale = Tensor::scalar(std::log(1.0 / p.init));
      }
      pairs_.push_back(q);
      for (const std::string& m : {p.a, p.b})
        if (std::find(encoded_.begin(), encoded_.end(), m) == encoded_.end()) encoded_.push_back(m);
    }
    towers_.model = &model_;
    for (const std::string& m : model_.modalities())
      if (model_.has_head(m)) towers_.modalities.push_back(m);
  }
  int64_t min_batch() const override { return 2; }  // a pair needs at least one negative
  const ContrastiveTowers* towers() const override { return &towers_; }
  void configure(data::LoaderConfig& c) const override {
    for (const std::string& m : encoded_) configure_input(model_.tower(m).input(), c);
  }
  std::vector<LossPart> forward(const data::Batch& b, Generator& drop_gen, StepContext& step) override {
    return loss_over(embed_batch(b, drop_gen, &step), labels_of(b), present_pairs(b));
  }

  Features features(const data::Batch& b, Generator& drop_gen) override { return embed_batch(b, drop_gen, nullptr); }
  std::vector<LossPart> loss_of_features(const std::vector<Features>& feats, const std::vector<data::Batch>& batches) override {
    LOOM_CHECK(!feats.empty() && feats.size() == batches.size(), "task contrastive: ", feats.size(), " feature sets for ",
               batches.size(), " batches");
    Features all;
    for (const auto& [m, _] : feats[0]) {
      std::vector<Tensor> parts;
      for (const Features& f : feats) {
        LOOM_CHECK(f.count(m), "task contrastive: the micro-batches of one step hold different modalities");
        parts.push_back(f.at(m));
      }
      all[m] = ops::cat(parts, 0);
    }
    Tensor labels;
    if (s_.options.same_label_positives) {
      std::vector<Tensor> ls;
      for (const data::Batch& b : batches) ls.push_back(labels_of(b));
      labels = ops::cat(ls, 0);
    }
    return loss_over(all, labels, present_pairs(batches[0]));
  }

 private:
  Tensor labels_of(const data::Batch& b) const {
    if (!s_.options.same_label_positives) return Tensor();
    Tensor labels = b["label"];
    for (int64_t y : labels.to_vector<int64_t>())
      LOOM_CHECK(y >= 0, "task.same_label_positives needs a label on every training example, and a row has none");
    return labels;
  }
  // The pairs this batch holds (a stage's sources may each serve some).
  std::vector<const Pair*> present_pairs(const data::Batch& b) const {
    std::vector<const Pair*> present;
    for (const Pair& p : pairs_)
      if (b.has(p.a) && b.has(p.b)) present.push_back(&p);
    LOOM_CHECK(!present.empty(), "task contrastive: a batch with ", b.keys(), " holds none of its pairs");
    return present;
  }
  // Each modality of the present pairs encoded once, in the order the pairs first name them (CLIP:
  // image, then text).
  Features embed_batch(const data::Batch& b, Generator& drop_gen, StepContext* step) const {
    Features emb;
    for (const std::string& m : encoded_)
      for (const Pair* p : present_pairs(b))
        if ((p->a == m || p->b == m) && !emb.count(m)) {
          // A task before this one in the stage encoded the tower already (CAV-MAE: joint MAE's masked pass).
          auto shared = step ? step->shared.find(m + ".tokens") : std::map<std::string, Tensor>::iterator();
          emb[m] = step && shared != step->shared.end() ? model_.embed_tokens(m, shared->second, &drop_gen)
                                                        : model_.embed(m, b[m], &drop_gen);
          // For a later task of the stage (ITM draws its negatives by these similarities).
          if (step) step->shared[m + ".embed"] = emb[m];
        }
    return emb;
  }
  std::vector<LossPart> loss_over(Features emb, const Tensor& labels, const std::vector<const Pair*>& present) {
    // A fixed temperature is a host constant: it moves to the features' device once, not every step.
    for (Pair& p : pairs_)
      if (!p.learnable && p.log_scale.device() != emb.begin()->second.device()) p.log_scale = p.log_scale.to(emb.begin()->second.device());
    if (s_.loss == "triplet") return {{"triplet", triplet_loss(emb[pairs_[0].a], emb[pairs_[0].b], s_.margin)}};
    std::vector<LossPart> out;
    if (comm_ && comm_->world() > 1) {
      // open_clip's gather_with_grad + local_loss: this rank's rows against every rank's columns.
      std::map<std::string, distributed::GatheredRows> all;
      for (const auto& [m, e] : emb) all[m] = distributed::gather_rows_with_grad(*comm_, e);
      Tensor labels_all;
      if (labels.defined()) labels_all = comm_->all_gather_rows(labels.contiguous());
      for (const Pair* p : present)
        out.push_back({p->part, clip_loss(emb[p->a], emb[p->b], all[p->a].all, all[p->b].all, all[p->a].offset,
                                          p->log_scale, labels, labels_all, s_.options)});
      return out;
    }
    for (const Pair* p : present)
      out.push_back({p->part, clip_loss(emb[p->a], emb[p->b], p->log_scale, labels, s_.options)});
    return out;
  }

 public:
  void after_step() override {  // open_clip clamps the learnable log-scale to [0, log max] after each step
    NoGradGuard ng;
    for (Pair& p : pairs_)
      if (p.learnable) p.log_scale.copy_(ops::clamp(p.log_scale, 0.0, s_.options.max_logit_scale));
  }
  Metrics train_metrics() const override {
    Metrics m;
    for (const Pair& p : pairs_)
      if (p.learnable)
        m[pairs_.size() == 1 ? "train/logit_scale" : "train/logit_scale_" + p.part] = double(std::exp(p.log_scale.item<float>()));
    return m;
  }
  bool evaluates() const override { return s_.eval.zeroshot || s_.eval.retrieval; }
  Metrics evaluate(const EvalEnv& env) override {
    if (!env.data || !evaluates()) return {};
    return evaluate_contrastive(towers_, env.tokenizer, s_.eval, *env.data, env.max_samples);
  }

 private:
  ContrastiveSpec s_;
  MultimodalModel& model_;
  distributed::Communicator* comm_;
  std::vector<Pair> pairs_;
  std::vector<std::string> encoded_;  // the modalities the pairs read, in first-named order
  ContrastiveTowers towers_;
};

// The pairs of task.pairs, or the model's one pair when it has exactly two towers with heads.
std::vector<std::pair<std::string, std::string>> read_pairs(const Config& c, const std::string& k, const ModelSpec& model) {
  std::vector<std::string> headed;
  if (model.embed_dim > 0) headed = model.modalities();
  std::vector<std::pair<std::string, std::string>> out;
  if (!c.has(k + ".pairs")) {
    if (headed.size() != 2)
      c.fail(k + ".pairs", str_cat("required with this model (its towers: ", model.describe_towers(),
                                   "): a list of pairs of modalities, e.g. [[image, text], [image, audio]]"));
    // CLIP and CLAP: the non-text side first, as their metric names (i2t, a2t) have it
    if (headed[0] == "text") std::swap(headed[0], headed[1]);
    return {{headed[0], headed[1]}};
  }
  YAML::Node p = c.node(k + ".pairs");
  if (!p.IsSequence() || p.size() == 0) c.fail(k + ".pairs", "expected a list of pairs of modalities, e.g. [[image, text]]");
  for (size_t i = 0; i < p.size(); ++i) {
    if (!p[i].IsSequence() || p[i].size() != 2 || !p[i][0].IsScalar() || !p[i][1].IsScalar())
      c.fail(k + ".pairs", str_cat("pair ", i, " is not a pair of modalities like [image, text]"));
    const std::string a = p[i][0].Scalar(), b = p[i][1].Scalar();
    for (const std::string& m : {a, b})
      if (!model.has(m))
        c.fail(k + ".pairs", str_cat("pair [", a, ", ", b, "]: the model has no ", m, " tower (its towers: ",
                                     model.describe_towers(), ")"));
    if (model.embed_dim <= 0)
      c.fail(k + ".pairs", str_cat("model.type ", model.type, " has no heads into a shared space to contrast in"));
    if (a == b) c.fail(k + ".pairs", str_cat("pair [", a, ", ", b, "] contrasts a modality with itself"));
    for (const auto& [x, y] : out)
      if ((x == a && y == b) || (x == b && y == a)) c.fail(k + ".pairs", str_cat("pair [", a, ", ", b, "] is given twice"));
    out.emplace_back(a, b);
  }
  return out;
}

}  // namespace

TaskSpec parse_contrastive(const Config& c, const std::string& k, const ModelSpec& model) {
  ContrastiveSpec s;
  const auto pairs = read_pairs(c, k, model);
  TaskSpec spec;
  const bool fixed = c.has(k + ".temperature_fixed");
  if (fixed && c.has(k + ".temperature_init"))
    c.fail(k + ".temperature_fixed", "give temperature_init (learnable) or temperature_fixed, not both");
  const std::string tkey = k + (fixed ? ".temperature_fixed" : ".temperature_init");
  const double temperature = c.f64(tkey, 0.07);
  if (!(temperature > 0)) c.fail(tkey, "must be > 0");
  for (const auto& [a, b] : pairs) s.pairs.push_back({a, b, temperature, !fixed});
  s.loss = c.choice(k + ".loss", {"infonce", "triplet"}, "infonce");
  if (s.loss == "triplet" && pairs.size() > 1) c.fail(k + ".loss", "triplet contrasts one pair; this task has several");
  s.options.same_label_positives = c.boolean(k + ".same_label_positives", false);
  const double max_scale = c.f64(k + ".max_logit_scale", 100.0);
  if (!(max_scale > 1.0)) c.fail(k + ".max_logit_scale", "must be > 1 (the scale is clamped to [1, max])");
  s.options.max_logit_scale = std::log(max_scale);
  s.margin = c.f64(k + ".margin", 0.2);

  // Evaluation settings are recipe-wide (eval.*); this task is the one that reads them.
  if (c.has("eval.zeroshot")) {
    if (!model.has_text())
      c.fail("eval.zeroshot", str_cat("zero-shot classification reads class prompts with a text tower, and the model has "
                                      "none (its towers: ", model.describe_towers(), ")"));
    s.eval.zeroshot = true;
    s.eval.zeroshot_labels = c.existing_path("eval.zeroshot.labels_from");
    s.eval.zeroshot_templates = c.str_list("eval.zeroshot.templates", {"a photo of a {}."});
    for (const auto& t : s.eval.zeroshot_templates)
      if (t.find("{}") == std::string::npos) c.fail("eval.zeroshot.templates", str_cat("template '", t, "' has no {}"));
  }
  s.eval.retrieval = c.boolean("eval.retrieval", false);
  s.eval.retrieval_samples = c.i64("eval.retrieval_samples", 1000);
  if (s.eval.retrieval_samples < 1) c.fail("eval.retrieval_samples", "must be >= 1");

  spec.pairs = s.pairs;
  spec.needs_eval_data = s.eval.zeroshot || s.eval.retrieval;
  for (const auto& [a, b] : pairs)
    for (const std::string& m : {a, b})
      if (std::find(spec.needs.begin(), spec.needs.end(), m) == spec.needs.end()) spec.needs.push_back(m);
  spec.caches_features = true;
  spec.needs_text = std::find(spec.needs.begin(), spec.needs.end(), "text") != spec.needs.end() || s.eval.zeroshot;
  for (const auto& [a, b] : pairs) {  // with several sources, each serves the pairs whose two modalities it has
    spec.serves.push_back({a, b});
    if (s.options.same_label_positives) spec.serves.back().push_back("label");
  }
  if (s.options.same_label_positives) spec.needs.push_back("label");
  spec.build = [s](TaskEnv& env) -> std::unique_ptr<Task> { return std::make_unique<ContrastiveTask>(s, env); };
  return spec;
}

}  // namespace loom
