// task.type: itm — image-text matching (VLMo, ALBEF): a binary head ("itm_head": BERT's pooler, then
// Linear(width, 2)) on the fused sequence's first state (the text's [CLS]) says whether a text
// describes an image. Each image of the batch is paired with its caption (a match) and with a hard
// negative caption, and each caption with a hard negative image (non-matches): the negatives are drawn
// from the ITC similarity softmax over the whole data-parallel batch with the positive left out
// (tasks/itm.h), so a negative can come from another process. The similarities are those a
// contrastive task of the same stage computed (its embeddings, without gradient), or the towers'
// embeddings computed here without gradient. Cross-entropy over the 3B pairs; logged: train/itm,
// train/itm_acc. Needs a model with a fusion encoder (model.type: vlmo).
//
// exclude_same_label: true leaves out candidates of the query's label too (class data, where two
// captions of a class are interchangeable and would be false negatives). hard_negative_warmup: N
// ramps the sampling's scale from 0 (uniform negatives) to the ITC's over the stage's first N steps:
// from scratch, negatives that differ from the caption in one word keep ITM at its prior (loss 0.637
// for 300 steps on the scenes), while uniform ones teach it to look at the image first.
//
//   - {type: itm, hard_negatives: true,
//      eval: {hard_negatives: data/scenes/hard_negatives.jsonl, rerank_k: 16, samples: 600}}
//
// Evaluated (eval.every): on eval.hard_negatives (JSONL rows {"image", "text", "negative"}, paths
// relative to the file) eval/itm_acc (match vs non-match over both captions), eval/itm_pick (the
// caption scores above its negative) and eval/itc_pick (the same choice by the dual encoder's
// similarity); on the stage's evaluation data with rerank_k, text->image and image->text recall of
// the dual encoder (eval/t2i_dual_r1, ...) and with its top k re-ranked by the ITM log-odds plus the
// ITC logit as BLIP re-ranks (eval/t2i_rerank_r1, ...), or by the ITM score alone as ALBEF
// (eval/t2i_rerank_itm_r1, ...).
#include "trainers/tasks/itm.h"
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include "core/autograd.h"
#include "trainers/distributed/communicator.h"
#include "trainers/eval/retrieval.h"
#include "trainers/tasks/task.h"

