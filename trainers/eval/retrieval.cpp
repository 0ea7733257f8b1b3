#include "trainers/eval/retrieval.h"
#include "core/autocast.h"
#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <optional>

namespace loom {
namespace {

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path);
  LOOM_CHECK(f, path, ": cannot open");
  std::vector<std::string> out;
  for (std::string line; std::getline(f, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  LOOM_CHECK(!out.empty(), path, ": no labels in file");
  return out;
}

std::string fill_template(const std::string& tmpl, const std::string& name) {
  std::string s = tmpl;
  const size_t at = s.find("{}");
  return s.replace(at, 2, name);
}

}  // namespace

RetrievalTruth RetrievalTruth::from(const std::vector<std::string>& files, const std::vector<std::string>& captions) {
  LOOM_CHECK(files.size() == captions.size(), "RetrievalTruth: ", files.size(), " files and ", captions.size(), " captions");
  RetrievalTruth t;
  std::map<std::string, int64_t> clip_ids, caption_ids;
  for (size_t i = 0; i < files.size(); ++i) {
    const auto [cl, new_clip] = clip_ids.emplace(files[i], int64_t(clip_ids.size()));
    if (new_clip) {
      t.clip_rows.push_back(int64_t(i));
      t.clip_captions.emplace_back();
    }
    const int64_t cap = caption_ids.emplace(captions[i], int64_t(caption_ids.size())).first->second;
    t.clip_of.push_back(cl->second);
    t.caption_of.push_back(cap);
    auto& mine = t.clip_captions[size_t(cl->second)];
    if (std::find(mine.begin(), mine.end(), cap) == mine.end()) mine.push_back(cap);
  }
  return t;
}

bool RetrievalTruth::right(int64_t clip, int64_t row) const {
  const auto& mine = clip_captions[size_t(clip)];
  return std::find(mine.begin(), mine.end(), caption_of[size_t(row)]) != mine.end();
}

Metrics recall_at(const Tensor& sim, const std::function<bool(int64_t, int64_t)>& positive, const std::string& prefix) {
  const int64_t n = sim.size(0), m = sim.size(1);
  std::vector<float> s = sim.contiguous().to_vector<float>();
  int64_t hit[3] = {0, 0, 0};
  const int64_t ks[3] = {1, 5, 10};
  std::vector<char> pos(static_cast<size_t>(m));
  for (int64_t i = 0; i < n; ++i) {
    const float* row = s.data() + i * m;
    float best = -INFINITY;
    for (int64_t j = 0; j < m; ++j) {
      pos[size_t(j)] = positive(i, j);
      if (pos[size_t(j)]) best = std::max(best, row[j]);
    }
    int64_t rank = 0;
    for (int64_t j = 0; j < m; ++j) rank += !pos[size_t(j)] && row[j] >= best;
    for (int k = 0; k < 3; ++k) hit[k] += rank < ks[k];
  }
  Metrics out;
  for (int k = 0; k < 3; ++k) out[prefix + std::to_string(ks[k])] = double(hit[k]) / double(std::max<int64_t>(1, n));
  return out;
}

double map_at_10(const Tensor& sim, const std::function<bool(int64_t, int64_t)>& positive) {
  const int64_t n = sim.size(0), m = sim.size(1);
  std::vector<float> s = sim.contiguous().to_vector<float>();
  std::vector<int64_t> idx(static_cast<size_t>(m));
  std::vector<char> pos(static_cast<size_t>(m));
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = s.data() + i * m;
    int64_t positives = 0;
    for (int64_t j = 0; j < m; ++j) {
      idx[size_t(j)] = j;
      pos[size_t(j)] = positive(i, j);
      positives += pos[size_t(j)];
    }
    const int64_t k = std::min<int64_t>(10, m);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int64_t a, int64_t b) {
      if (row[a] != row[b]) return row[a] > row[b];
      return !pos[size_t(a)] && pos[size_t(b)];  // ties: wrong ones first
    });
    int64_t hits = 0;
    double ap = 0;
    for (int64_t r = 0; r < k; ++r)
      if (pos[size_t(idx[size_t(r)])]) ap += double(++hits) / double(r + 1);
    total += positives > 0 ? ap / double(std::min<int64_t>(10, positives)) : 0.0;
  }
  return total / double(std::max<int64_t>(1, n));
}

void ContrastiveTowers::configure(data::LoaderConfig& c, const std::vector<std::string>& which) const {
  for (const std::string& m : which) configure_input(model->tower(m).input(), c);
}

int64_t ContrastiveTowers::context() const { return model->has_tower("text") ? model->tower("text").input().context : 0; }

