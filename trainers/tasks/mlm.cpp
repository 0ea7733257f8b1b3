// task.type: mlm — BERT's masked language modelling (Devlin et al. 2019) on a bidirectional text tower
// (type: bert): ratio of each text's tokens chosen (whole words with whole_word), 80% of them replaced
// by the mask token, 10% by a random token, 10% kept (data/masking.h); BERT's head ("mlm_head",
// layers/bert.h: transform, LayerNorm, decoder tied to the token embedding) predicts the original ids,
// cross-entropy over the chosen positions only (the head runs on those alone). Logged: train/mlm and
// train/mlm_acc. Evaluated on held-out texts with the same masks every time: eval/mlm_loss,
// eval/mlm_acc, eval/mlm_perplexity, and eval/mlm_unigram_acc, the accuracy of always answering the most
// frequent of the held-out targets (a frequency baseline the model must beat).
// With `with_image: true` (VLMo's stage 3, VL-BEiT) the masked text is read with its image through the
// model's fusion encoder (model.type: vlmo), so the image can fill in what the text hides.
#include <algorithm>
#include <cmath>
#include <map>
#include "core/autograd.h"
#include "data/masking.h"
#include "layers/bert.h"
#include "trainers/tasks/task.h"

namespace loom {
namespace {

constexpr uint64_t kMlmSalt = 0x6D6C6Dull;       // "mlm"
constexpr uint64_t kMlmHeadSalt = 0x6D6C6D68ull;  // "mlmh"

struct MlmSpec {
  std::string input = "text";  // the text tower's modality
  std::string image;           // with_image: the image the fusion encoder reads beside it; empty: text alone
  data::TokenMasking masking;
  bool tied = true;
};

// The chosen positions of a masked batch as flat row indices into [B * S] and their targets (CPU).
struct Chosen {
  Tensor positions, targets;  // i64 [M]
};
Chosen chosen_positions(const data::MaskedTokens& mt) {
  const int64_t n = mt.labels.numel();
  const int64_t* lab = mt.labels.data_ptr<int64_t>();
  std::vector<int64_t> pos, tgt;
  for (int64_t i = 0; i < n; ++i)
    if (lab[i] != data::MaskedTokens::ignore_label) {
      pos.push_back(i);
      tgt.push_back(lab[i]);
    }
  const int64_t m = int64_t(pos.size());
  return {Tensor::from(pos, {m}, DType::i64), Tensor::from(tgt, {m}, DType::i64)};
}

class MlmTask : public Task {
 public:
  MlmTask(const MlmSpec& s, TaskEnv& env)
      : s_(s), tok_(env.tokenizer), mask_gen_(env.seed ^ kMlmSalt), eval_seed_(env.seed ^ kMlmSalt ^ 0xE7A1ull) {
    LOOM_CHECK(tok_, "task mlm needs a tokenizer");
    LOOM_CHECK(tok_->mask_token() >= 0, "task mlm needs a mask token, and the run's ", tok_->kind(), " tokenizer has none");
    LOOM_CHECK(env.model.has_tower(s.input), "task mlm: the model has no ", s.input, " tower");
    bert_ = dynamic_cast<Bert*>(&env.model.tower(s.input));
    LOOM_CHECK(bert_, "task mlm needs a bidirectional text tower (type: bert); the model's ", s.input, " tower is not one");
    fusion_ = env.model.fusion();
    LOOM_CHECK(s.image.empty() || fusion_, "task mlm with_image needs a model with a fusion encoder (model.type: vlmo)");
    image_tower_ = s.image.empty() ? nullptr : &env.model.tower(s.image);
    const TextConfig& t = bert_->config;
    MlmHeadConfig hc{t.width, t.vocab_size, t.act, t.norm_eps, s.tied};
    if (auto existing = std::dynamic_pointer_cast<MlmHead>(env.model.child("mlm_head"))) {
      const MlmHeadConfig& e = existing->config;
      LOOM_CHECK(e.width == hc.width && e.vocab_size == hc.vocab_size && e.tied == hc.tied, "stage ", env.stage,
                 ": its mlm head differs from the one an earlier stage added to the model");
      head_ = existing.get();
    } else {
      LOOM_CHECK(!env.model.has_child("mlm_head"), "task mlm: the model already has a child 'mlm_head' of another kind");
      Generator gen(env.seed ^ kMlmHeadSalt);  // its own stream: the model's other weights do not depend on it
      auto h = std::make_shared<MlmHead>(hc, gen);
      added_ = h->parameter_count();
      head_ = &env.model.register_module("mlm_head", h);
    }
  }
  int64_t added_parameters() const { return added_; }