namespace loom {

std::vector<int64_t> sample_hard_negatives(const Tensor& sim, const std::function<bool(int64_t, int64_t)>& allowed,
                                           const std::vector<double>& uniform) {
  LOOM_CHECK(sim.dim() == 2 && int64_t(uniform.size()) == sim.size(0), "sample_hard_negatives: sim ", sim.describe(),
             " and ", uniform.size(), " uniforms");
  const int64_t B = sim.size(0), G = sim.size(1);
  const std::vector<double> s = sim.to(DType::f64).contiguous().to_vector<double>();
  std::vector<int64_t> out(size_t(B), -1);
  std::vector<double> w(static_cast<size_t>(G));
  for (int64_t b = 0; b < B; ++b) {
    double top = -INFINITY;
    for (int64_t j = 0; j < G; ++j)
      if (allowed(b, j)) top = std::max(top, s[size_t(b * G + j)]);
    if (top == -INFINITY) continue;
    double total = 0;
    for (int64_t j = 0; j < G; ++j) total += w[size_t(j)] = allowed(b, j) ? std::exp(s[size_t(b * G + j)] - top) : 0.0;
    const double target = uniform[size_t(b)] * total;
    double acc = 0;
    for (int64_t j = 0; j < G; ++j) {
      if (w[size_t(j)] == 0) continue;
      acc += w[size_t(j)];
      out[size_t(b)] = j;  // the last allowed one catches rounding at the top
      if (target < acc) break;
    }
  }
  return out;
}

ItmNegatives itm_hard_negatives(const Tensor& image_emb, const Tensor& text_emb, const Tensor& images, const Tensor& texts,
                                double scale, distributed::Communicator* comm, Generator& gen, const Tensor& labels) {
  NoGradGuard ng;
  const int64_t B = image_emb.size(0);
  LOOM_CHECK(text_emb.size(0) == B && images.size(0) == B && texts.size(0) == B, "itm_hard_negatives: ", B, " images, ",
             text_emb.size(0), " text embeddings, ", images.size(0), " images and ", texts.size(0), " texts");
  ItmNegatives n;
  Tensor all_ie = image_emb, all_te = text_emb, all_labels = labels;
  n.all_images = images;
  n.all_texts = texts;
  if (comm && comm->world() > 1) {
    std::vector<int64_t> counts;
    all_ie = comm->all_gather_rows(image_emb.contiguous(), &counts);
    all_te = comm->all_gather_rows(text_emb.contiguous());
    n.all_images = comm->all_gather_rows(images.contiguous());
    n.all_texts = comm->all_gather_rows(texts.contiguous());
    if (labels.defined()) all_labels = comm->all_gather_rows(labels.contiguous());
    for (int r = 0; r < comm->rank(); ++r) n.offset += counts[size_t(r)];
  }
  const int64_t G = all_ie.size(0), S = texts.size(1);
  // One draw per global row and direction, the same on every rank (the generator's state is one for
  // all of them); each rank keeps its rows' draws.
  const std::vector<double> u = ops::rand({2 * G}, gen, DType::f64).to_vector<double>();
  const std::vector<int64_t> tok = n.all_texts.to(Device::cpu()).contiguous().to_vector<int64_t>();
  auto same_text = [&](int64_t a, int64_t b) {
    return std::equal(tok.begin() + a * S, tok.begin() + (a + 1) * S, tok.begin() + b * S);
  };
  const std::vector<int64_t> lab = all_labels.defined() ? all_labels.to(Device::cpu()).to_vector<int64_t>() : std::vector<int64_t>();
  // A candidate is allowed unless it is this row's pair, carries the same caption or (with labels) the same label.
  auto allowed = [&](int64_t b, int64_t j) {
    const int64_t q = n.offset + b;
    if (!lab.empty() && lab[size_t(q)] >= 0 && lab[size_t(q)] == lab[size_t(j)]) return false;
    return !same_text(q, j);
  };
  const Tensor i2t = ops::mul(ops::matmul(image_emb, all_te.transpose(0, 1)), scale);  // [B, G]
  const Tensor t2i = ops::mul(ops::matmul(text_emb, all_ie.transpose(0, 1)), scale);
  std::vector<double> ui(u.begin() + n.offset, u.begin() + n.offset + B), ut(u.begin() + G + n.offset, u.begin() + G + n.offset + B);
  n.text_for_image = sample_hard_negatives(i2t, allowed, ui);
  n.image_for_text = sample_hard_negatives(t2i, allowed, ut);
  return n;
}

namespace {

constexpr uint64_t kItmSalt = 0x69746Dull;        // "itm"
constexpr uint64_t kItmHeadSalt = 0x69746D68ull;  // "itmh"

struct ItmSpec {
  std::string image = "image", text = "text";
  bool hard_negatives = true;  // false: negatives drawn uniformly (the ablation)
  bool exclude_same_label = false;
  int64_t hard_warmup = 0;  // stage steps over which the sampling goes from uniform to the ITC softmax
  std::string eval_negatives;  // eval.hard_negatives (resolved)
  int64_t rerank_k = 0, eval_samples = 1000;
};

// BERT's pooler (tanh of a dense layer on the first state), then two logits: [no match, match].
Tensor log_odds(const Tensor& logits) { return ops::sub(logits.select(1, 1), logits.select(1, 0)); }

class ItmHead : public Module {
 public:
  ItmHead(int64_t width, Generator& gen) {
    // PyTorch's default init (U(±1/√in)), not BERT's N(0, 0.02²): from scratch, two 0.02-scaled
    // layers pass the encoder a gradient of ~1e-4 of the loss's, and ITM sits at its prior for
    // hundreds of steps.
    pooler = std::make_shared<Linear>(width, width, true, gen);
    register_module("pooler", pooler);
    fc = std::make_shared<Linear>(width, 2, true, gen);
    register_module("fc", fc);
  }
  Tensor forward(const Tensor& first) const { return fc->forward(ops::tanh(pooler->forward(first))); }
  std::shared_ptr<Linear> pooler, fc;
};

struct HardNegativeRow {
  std::string image, text, negative;
};
std::vector<HardNegativeRow> read_hard_negatives(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(str_cat(path, ": cannot open the hard-negative captions (task itm's eval.hard_negatives)"));
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  std::vector<HardNegativeRow> rows;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      throw Error(str_cat(path, ":", n, ": not JSON (", e.what(), ")"));
    }
    HardNegativeRow r;
    for (auto [key, out] : {std::pair<const char*, std::string*>{"image", &r.image}, {"text", &r.text}, {"negative", &r.negative}}) {
      if (!j.is_object() || !j.contains(key) || !j[key].is_string() || j[key].get<std::string>().empty())
        throw Error(str_cat(path, ":", n, ": expected a non-empty string \"", key, "\" (rows {\"image\", \"text\", \"negative\"})"));
      *out = j[key].get<std::string>();
    }
    r.image = (dir / r.image).string();
    rows.push_back(std::move(r));
  }
  if (rows.empty()) throw Error(str_cat(path, ": holds no rows"));
  return rows;
}

