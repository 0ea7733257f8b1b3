#include "trainers/data_stats.h"
#include <cmath>
#include "trainers/run.h"

namespace loom {

std::vector<InputStats> input_stats(const Recipe& r, const std::string& data_name, int64_t max_examples) {
  const DataSpec* d = r.find_data(data_name);
  LOOM_CHECK(d, "loom stats: the recipe has no data.", data_name);
  LOOM_CHECK(d->present, "loom stats: data.", data_name, ".manifest ", d->manifest, " is not on this machine");
  const std::vector<std::string> have = d->provides();
  std::vector<std::string> keys;
  for (const char* k : {"audio", "image"})
    if (std::find(have.begin(), have.end(), k) != have.end()) keys.push_back(k);
  LOOM_CHECK(!keys.empty(), "loom stats: data.", data_name, " (", d->manifest, ") has neither images nor audio");

  // The input shapes come from the model (image size, mel bins): a task of a stage on this data fixes
  // them, as in training.
  size_t stage = 0;
  for (size_t k = 0; k < r.stages.size(); ++k)
    if (r.stages[k].data == data_name) { stage = k; break; }
  Run run = Run::build(r, nullptr);
  data::LoaderConfig lc = loader_config(*d, r.seed, false);
  run.tasks[stage]->configure(lc);
  lc.audio.mean = 0;
  lc.audio.std = 1;
  lc.audio.frames = 0;  // every frame the clip makes; none padded in
  lc.transform.mean = std::vector<double>(size_t(lc.channels), 0.0);
  lc.transform.std = std::vector<double>(size_t(lc.channels), 1.0);
  lc.batch_size = std::min<int64_t>(64, int64_t(d->rows->rows.size()));
  lc.drop_last = false;
  data::Loader loader(d->rows, nullptr, lc);

  std::vector<InputStats> out;
  std::vector<std::vector<double>> sum(keys.size()), sq(keys.size());
  for (const std::string& k : keys) out.push_back({k, {}, {}, 0, 0, 0});
  int64_t seen = 0;
  while (auto b = loader.next()) {
    for (size_t i = 0; i < keys.size(); ++i) {
      if (!b->has(keys[i])) continue;
      const Tensor x = (*b)[keys[i]].contiguous();  // image [B, C, H, W]; audio [B, 1, bins, frames] or [B, samples]
      const int64_t n = x.size(0), c = keys[i] == "image" ? x.size(1) : 1, per = x.numel() / (n * c);
      sum[i].resize(size_t(c), 0.0);
      sq[i].resize(size_t(c), 0.0);
      const float* p = x.data_ptr<float>();
      for (int64_t e = 0; e < n; ++e)
        for (int64_t ch = 0; ch < c; ++ch) {
          double s = 0, s2 = 0;
          for (int64_t j = 0; j < per; ++j) {
            const double v = p[(e * c + ch) * per + j];
            s += v;
            s2 += v * v;
          }
          sum[i][size_t(ch)] += s;
          sq[i][size_t(ch)] += s2;
        }
      out[i].examples += n;
      out[i].values += n * per * c;
    }
    seen += b->size();
    if (max_examples > 0 && seen >= max_examples) break;
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    InputStats& s = out[i];
    s.skipped = loader.skipped();
    LOOM_CHECK(s.examples > 0, "loom stats: no readable ", s.key, " in data.", data_name, " (", d->manifest, ")");
    const double per_channel = double(s.values) / double(sum[i].size());
    for (size_t ch = 0; ch < sum[i].size(); ++ch) {
      const double m = sum[i][ch] / per_channel;
      s.mean.push_back(m);
      s.std.push_back(std::sqrt(std::max(0.0, sq[i][ch] / per_channel - m * m)));
    }
  }
  return out;
}

}  // namespace loom