  void configure(data::LoaderConfig& c) const override {
    configure_input(bert_->input(), c);
    if (image_tower_) configure_input(image_tower_->input(), c);
  }

  struct Pass {
    Tensor loss, correct;  // mean cross-entropy over the chosen tokens; how many the head got right (no gradient)
    Tensor targets;        // i64 [M] on the CPU
    int64_t chosen = 0;
  };
  // `ids` are rows [offset, offset + B) of the global batch (data parallelism: the same masks in any world).
  Pass run(const Tensor& ids, const Tensor& images, Generator& gen, int64_t offset, Generator* drop_gen) const {
    const data::MaskedTokens mt = data::mask_tokens(ids, *tok_, s_.masking, gen, offset);
    LOOM_CHECK(mt.chosen > 0, "task mlm: a batch of ", ids.size(0), " texts holds no token to mask (only special tokens)");
    const Device dev = bert_->token_embedding.device();
    const Chosen ch = chosen_positions(mt);
    Tensor hidden = s_.image.empty() ? bert_->forward_tokens(mt.input.to(dev))  // [B, S, W]
                                     : fusion_->fuse({{s_.input, mt.input.to(dev)}, {s_.image, images.to(dev)}}, drop_gen)
                                           .narrow(1, 0, ids.size(1));  // the text comes first
    hidden = ops::index_select(hidden.reshape({hidden.size(0) * hidden.size(1), hidden.size(2)}), 0, ch.positions.to(dev));
    Tensor logits = head_->forward(hidden, bert_->token_embedding);  // [M, V]
    const Tensor targets = ch.targets.to(dev);
    Pass p;
    p.loss = ops::cross_entropy(logits, targets);
    {
      NoGradGuard ng;
      p.correct = ops::sum(ops::eq(ops::argmax(logits, -1), targets).to(DType::f32));
    }
    p.targets = ch.targets;
    p.chosen = mt.chosen;
    return p;
  }

  std::vector<LossPart> forward(const data::Batch& b, Generator& drop_gen, StepContext&) override {
    Pass p = run(b[s_.input], s_.image.empty() ? Tensor() : b[s_.image], mask_gen_, b.global_offset, &drop_gen);
    last_correct_ = p.correct;
    last_chosen_ = p.chosen;
    return {{"mlm", p.loss}};
  }
  Metrics train_metrics() const override {
    if (!last_correct_.defined() || last_chosen_ == 0) return {};
    return {{"train/mlm_acc", last_correct_.item<double>() / double(last_chosen_)}};
  }

  bool evaluates() const override { return true; }
  Metrics evaluate(const EvalEnv& env) override {
    if (!env.data) return {};
    const bool was_training = bert_->is_training();
    bert_->eval();
    head_->eval();
    if (fusion_) const_cast<FusionEncoder*>(fusion_)->eval();
    NoGradGuard ng;
    data::LoaderConfig lc = loader_config(*env.data, 0, false);
    configure(lc);
    lc.read_audio = false;
    lc.read_images = !s_.image.empty();
    data::Loader loader(env.data->rows, tok_, lc);
    Generator gen(eval_seed_);  // the same masks at every evaluation
    const int64_t limit = env.max_samples > 0 ? env.max_samples : 2000;
    double loss_sum = 0, correct = 0;
    int64_t seen = 0, chosen = 0;
    std::map<int64_t, int64_t> target_counts;
    while (seen < limit) {
      auto b = loader.next();
      if (!b) break;
      Tensor ids = (*b)[s_.input], images = s_.image.empty() ? Tensor() : (*b)[s_.image];
      if (ids.size(0) > limit - seen) {
        ids = ids.narrow(0, 0, limit - seen);
        if (images.defined()) images = images.narrow(0, 0, limit - seen);
      }
      Pass p = run(ids, images, gen, seen, nullptr);
      loss_sum += p.loss.item<double>() * double(p.chosen);
      correct += p.correct.item<double>();
      chosen += p.chosen;
      const int64_t* t = p.targets.data_ptr<int64_t>();
      for (int64_t i = 0; i < p.chosen; ++i) ++target_counts[t[i]];
      seen += ids.size(0);
    }
    LOOM_CHECK(seen > 0 && chosen > 0, env.data->manifest, ": no evaluation text could be read");
    bert_->train(was_training);
    head_->train(was_training);
    if (fusion_) const_cast<FusionEncoder*>(fusion_)->train(was_training);
    int64_t most = 0;
    for (const auto& [_, n] : target_counts) most = std::max(most, n);
    const double loss = loss_sum / double(chosen);
    return {{"eval/mlm_loss", loss}, {"eval/mlm_acc", correct / double(chosen)}, {"eval/mlm_perplexity", std::exp(loss)},
            {"eval/mlm_unigram_acc", double(most) / double(chosen)}, {"eval/mlm_tokens", double(chosen)},
            {"eval/samples", double(seen)}};
  }