class ItmTask : public Task {
 public:
  ItmTask(const ItmSpec& s, TaskEnv& env)
      : s_(s), model_(env.model), tok_(env.tokenizer), comm_(env.comm), gen_(env.seed ^ kItmSalt) {
    LOOM_CHECK(tok_, "task itm needs a tokenizer");
    fusion_ = model_.fusion();
    LOOM_CHECK(fusion_, "task itm needs a model with a fusion encoder (model.type: vlmo)");
    const int64_t width = fusion_->fusion_width();
    if (auto existing = std::dynamic_pointer_cast<ItmHead>(model_.child("itm_head"))) {
      head_ = existing.get();
    } else {
      LOOM_CHECK(!model_.has_child("itm_head"), "task itm: the model already has a child 'itm_head' of another kind");
      Generator gen(env.seed ^ kItmHeadSalt);  // its own stream: the model's other weights do not depend on it
      auto h = std::make_shared<ItmHead>(width, gen);
      added_ = h->parameter_count();
      head_ = &model_.register_module("itm_head", h);
    }
  }
  int64_t added_parameters() const { return added_; }
  int64_t min_batch() const override { return 2; }  // a negative needs another example
  void configure(data::LoaderConfig& c) const override {
    configure_input(model_.tower(s_.image).input(), c);
    configure_input(model_.tower(s_.text).input(), c);
  }

  Tensor logits(const Tensor& images, const Tensor& texts, Generator* drop_gen) const {
    const Tensor h = fusion_->fuse({{s_.image, images}, {s_.text, texts}}, drop_gen);
    return head_->forward(h.select(1, 0));  // [B, 2]
  }