std::string ContrastiveTowers::letter(const std::string& modality) const {
  for (const std::string& m : modalities)
    if (m != modality && m[0] == modality[0]) return modality;  // two modalities share the letter: the name
  return modality.substr(0, 1);
}

namespace {

// What the evaluation set encodes to: features per modality (on the CPU, f32), the retrieval rows'
// keys (the file, or the caption), the labels, and how many rows were seen and kept for retrieval.
struct EncodedSet {
  std::map<std::string, std::vector<Tensor>> feats;
  std::map<std::string, std::vector<std::string>> keys;
  std::vector<Tensor> labels;
  int64_t seen = 0, kept = 0;
  Tensor all(const std::string& m) const { return ops::cat(feats.at(m), 0); }
};

EncodedSet encode_set(const ContrastiveTowers& towers, const data::TextTokenizer* tok, const ClipEvalOptions& r,
                      const DataSpec& data, const std::vector<std::string>& mods, int64_t max_samples) {
  MultimodalModel& model = *towers.model;
  const bool text = std::find(mods.begin(), mods.end(), "text") != mods.end();
  data::LoaderConfig lc = loader_config(data, 0, false);
  towers.configure(lc, mods);
  lc.read_images = std::find(mods.begin(), mods.end(), "image") != mods.end();
  lc.read_audio = std::find(mods.begin(), mods.end(), "audio") != mods.end();
  data::Loader loader(data.rows, text ? tok : nullptr, lc);
  EncodedSet set;
  const int64_t limit = max_samples > 0 ? max_samples : INT64_MAX;
  while (set.seen < limit) {
    auto b = loader.next();
    if (!b) break;
    const int64_t rows = b->size();
    if (rows == 0) continue;
    const int64_t take = std::min<int64_t>(rows, limit - set.seen);
    auto first = [&](Tensor t) { return take < rows ? t.narrow(0, 0, take) : t; };
    // Inputs go where the model is; the features come back to the CPU in f32, where the metrics run.
    const Device dev = model.device();
    const bool retrieve = r.retrieval && set.kept < r.retrieval_samples;
    for (const std::string& m : mods) {
      if (m == "text" && !retrieve) continue;  // text rows only feed retrieval (zero-shot reads prompts)
      set.feats[m].push_back(model.embed(m, first((*b)[m]).to(dev)).to(DType::f32).to(Device::cpu()));
      if (!retrieve) continue;
      for (int64_t i = 0; i < take; ++i) {
        const data::Example& e = data.rows->rows[size_t(b->indices[size_t(i)])];
        set.keys[m].push_back(m == "text" ? b->texts[size_t(i)] : m == "audio" ? e.audio : e.image);
      }
    }
    set.labels.push_back(first((*b)["label"]));
    if (retrieve) set.kept += take;
    set.seen += take;
  }
  LOOM_CHECK(set.seen > 0, data.manifest, ": no evaluation examples could be read");
  return set;
}

// Zero-shot top-1/top-5 of each non-text modality against the class prompts' mean text features.
void zero_shot(const ContrastiveTowers& towers, const data::TextTokenizer* tok, const ClipEvalOptions& r,
               std::optional<DType> autocast, const std::vector<std::string>& others, const EncodedSet& set,
               const std::string& manifest, Metrics& out) {
  LOOM_CHECK(tok, "zero-shot evaluation needs the run's tokenizer");
  MultimodalModel& model = *towers.model;
  const auto classes = read_lines(r.zeroshot_labels);
  std::vector<Tensor> cls;
  for (const auto& name : classes) {
    std::vector<std::string> prompts;
    for (const auto& t : r.zeroshot_templates) prompts.push_back(fill_template(t, name));
    Tensor f;
    {
      AutocastGuard as_trained(autocast);  // the text tower computes as in training
      f = model.embed("text", tok->encode_batch(prompts, towers.context()).to(model.device())).to(DType::f32).to(Device::cpu());
    }
    cls.push_back(ops::l2_normalize(ops::mean(f, {0}), -1));
  }
  Tensor weights = ops::stack(cls, 0);  // [C, E]
  const auto y = ops::cat(set.labels, 0).to_vector<int64_t>();
  for (const std::string& m : others) {
    Tensor logits = ops::matmul(set.all(m), weights.transpose(0, 1));  // [N, C]
    const int64_t k = std::min<int64_t>(5, int64_t(classes.size()));
    const auto t = ops::topk(logits, k, -1).indices.to_vector<int64_t>();
    int64_t top1 = 0, top5 = 0, counted = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      if (y[i] < 0) continue;
      ++counted;
      top1 += t[i * size_t(k)] == y[i];
      for (int64_t j = 0; j < k; ++j) top5 += t[i * size_t(k) + size_t(j)] == y[i];
    }
    LOOM_CHECK(counted > 0, manifest, ": zero-shot evaluation needs labels, and no example has one");
    const std::string pre = others.size() == 1 ? "eval/zeroshot_" : "eval/" + m + "_zeroshot_";
    out[pre + "top1"] = double(top1) / double(counted);
    out[pre + "top5"] = double(top5) / double(counted);
  }
}