  nlohmann::json state() const override { return generator_state("mask_rng", mask_gen_); }
  void load_state(const nlohmann::json& st, const std::string& source) override {
    load_generator_state(mask_gen_, st, "mask_rng", source, "mlm");
  }

 private:
  MlmSpec s_;
  const data::TextTokenizer* tok_ = nullptr;
  Bert* bert_ = nullptr;
  const FusionEncoder* fusion_ = nullptr;
  const Encoder* image_tower_ = nullptr;
  MlmHead* head_ = nullptr;
  int64_t added_ = 0;
  Generator mask_gen_;
  uint64_t eval_seed_;
  Tensor last_correct_;
  int64_t last_chosen_ = 0;
};

}  // namespace

TaskSpec parse_mlm(const Config& c, const std::string& k, const ModelSpec& model) {
  MlmSpec s;
  s.input = c.str(k + ".input", "text");
  const TowerSpec* tower = model.tower(s.input);
  if (!tower || tower->input.kind != "text")
    c.fail(c.has(k + ".input") ? k + ".input" : k + ".type",
           str_cat("task mlm needs a text tower '", s.input, "', and the model has: ", model.describe_towers()));
  if (tower->type != "bert" && tower->type != "multiway")
    c.fail(c.has(k + ".input") ? k + ".input" : k + ".type",
           str_cat("task mlm predicts masked tokens from both sides, so it needs a bidirectional text tower (type: bert); the ",
                   s.input, " tower is ", tower->type, ", which is causal (", tower->key, ".type: bert)"));
  s.masking.ratio = c.f64(k + ".mask_ratio", 0.15);
  if (!(s.masking.ratio > 0 && s.masking.ratio < 1)) c.fail(k + ".mask_ratio", str_cat("must be in (0, 1), got ", s.masking.ratio));
  const std::vector<double> split = c.f64_list(k + ".replace", {0.8, 0.1, 0.1});
  if (split.size() != 3 || std::any_of(split.begin(), split.end(), [](double v) { return !(v >= 0); }) ||
      std::abs(split[0] + split[1] + split[2] - 1.0) > 1e-9)
    c.fail(k + ".replace", "expected [mask, random, keep]: three fractions >= 0 summing to 1 (BERT's [0.8, 0.1, 0.1])");
  s.masking.to_mask = split[0];
  s.masking.to_random = split[1];
  s.masking.whole_word = c.boolean(k + ".whole_word", false);
  s.tied = c.boolean(k + ".head.tied", true);
  if (c.boolean(k + ".with_image", false)) {
    s.image = "image";
    if (model.fusion_over.empty() || !model.has("image"))
      c.fail(k + ".with_image", str_cat("reading the masked text with its image needs a fusion encoder over both (model.type: "
                                        "vlmo); model.type ", model.type, " has none"));
  }
  TaskSpec spec;
  spec.needs = {s.input};
  if (!s.image.empty()) spec.needs.push_back(s.image);
  spec.needs_text = true;
  spec.needs_mask_token = true;
  spec.build = [s](TaskEnv& env) -> std::unique_ptr<Task> {
    auto t = std::make_unique<MlmTask>(s, env);
    report_added(env, "mlm", "mlm_head", t->added_parameters());
    return t;
  };
  return spec;
}

}  // namespace loom