  std::vector<LossPart> forward(const data::Batch& b, Generator& drop_gen, StepContext& step) override {
    const Tensor& images = b[s_.image];
    const Tensor& texts = b[s_.text];
    const int64_t B = images.size(0);
    Tensor ie, te;
    {
      NoGradGuard ng;
      auto si = step.shared.find(s_.image + ".embed"), st = step.shared.find(s_.text + ".embed");
      ie = si != step.shared.end() ? si->second.detach() : model_.embed(s_.image, images);
      te = st != step.shared.end() ? st->second.detach() : model_.embed(s_.text, texts);
    }
    const Tensor log_scale = model_.pair_logit_scale(s_.image, s_.text);
    // Uniform negatives (the ablation) are a softmax over equal scores.
    double scale = !s_.hard_negatives ? 0.0 : log_scale.defined() ? std::exp(log_scale.item<double>()) : 1.0 / 0.07;
    if (s_.hard_warmup > 0) scale *= std::min(1.0, double(step.stage_step) / double(s_.hard_warmup));
    Tensor labels;
    if (s_.exclude_same_label) labels = b["label"].to(Device::cpu());
    const ItmNegatives n = itm_hard_negatives(ie, te, images, texts, scale, comm_, gen_, labels);
    std::vector<int64_t> img_rows, neg_text, neg_img, txt_rows;
    for (int64_t i = 0; i < B; ++i) {
      if (n.text_for_image[size_t(i)] >= 0) img_rows.push_back(i), neg_text.push_back(n.text_for_image[size_t(i)]);
      if (n.image_for_text[size_t(i)] >= 0) txt_rows.push_back(i), neg_img.push_back(n.image_for_text[size_t(i)]);
    }
    const Device dev = images.device();
    auto idx = [&](const std::vector<int64_t>& v) { return Tensor::from(v, {int64_t(v.size())}).to(dev); };
    std::vector<Tensor> all_i{images}, all_t{texts};
    if (!img_rows.empty()) {
      all_i.push_back(ops::index_select(images, 0, idx(img_rows)));
      all_t.push_back(ops::index_select(n.all_texts, 0, idx(neg_text)));
    }
    if (!txt_rows.empty()) {
      all_i.push_back(ops::index_select(n.all_images, 0, idx(neg_img)));
      all_t.push_back(ops::index_select(texts, 0, idx(txt_rows)));
    }
    const int64_t negatives = int64_t(img_rows.size() + txt_rows.size());
    std::vector<int64_t> match(size_t(B), 1);
    match.resize(size_t(B + negatives), 0);
    const Tensor target = idx(match);
    const Tensor lg = logits(ops::cat(all_i, 0), ops::cat(all_t, 0), &drop_gen);
    {
      NoGradGuard ng;
      last_correct_ = ops::sum(ops::eq(ops::argmax(lg, -1), target).to(DType::f32));
      last_pairs_ = B + negatives;
    }
    return {{"itm", ops::cross_entropy(lg, target)}};
  }
  Metrics train_metrics() const override {
    if (!last_correct_.defined() || last_pairs_ == 0) return {};
    return {{"train/itm_acc", last_correct_.item<double>() / double(last_pairs_)}};
  }

  bool evaluates() const override { return !s_.eval_negatives.empty() || s_.rerank_k > 0; }
  Metrics evaluate(const EvalEnv& env) override {
    const bool was_training = model_.is_training();
    model_.eval();
    NoGradGuard ng;
    Metrics m;
    if (!s_.eval_negatives.empty()) evaluate_hard_negatives(env, m);
    if (s_.rerank_k > 0 && env.data) evaluate_rerank(env, m);
    model_.train(was_training);
    return m;
  }

  nlohmann::json state() const override { return generator_state("negative_rng", gen_); }
  void load_state(const nlohmann::json& st, const std::string& source) override {
    load_generator_state(gen_, st, "negative_rng", source, "itm");
  }

 private:
  data::LoaderConfig eval_loader(const EvalEnv& env) const {
    data::LoaderConfig lc;
    if (env.data) lc = loader_config(*env.data, 0, false);
    configure(lc);
    lc.read_audio = false;
    lc.on_error = "fail";  // a missing image would shift every pair after it
    return lc;
  }
  Tensor match_probability(const Tensor& images, const Tensor& texts) const {
    return ops::softmax(logits(images, texts, nullptr), -1).select(1, 1);
  }
  // log p(match) - log p(no match) [B].
  Tensor match_log_odds(const Tensor& images, const Tensor& texts) const {
    return log_odds(logits(images, texts, nullptr));
  }

