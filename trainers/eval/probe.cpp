#include "trainers/eval/probe.h"
#include "core/autocast.h"
#include <algorithm>
#include <cmath>
#include <numeric>
#include "trainers/optimizer.h"

namespace loom {

FeatureSet extract_features(const FeatureFn& fn, const DataSpec& data, data::LoaderConfig lc, int64_t limit,
                            const std::string& key) {
  NoGradGuard ng;
  data::Loader loader(data.rows, nullptr, lc);
  std::vector<Tensor> feats;
  FeatureSet out;
  const int64_t want = limit > 0 ? limit : INT64_MAX;
  int64_t have = 0;
  while (have < want) {
    auto b = loader.next();
    if (!b) break;
    if (b->size() == 0) continue;
    std::vector<int64_t> labels = (*b)["label"].to_vector<int64_t>();
    std::vector<int64_t> rows;
    for (size_t i = 0; i < labels.size() && have + int64_t(rows.size()) < want; ++i)
      if (labels[i] >= 0) rows.push_back(int64_t(i));
    if (rows.empty()) continue;
    Tensor images = (*b)[key];
    Tensor f = fn(images).to(DType::f32).to(Device::cpu());  // the probe itself trains on the CPU
    LOOM_CHECK(f.dim() == 2 && f.size(0) == images.size(0), "probe: features must be [B, D], got ", f.describe());
    feats.push_back(ops::index_select(f, 0, Tensor::from(rows, {int64_t(rows.size())}, DType::i64)));
    for (int64_t r : rows) out.labels.push_back(labels[size_t(r)]);
    have += int64_t(rows.size());
  }
  LOOM_CHECK(have > 0, data.manifest, ": the probe found no labelled example that could be read");
  out.features = ops::cat(feats, 0).contiguous();
  return out;
}

namespace {

int64_t class_count(const FeatureSet& a, const FeatureSet& b) {
  int64_t c = 0;
  for (int64_t y : a.labels) c = std::max(c, y + 1);
  for (int64_t y : b.labels) c = std::max(c, y + 1);
  return c;
}

double accuracy(const Tensor& logits, const std::vector<int64_t>& labels) {
  std::vector<int64_t> pred = ops::argmax(logits, 1).to_vector<int64_t>();
  int64_t hit = 0;
  for (size_t i = 0; i < labels.size(); ++i) hit += pred[i] == labels[i];
  return double(hit) / double(std::max<size_t>(1, labels.size()));
}

// DINO's weighted k-NN: the k most similar training features (cosine) vote with weight exp(s / T).
double knn_top1(const FeatureSet& train, const FeatureSet& test, int64_t k, double T, int64_t classes) {
  NoGradGuard ng;
  Tensor tr = ops::l2_normalize(train.features, -1), te = ops::l2_normalize(test.features, -1);
  const int64_t n = te.size(0), kk = std::min<int64_t>(k, tr.size(0));
  Tensor trT = tr.transpose(0, 1);
  int64_t hit = 0;
  for (int64_t at = 0; at < n; at += 512) {  // 512 test rows at a time bound the similarity matrix
    const int64_t m = std::min<int64_t>(512, n - at);
    ops::TopK top = ops::topk(ops::matmul(te.narrow(0, at, m), trT), kk, 1);
    std::vector<float> s = top.values.contiguous().to_vector<float>();
    std::vector<int64_t> idx = top.indices.contiguous().to_vector<int64_t>();
    for (int64_t i = 0; i < m; ++i) {
      std::vector<double> votes(size_t(classes), 0.0);
      for (int64_t j = 0; j < kk; ++j)
        votes[size_t(train.labels[size_t(idx[size_t(i * kk + j)])])] += std::exp(double(s[size_t(i * kk + j)]) / T);
      const int64_t best = int64_t(std::max_element(votes.begin(), votes.end()) - votes.begin());
      hit += best == test.labels[size_t(at + i)];
    }
  }
  return double(hit) / double(std::max<int64_t>(1, n));
}

struct LinearClassifier { Tensor w, b; };

// A linear classifier on x [N, D] by AdamW with minibatches of 256 and a cosine schedule, from zeros.
LinearClassifier fit_linear(const Tensor& x, const std::vector<int64_t>& y, int64_t classes, double wd, const ProbeOptions& o,
                  uint64_t seed) {
  const int64_t N = x.size(0), D = x.size(1), B = std::min<int64_t>(256, N);
  LinearClassifier l{Tensor::zeros({classes, D}), Tensor::zeros({classes})};
  l.w.set_requires_grad(true);
  l.b.set_requires_grad(true);
  AdamWConfig ac;
  ac.lr = o.lr;
  ac.weight_decay = wd;
  AdamW opt({{"weight", l.w}, {"bias", l.b}}, ac);
  ScheduleConfig sc;
  const int64_t per_epoch = (N + B - 1) / B, total = per_epoch * o.epochs;
  Tensor labels = Tensor::from(y, {N}, DType::i64);
  Generator gen(seed);
  int64_t step = 0;
  for (int64_t e = 0; e < o.epochs; ++e) {
    const std::vector<int64_t> order = ops::randperm(N, gen).to_vector<int64_t>();
    for (int64_t at = 0; at < N; at += B, ++step) {
      const int64_t m = std::min<int64_t>(B, N - at);
      Tensor rows = Tensor::from(std::vector<int64_t>(order.begin() + at, order.begin() + at + m), {m}, DType::i64);
      opt.zero_grad();
      Tensor loss = ops::cross_entropy(ops::linear(ops::index_select(x, 0, rows), l.w, l.b), ops::index_select(labels, 0, rows));
      loss.backward();
      opt.step(scheduled_lr(sc, o.lr, step, total));
    }
  }
  l.w.set_requires_grad(false);
  l.b.set_requires_grad(false);
  return l;
}

}  // namespace

Metrics probe(const FeatureSet& train, const FeatureSet& test, const ProbeOptions& o, uint64_t seed) {
  AutocastGuard f32_probe(std::nullopt);  // the classifier and the similarities in f32, whatever encoded the features
  Metrics out;
  const int64_t classes = class_count(train, test);
  out["eval/probe_train_samples"] = double(train.labels.size());
  out["eval/probe_test_samples"] = double(test.labels.size());
  if (o.knn) out["eval/knn_top1"] = knn_top1(train, test, o.knn_k, o.knn_temperature, classes);
  if (!o.linear) return out;

  // Standardised with the training split's statistics.
  Tensor mean = ops::mean(train.features, {0}, true);
  Tensor c = ops::sub(train.features, mean);
  Tensor inv_std = ops::rsqrt(ops::add(ops::mean(ops::mul(c, c), {0}, true), 1e-6));
  Tensor xtr = ops::mul(c, inv_std).contiguous(), xte = ops::mul(ops::sub(test.features, mean), inv_std).contiguous();

  // The weight decay is chosen on a held-out tenth of the training features, then the classifier is
  // trained again on all of them.
  const int64_t N = xtr.size(0), held = std::max<int64_t>(1, N / 10);
  double best_wd = o.weight_decays.front(), best_acc = -1;
  if (o.weight_decays.size() > 1 && N >= 20) {
    Generator split_gen(seed ^ 0x70726F6265ull);  // "probe"
    const std::vector<int64_t> perm = ops::randperm(N, split_gen).to_vector<int64_t>();
    std::vector<int64_t> fit_rows(perm.begin() + held, perm.end()), val_rows(perm.begin(), perm.begin() + held);
    std::vector<int64_t> fit_y, val_y;
    for (int64_t r : fit_rows) fit_y.push_back(train.labels[size_t(r)]);
    for (int64_t r : val_rows) val_y.push_back(train.labels[size_t(r)]);
    Tensor xfit = ops::index_select(xtr, 0, Tensor::from(fit_rows, {N - held}, DType::i64)).contiguous();
    Tensor xval = ops::index_select(xtr, 0, Tensor::from(val_rows, {held}, DType::i64)).contiguous();
    for (double wd : o.weight_decays) {
      LinearClassifier l = fit_linear(xfit, fit_y, classes, wd, o, seed);
      NoGradGuard ng;
      const double acc = accuracy(ops::linear(xval, l.w, l.b), val_y);
      if (acc > best_acc) { best_acc = acc; best_wd = wd; }
    }
    out["eval/linear_val_top1"] = best_acc;
  }
  LinearClassifier l = fit_linear(xtr, train.labels, classes, best_wd, o, seed);
  NoGradGuard ng;
  out["eval/linear_top1"] = accuracy(ops::linear(xte, l.w, l.b), test.labels);
  out["eval/linear_weight_decay"] = best_wd;
  return out;
}

// Features for the probe: the image tower's class token (or mean of its patch tokens) after each of
// its last `blocks` blocks (through the final LayerNorm, concatenated), or raw pixels.
FeatureFn vit_features(const ViT& v, const ProbeOptions& o) {
  if (o.features == "pixels")
    return [](const Tensor& images) { return images.reshape({images.size(0), images.numel() / images.size(0)}); };
  LOOM_CHECK(o.blocks <= v.depth(), "eval.probe.blocks: ", o.blocks, " is more than the tower's ", v.depth(), " blocks");
  const bool mean = o.pool == "mean";
  const size_t last = size_t(o.blocks);
  return [&v, mean, last](const Tensor& images) {
    std::vector<Tensor> outs = v.block_outputs(images.to(v.device())), feats;
    for (size_t i = outs.size() - last; i < outs.size(); ++i) {
      const Tensor& t = outs[i];
      feats.push_back(mean ? ops::mean(t.narrow(1, 1, t.size(1) - 1), {1}) : t.select(1, 0));
    }
    return feats.size() == 1 ? feats[0] : ops::cat(feats, 1);
  };
}

}  // namespace loom