// R@1/5/10 and mAP@10 both ways for every pair of modalities (text second, the others in the
// model's order), one query row per clip.
void retrieval(const ContrastiveTowers& towers, const ClipEvalOptions& r, const std::vector<std::string>& others,
               bool text, const EncodedSet& set, Metrics& out) {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (size_t i = 0; i < others.size(); ++i) {
    for (size_t j = i + 1; j < others.size(); ++j) pairs.emplace_back(others[i], others[j]);
    if (text) pairs.emplace_back(others[i], "text");
  }
  const int64_t n = std::min<int64_t>(set.kept, r.retrieval_samples);
  for (const auto& [a, b] : pairs) {
    const std::vector<std::string>&ka_all = set.keys.at(a), &kb_all = set.keys.at(b);
    std::vector<std::string> ka(ka_all.begin(), ka_all.begin() + n), kb(kb_all.begin(), kb_all.begin() + n);
    const RetrievalTruth truth = RetrievalTruth::from(ka, kb);
    // One feature row per clip of a (its first row's), against every row of b.
    Tensor fa = set.all(a).narrow(0, 0, n), fb = set.all(b).narrow(0, 0, n);
    Tensor clip_feats = ops::index_select(fa, 0, Tensor::from(truth.clip_rows, {truth.clips()}));
    Tensor sim = ops::matmul(clip_feats, fb.transpose(0, 1));  // [clips, rows]
    auto a2b_right = [&](int64_t clip, int64_t row) { return truth.right(clip, row); };
    auto b2a_right = [&](int64_t row, int64_t clip) { return truth.right(clip, row); };
    const std::string la = towers.letter(a), lb = towers.letter(b);
    const std::string a2b = "eval/" + la + "2" + lb + "_", b2a = "eval/" + lb + "2" + la + "_";
    for (auto& [k, v] : recall_at(sim, a2b_right, a2b + "r")) out[k] = v;
    Tensor sim_t = sim.transpose(0, 1).contiguous();
    for (auto& [k, v] : recall_at(sim_t, b2a_right, b2a + "r")) out[k] = v;
    out[a2b + "map10"] = map_at_10(sim, a2b_right);
    out[b2a + "map10"] = map_at_10(sim_t, b2a_right);
    out[pairs.size() == 1 ? "eval/retrieval_clips" : a2b + "clips"] = double(truth.clips());
  }
}

}  // namespace

Metrics evaluate_contrastive(const ContrastiveTowers& towers, const data::TextTokenizer* tok, const ClipEvalOptions& r,
                             const DataSpec& data, int64_t max_samples) {
  MultimodalModel& model = *towers.model;
  // The towers the data has (a clip-and-caption set evaluates one pair of an image-audio-text model).
  const std::vector<std::string> have = data.provides();
  std::vector<std::string> mods;
  for (const std::string& m : towers.modalities)
    if (std::find(have.begin(), have.end(), m) != have.end() && (m != "text" || tok)) mods.push_back(m);
  const bool text = std::find(mods.begin(), mods.end(), "text") != mods.end();
  std::vector<std::string> others;  // besides text
  for (const std::string& m : mods)
    if (m != "text") others.push_back(m);
  LOOM_CHECK(!others.empty() || mods.size() >= 2, data.manifest, ": the evaluation data has none of the model's towers' inputs");

  const std::optional<DType> autocast = autocast_dtype();  // the towers encode in the caller's precision
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard ng;
  const EncodedSet set = encode_set(towers, tok, r, data, mods, max_samples);
  // The metrics themselves in f32 on the CPU, whatever precision encoded the features (a bf16
  // similarity would tie near neighbours and bias every recall).
  AutocastGuard f32_metrics(std::nullopt);
  Metrics out;
  if (r.zeroshot) zero_shot(towers, tok, r, autocast, others, set, data.manifest, out);
  if (r.retrieval && set.kept > 0) retrieval(towers, r, others, text, set, out);
  out["eval/samples"] = double(set.seen);
  model.train(was_training);
  return out;
}

}  // namespace loom