  void evaluate_hard_negatives(const EvalEnv& env, Metrics& m) {
    const std::vector<HardNegativeRow> rows = read_hard_negatives(s_.eval_negatives);
    auto manifest = std::make_shared<data::Manifest>();
    manifest->path = s_.eval_negatives;
    const size_t n = std::min(rows.size(), size_t(std::max<int64_t>(1, s_.eval_samples)));
    for (size_t i = 0; i < n; ++i) {
      data::Example e;
      e.image = rows[i].image;
      e.text = rows[i].text;
      manifest->rows.push_back(e);
    }
    data::LoaderConfig lc = eval_loader(env);
    lc.batch_size = std::min<int64_t>(lc.batch_size, int64_t(n));
    data::Loader loader(manifest, tok_, lc);
    const Device dev = model_.device();
    int64_t seen = 0, itm_right = 0, itm_pick = 0, itc_pick = 0;
    while (auto b = loader.next()) {
      std::vector<std::string> negs;
      for (int64_t r : b->indices) negs.push_back(rows[size_t(r)].negative);
      const Tensor images = (*b)[s_.image].to(dev), pos = (*b)[s_.text].to(dev);
      const Tensor neg = tok_->encode_batch(negs, pos.size(1)).to(dev);
      const std::vector<float> pp = match_probability(images, pos).to_vector<float>(),
                               pn = match_probability(images, neg).to_vector<float>();
      const Tensor ie = model_.embed(s_.image, images);
      const std::vector<float> sp = ops::sum(ops::mul(ie, model_.embed(s_.text, pos)), {1}).to_vector<float>(),
                               sn = ops::sum(ops::mul(ie, model_.embed(s_.text, neg)), {1}).to_vector<float>();
      for (size_t i = 0; i < pp.size(); ++i) {
        itm_right += (pp[i] > 0.5f) + (pn[i] < 0.5f);
        itm_pick += pp[i] > pn[i];
        itc_pick += sp[i] > sn[i];
      }
      seen += int64_t(pp.size());
    }
    LOOM_CHECK(seen > 0, s_.eval_negatives, ": no pair could be read");
    m["eval/itm_acc"] = double(itm_right) / double(2 * seen);
    m["eval/itm_pick"] = double(itm_pick) / double(seen);
    m["eval/itc_pick"] = double(itc_pick) / double(seen);
    m["eval/itm_pairs"] = double(seen);
  }

