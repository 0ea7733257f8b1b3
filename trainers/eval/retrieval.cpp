#include "trainers/eval/retrieval.h"
#include "core/autocast.h"
#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>

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

Metrics evaluate_contrastive(const ContrastiveTowers& towers, const data::TextTokenizer& tok, const ClipEvalOptions& r,
                             const DataSpec& data, int64_t max_samples) {
  Metrics out;
  Module& model = *towers.model;
  const std::optional<DType> autocast = autocast_dtype();  // the towers encode in the caller's precision
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard ng;
  data::LoaderConfig lc = loader_config(data, 0, false);
  towers.configure(lc);
  data::Loader loader(data.rows, &tok, lc);
  std::vector<Tensor> img_feats, txt_feats, labels;
  std::vector<std::string> files, captions;  // per retrieval row
  int64_t seen = 0, with_text = 0;
  const int64_t limit = max_samples > 0 ? max_samples : INT64_MAX;
  while (seen < limit) {
    auto b = loader.next();
    if (!b) break;
    Tensor images = (*b)[towers.key], tokens = (*b)["text"], lab = (*b)["label"];
    const int64_t take = std::min<int64_t>(images.size(0), limit - seen);
    if (take < images.size(0)) {
      images = images.narrow(0, 0, take);
      tokens = tokens.narrow(0, 0, take);
      lab = lab.narrow(0, 0, take);
    }
    // Inputs go where the model is; the features come back to the CPU in f32, where the metrics run.
    const Device dev = model.device();
    auto host = [](const Tensor& f) { return f.to(DType::f32).to(Device::cpu()); };
    img_feats.push_back(host(towers.encode(images.to(dev))));
    labels.push_back(lab);
    if (r.retrieval && with_text < r.retrieval_samples) {
      txt_feats.push_back(host(towers.encode_text(tokens.to(dev))));
      for (int64_t i = 0; i < take; ++i) {
        const data::Example& e = data.rows->rows[size_t(b->indices[size_t(i)])];
        files.push_back(towers.key == "audio" ? e.audio : e.image);
        captions.push_back(b->texts[size_t(i)]);
      }
      with_text += take;
    }
    seen += take;
  }
  LOOM_CHECK(seen > 0, data.manifest, ": no evaluation examples could be read");
  // The metrics themselves in f32 on the CPU, whatever precision encoded the features (a bf16
  // similarity would tie near neighbours and bias every recall).
  AutocastGuard f32_metrics(std::nullopt);
  Tensor img = ops::cat(img_feats, 0), lab = ops::cat(labels, 0);

  if (r.zeroshot) {
    const auto classes = read_lines(r.zeroshot_labels);
    std::vector<Tensor> cls;
    for (const auto& name : classes) {
      std::vector<std::string> prompts;
      for (const auto& t : r.zeroshot_templates) prompts.push_back(fill_template(t, name));
      Tensor f;
      {
        AutocastGuard as_trained(autocast);  // the text tower computes as in training
        f = towers.encode_text(tok.encode_batch(prompts, towers.context).to(model.device())).to(DType::f32).to(Device::cpu());
      }
      cls.push_back(ops::l2_normalize(ops::mean(f, {0}), -1));
    }
    Tensor weights = ops::stack(cls, 0);                        // [C, E]
    Tensor logits = ops::matmul(img, weights.transpose(0, 1));  // [N, C]
    const int64_t k = std::min<int64_t>(5, int64_t(classes.size()));
    Tensor top = ops::topk(logits, k, -1).indices;
    auto t = top.to_vector<int64_t>();
    auto y = lab.to_vector<int64_t>();
    int64_t top1 = 0, top5 = 0, counted = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      if (y[i] < 0) continue;
      ++counted;
      top1 += t[i * size_t(k)] == y[i];
      for (int64_t j = 0; j < k; ++j) top5 += t[i * size_t(k) + size_t(j)] == y[i];
    }
    LOOM_CHECK(counted > 0, data.manifest, ": zero-shot evaluation needs labels, and no example has one");
    out["eval/zeroshot_top1"] = double(top1) / double(counted);
    out["eval/zeroshot_top5"] = double(top5) / double(counted);
  }
  if (r.retrieval && !txt_feats.empty()) {
    Tensor txt = ops::cat(txt_feats, 0);
    const int64_t n = std::min<int64_t>(txt.size(0), r.retrieval_samples);
    files.resize(size_t(n));
    captions.resize(size_t(n));
    const RetrievalTruth truth = RetrievalTruth::from(files, captions);
    // One feature row per clip (its first row's), against every caption row.
    Tensor clip_feats = ops::index_select(img.narrow(0, 0, n), 0, Tensor::from(truth.clip_rows, {truth.clips()}));
    Tensor sim = ops::matmul(clip_feats, txt.narrow(0, 0, n).transpose(0, 1));  // [clips, captions]
    auto x2t_right = [&](int64_t clip, int64_t row) { return truth.right(clip, row); };
    auto t2x_right = [&](int64_t row, int64_t clip) { return truth.right(clip, row); };
    const std::string x2t = "eval/" + towers.letter + "2t_", t2x = "eval/t2" + towers.letter + "_";
    for (auto& [k, v] : recall_at(sim, x2t_right, x2t + "r")) out[k] = v;
    Tensor sim_t = sim.transpose(0, 1).contiguous();
    for (auto& [k, v] : recall_at(sim_t, t2x_right, t2x + "r")) out[k] = v;
    out[x2t + "map10"] = map_at_10(sim, x2t_right);
    out[t2x + "map10"] = map_at_10(sim_t, t2x_right);
    out["eval/retrieval_clips"] = double(truth.clips());
  }
  out["eval/samples"] = double(seen);
  model.train(was_training);
  return out;
}

}  // namespace loom
