#include "trainers/eval/retrieval.h"
#include <algorithm>
#include <cmath>
#include <fstream>

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

// Recall@K of rows against columns. Column j is a positive for row i when their captions are the same
// text (group[i] == group[j]): with duplicate captions (ten class prompts over a test set) any copy is a
// correct answer, as with COCO's five captions per image. rank = negatives scoring at least as high as the best
// positive (ties count against it, so a collapsed model with equal scores everywhere scores 0, not 1).
Metrics recall_at(const Tensor& sim, const std::vector<int64_t>& group, const std::string& prefix) {
  const int64_t n = sim.size(0);
  std::vector<float> s = sim.contiguous().to_vector<float>();
  int64_t hit[3] = {0, 0, 0};
  const int64_t ks[3] = {1, 5, 10};
  for (int64_t i = 0; i < n; ++i) {
    const float* row = s.data() + i * n;
    float best = -INFINITY;
    for (int64_t j = 0; j < n; ++j) if (group[size_t(j)] == group[size_t(i)]) best = std::max(best, row[j]);
    int64_t rank = 0;
    for (int64_t j = 0; j < n; ++j) rank += group[size_t(j)] != group[size_t(i)] && row[j] >= best;
    for (int k = 0; k < 3; ++k) hit[k] += rank < ks[k];
  }
  Metrics m;
  for (int k = 0; k < 3; ++k) m[prefix + std::to_string(ks[k])] = double(hit[k]) / double(std::max<int64_t>(1, n));
  return m;
}

double map_at_10(const Tensor& sim, const std::vector<int64_t>& group) {
  const int64_t n = sim.size(0), m = sim.size(1);
  std::vector<float> s = sim.contiguous().to_vector<float>();
  std::vector<int64_t> idx(static_cast<size_t>(m));
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = s.data() + i * m;
    auto positive = [&](int64_t j) { return group[size_t(j)] == group[size_t(i)]; };
    for (int64_t j = 0; j < m; ++j) idx[size_t(j)] = j;
    const int64_t k = std::min<int64_t>(10, m);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int64_t a, int64_t b) {
      if (row[a] != row[b]) return row[a] > row[b];
      return !positive(a) && positive(b);  // ties: negatives first
    });
    int64_t positives = 0, hits = 0;
    for (int64_t j = 0; j < m; ++j) positives += positive(j);
    double ap = 0;
    for (int64_t r = 0; r < k; ++r)
      if (positive(idx[size_t(r)])) ap += double(++hits) / double(r + 1);
    total += positives > 0 ? ap / double(std::min<int64_t>(10, positives)) : 0.0;
  }
  return total / double(std::max<int64_t>(1, n));
}

Metrics evaluate_contrastive(const ContrastiveTowers& towers, const data::BpeTokenizer& tok, const ClipEvalOptions& r,
                             const DataSpec& data, int64_t max_samples) {
  Metrics out;
  Module& model = *towers.model;
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard ng;
  data::LoaderConfig lc = loader_config(data, 0, false);
  towers.configure(lc);
  data::Loader loader(data.rows, &tok, lc);
  std::vector<Tensor> img_feats, txt_feats, labels;
  std::vector<int64_t> caption_group;  // same caption text -> same group
  std::map<std::string, int64_t> caption_ids;
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
    img_feats.push_back(towers.encode(images));
    labels.push_back(lab);
    if (r.retrieval && with_text < r.retrieval_samples) {
      txt_feats.push_back(towers.encode_text(tokens));
      for (int64_t i = 0; i < take; ++i)
        caption_group.push_back(caption_ids.emplace(b->texts[size_t(i)], int64_t(caption_ids.size())).first->second);
      with_text += take;
    }
    seen += take;
  }
  LOOM_CHECK(seen > 0, data.manifest, ": no evaluation examples could be read");
  Tensor img = ops::cat(img_feats, 0), lab = ops::cat(labels, 0);

  if (r.zeroshot) {
    const auto classes = read_lines(r.zeroshot_labels);
    std::vector<Tensor> cls;
    for (const auto& name : classes) {
      std::vector<std::string> prompts;
      for (const auto& t : r.zeroshot_templates) prompts.push_back(fill_template(t, name));
      Tensor f = towers.encode_text(tok.encode_batch(prompts, towers.context));
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
    Tensor sim = ops::matmul(img.narrow(0, 0, n), txt.narrow(0, 0, n).transpose(0, 1));
    const std::string x2t = "eval/" + towers.letter + "2t_", t2x = "eval/t2" + towers.letter + "_";
    for (auto& [k, v] : recall_at(sim, caption_group, x2t + "r")) out[k] = v;
    for (auto& [k, v] : recall_at(sim.transpose(0, 1), caption_group, t2x + "r")) out[k] = v;
    out[x2t + "map10"] = map_at_10(sim, caption_group);
    out[t2x + "map10"] = map_at_10(sim.transpose(0, 1), caption_group);
  }
  out["eval/samples"] = double(seen);
  model.train(was_training);
  return out;
}

}  // namespace loom