  void evaluate_rerank(const EvalEnv& env, Metrics& m) {
    data::LoaderConfig lc = eval_loader(env);
    data::Loader loader(env.data->rows, tok_, lc);
    const Device dev = model_.device();
    std::vector<Tensor> images, texts, ie, te;
    std::vector<std::string> files, captions;
    int64_t seen = 0;
    while (seen < s_.eval_samples) {
      auto b = loader.next();
      if (!b) break;
      const int64_t take = std::min(b->size(), s_.eval_samples - seen);
      const Tensor im = (*b)[s_.image].narrow(0, 0, take).to(dev), tx = (*b)[s_.text].narrow(0, 0, take).to(dev);
      images.push_back(im);
      texts.push_back(tx);
      ie.push_back(model_.embed(s_.image, im));
      te.push_back(model_.embed(s_.text, tx));
      for (int64_t i = 0; i < take; ++i) {
        files.push_back(env.data->rows->rows[size_t(b->indices[size_t(i)])].image);
        captions.push_back(b->texts[size_t(i)]);
      }
      seen += take;
    }
    LOOM_CHECK(seen > 1, env.data->manifest, ": re-ranked retrieval needs at least two pairs");
    const RetrievalTruth truth = RetrievalTruth::from(files, captions);
    const Tensor all_images = ops::cat(images, 0), all_texts = ops::cat(texts, 0);
    const Tensor clip_rows = Tensor::from(truth.clip_rows, {truth.clips()}).to(dev);
    const Tensor clip_images = ops::index_select(all_images, 0, clip_rows);
    const Tensor clip_emb = ops::index_select(ops::cat(ie, 0), 0, clip_rows);
    const Tensor t2i = ops::matmul(ops::cat(te, 0), clip_emb.transpose(0, 1)).to(Device::cpu()).contiguous();  // [rows, clips]
    auto t2i_right = [&](int64_t q, int64_t c) { return truth.right(c, q); };
    auto i2t_right = [&](int64_t c, int64_t q) { return truth.right(c, q); };
    const Tensor i2t = t2i.transpose(0, 1).contiguous();  // [clips, rows]
    for (auto& [k, v] : recall_at(t2i, t2i_right, "eval/t2i_dual_r")) m[k] = v;
    for (auto& [k, v] : recall_at(i2t, i2t_right, "eval/i2t_dual_r")) m[k] = v;
    // Text -> image: each text's top k images by similarity, re-scored (placed above every other
    // candidate, in the new order) by the ITM log-odds plus the ITC logit (cosine x logit scale), as
    // BLIP re-ranks, and by the ITM log-odds alone (ALBEF's); image -> text likewise.
    const Tensor log_scale = model_.pair_logit_scale(s_.image, s_.text);
    const double itc_scale = log_scale.defined() ? std::exp(log_scale.item<double>()) : 1.0 / 0.07;
    auto rerank = [&](const Tensor& sim, bool text_queries, bool with_itc) {
      const int64_t Q = sim.size(0), C = sim.size(1), k = std::min(s_.rerank_k, C);
      std::vector<float> s = sim.to_vector<float>();
      std::vector<int64_t> qi, ci;
      for (int64_t q = 0; q < Q; ++q) {
        std::vector<int64_t> order(static_cast<size_t>(C));
        for (int64_t c = 0; c < C; ++c) order[size_t(c)] = c;
        std::partial_sort(order.begin(), order.begin() + k, order.end(),
                          [&](int64_t a, int64_t b) { return s[size_t(q * C + a)] > s[size_t(q * C + b)]; });
        for (int64_t j = 0; j < k; ++j) qi.push_back(q), ci.push_back(order[size_t(j)]);
      }
      const int64_t chunk = 256;
      for (size_t at = 0; at < qi.size(); at += chunk) {
        const size_t end = std::min(qi.size(), at + size_t(chunk));
        std::vector<int64_t> rows_img, rows_txt;
        for (size_t i = at; i < end; ++i) {
          rows_img.push_back(text_queries ? ci[i] : qi[i]);
          rows_txt.push_back(text_queries ? qi[i] : ci[i]);
        }
        auto idx = [&](const std::vector<int64_t>& v) { return Tensor::from(v, {int64_t(v.size())}).to(dev); };
        const std::vector<float> p =
            match_log_odds(ops::index_select(clip_images, 0, idx(rows_img)), ops::index_select(all_texts, 0, idx(rows_txt)))
                .to_vector<float>();
        for (size_t i = at; i < end; ++i) {
          float& v = s[size_t(qi[i] * C + ci[i])];
          v = p[i - at] + (with_itc ? float(itc_scale) * v : 0.0f);
        }
      }
      // Above every candidate left out of the top k (whose scores are cosines, in [-1, 1]).
      float low = INFINITY;
      for (size_t i = 0; i < qi.size(); ++i) low = std::min(low, s[size_t(qi[i] * C + ci[i])]);
      for (size_t i = 0; i < qi.size(); ++i) s[size_t(qi[i] * C + ci[i])] += 2.0f - low;
      return Tensor::from(s, {Q, C});
    };
    const std::string k = std::to_string(s_.rerank_k);
    for (auto& [key, v] : recall_at(rerank(t2i, true, true), t2i_right, "eval/t2i_rerank_r")) m[key] = v;
    for (auto& [key, v] : recall_at(rerank(i2t, false, true), i2t_right, "eval/i2t_rerank_r")) m[key] = v;
    for (auto& [key, v] : recall_at(rerank(t2i, true, false), t2i_right, "eval/t2i_rerank_itm_r")) m[key] = v;
    for (auto& [key, v] : recall_at(rerank(i2t, false, false), i2t_right, "eval/i2t_rerank_itm_r")) m[key] = v;
    m["eval/rerank_k"] = double(s_.rerank_k);
    m["eval/rerank_pairs"] = double(seen);
  }

  ItmSpec s_;
  MultimodalModel& model_;
  const data::TextTokenizer* tok_;
  distributed::Communicator* comm_;
  const FusionEncoder* fusion_ = nullptr;
  ItmHead* head_ = nullptr;
  int64_t added_ = 0;
  Generator gen_;
  Tensor last_correct_;
  int64_t last_pairs_ = 0;
};

}  // namespace

Tensor itm_match_log_odds(const MultimodalModel& model, const Tensor& images, const Tensor& texts, const std::string& who) {
  const FusionEncoder* fusion = model.fusion();
  LOOM_CHECK(fusion, who, ": the model has no fusion encoder over image and text (model.type: vlmo)");
  const auto head = std::dynamic_pointer_cast<ItmHead>(model.child("itm_head"));
  LOOM_CHECK(head, who, ": the model has no image-text matching head (a recipe whose stage trains task itm adds it)");
  return log_odds(head->forward(fusion->fuse({{"image", images}, {"text", texts}}).select(1, 0)));
}

TaskSpec parse_itm(const Config& c, const std::string& k, const ModelSpec& model) {
  ItmSpec s;
  s.image = c.str(k + ".image", "image");
  s.text = c.str(k + ".text", "text");
  const TowerSpec* image = model.tower(s.image);
  const TowerSpec* text = model.tower(s.text);
  if (!text || text->input.kind != "text")
    c.fail(c.has(k + ".text") ? k + ".text" : k + ".type",
           str_cat("task itm matches images with texts, and the model has no text tower '", s.text, "' (its towers: ",
                   model.describe_towers(), ")"));
  if (!image || image->input.kind != "image")
    c.fail(c.has(k + ".image") ? k + ".image" : k + ".type",
           str_cat("task itm needs an image tower '", s.image, "', and the model has: ", model.describe_towers()));
  if (model.fusion_over.empty())
    c.fail(k + ".type", str_cat("task itm scores a pair through a fusion encoder over both inputs (model.type: vlmo); "
                                "model.type ", model.type, " has none"));
  if (!model.embed_dim)
    c.fail(k + ".type", "task itm draws its negatives by the towers' similarity, and the model has no heads (embed_dim)");
  s.hard_negatives = c.boolean(k + ".hard_negatives", true);
  s.exclude_same_label = c.boolean(k + ".exclude_same_label", false);
  s.hard_warmup = c.i64(k + ".hard_negative_warmup", 0);
  if (s.hard_warmup < 0) c.fail(k + ".hard_negative_warmup", "must be >= 0 (stage steps; 0: hard from the first step)");
  if (c.has(k + ".eval.hard_negatives")) s.eval_negatives = c.existing_path(k + ".eval.hard_negatives");
  s.rerank_k = c.i64(k + ".eval.rerank_k", 0);
  if (s.rerank_k < 0) c.fail(k + ".eval.rerank_k", "must be >= 0 (0: no re-ranked retrieval)");
  s.eval_samples = c.i64(k + ".eval.samples", 1000);
  if (s.eval_samples < 2) c.fail(k + ".eval.samples", "must be >= 2");
  TaskSpec spec;
  spec.needs = {s.image, s.text};
  if (s.exclude_same_label) spec.needs.push_back("label");
  spec.needs_text = true;
  spec.needs_eval_data = s.rerank_k > 0;
  spec.build = [s](TaskEnv& env) -> std::unique_ptr<Task> {
    auto t = std::make_unique<ItmTask>(s, env);
    report_added(env, "itm", "itm_head", t->added_parameters());
    return t;
  };
  return spec;
}

}  // namespace loom
