#include "data/loader.h"
#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <numeric>
#include <omp.h>
#include "core/error.h"
#include "data/image.h"
#include "data/random.h"

namespace loom::data {

namespace {
constexpr uint64_t kOrderSalt = 0x6F72646572ull;  // "order"
constexpr uint64_t kWeightedSalt = 0x776569676874ull;  // "weight"
constexpr uint64_t kAugSalt = 0x617567ull;        // "aug"
constexpr uint64_t kCropSalt = 0x63726f70ull;     // "crop": an audio clip's crop position
constexpr uint64_t kMaskSalt = 0x6d61736bull;     // "mask": its SpecAugment masks
}  // namespace

int64_t AudioConfig::samples() const { return int64_t(std::llround(duration * sample_rate)); }

void AudioConfig::validate() const {
  LOOM_CHECK(sample_rate >= 1000 && sample_rate <= 768000, "audio.sample_rate must be in [1000, 768000] Hz, got ",
             sample_rate);
  LOOM_CHECK(duration > 0 && duration <= 3600, "audio.duration must be in (0, 3600] seconds, got ", duration);
  LOOM_CHECK(features == "fbank" || features == "waveform", "audio.features must be fbank or waveform, got \"",
             features, "\"");
  LOOM_CHECK(std::isfinite(mean) && std > 0 && std::isfinite(std), "audio.std must be > 0 and mean finite, got mean ",
             mean, ", std ", std);
  LOOM_CHECK(spec_augment.freq_masks >= 0 && spec_augment.time_masks >= 0 && spec_augment.max_freq_width >= 0 &&
                 spec_augment.max_time_width >= 0,
             "audio: SpecAugment mask counts and widths must be >= 0");
  LOOM_CHECK(frames >= 0, "audio.frames must be >= 0, got ", frames);
  if (features == "fbank") {
    FbankOptions f = fbank;
    f.sample_rate = sample_rate;
    f.validate();
    const int64_t window = int64_t(f.sample_rate * f.frame_length_ms * 0.001);
    LOOM_CHECK(samples() >= window, "audio.duration ", duration, " s is shorter than one fbank frame (", f.frame_length_ms,
               " ms)");
  }
}

const Tensor& Batch::operator[](const std::string& key) const {
  auto it = tensors.find(key);
  if (it == tensors.end()) throw Error(str_cat("batch has no '", key, "' (it holds: ", keys(), ")"));
  return it->second;
}

std::string Batch::keys() const {
  std::string out;
  for (const auto& [k, t] : tensors) out += (out.empty() ? "" : ", ") + k;
  return out.empty() ? "nothing" : out;
}

void check_token_ids(const Tensor& tokens, int64_t vocab_size, int64_t eot_id, const std::string& source) {
  LOOM_CHECK(tokens.dim() == 2 && tokens.dtype() == DType::i64 && tokens.device().is_cpu(), source,
             ": token ids must be i64 [B, context] on the CPU, got ", tokens.describe());
  const Tensor t = tokens.contiguous();
  const int64_t* p = t.data_ptr<int64_t>();
  const int64_t rows = t.size(0), cols = t.size(1);
  for (int64_t r = 0; r < rows; ++r) {
    bool eot = false;
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t id = p[r * cols + j];
      LOOM_CHECK(id >= 0 && id < vocab_size, source, ": token id ", id, " in row ", r, " is outside the vocabulary [0, ",
                 vocab_size, ")");
      eot = eot || id == eot_id;
    }
    LOOM_CHECK(eot, source, ": row ", r, " of the token ids has no end-of-text id ", eot_id);
  }
}

Loader::Loader(std::shared_ptr<const Manifest> manifest, const TextTokenizer* tokenizer, LoaderConfig config,
               LoaderPosition start)
    : manifest_(std::move(manifest)), tokenizer_(tokenizer), config_(std::move(config)) {
  LOOM_CHECK(manifest_, "Loader: no manifest");
  const std::string& mp = manifest_->path;
  const int64_t n = int64_t(manifest_->rows.size());
  LOOM_CHECK(config_.batch_size > 0, "Loader: batch_size must be > 0, got ", config_.batch_size);
  LOOM_CHECK(config_.workers >= 0, "Loader: workers must be >= 0, got ", config_.workers);
  LOOM_CHECK(config_.prefetch >= 1, "Loader: prefetch must be >= 1, got ", config_.prefetch);
  LOOM_CHECK(config_.on_error == "skip" || config_.on_error == "fail",
             "Loader: on_error must be \"skip\" or \"fail\", got \"", config_.on_error, "\"");
  LOOM_CHECK(config_.shards >= 1 && config_.shard >= 0 && config_.shard < config_.shards, "Loader: shard ", config_.shard,
             " of ", config_.shards, " does not exist");
  LOOM_CHECK(config_.channels >= 1 && config_.channels <= 4, "Loader: channels must be 1..4, got ", config_.channels);
  LOOM_CHECK(!tokenizer_ || config_.context >= 2, "Loader: context must be >= 2 (sot and eot), got ", config_.context);
  LOOM_CHECK(n > 0, mp, ": manifest has no rows");
  if (config_.sample_weights) {
    const std::vector<double>& w = *config_.sample_weights;
    LOOM_CHECK(int64_t(w.size()) == n, "Loader: ", w.size(), " sample weights for the ", n, " rows of ", mp);
    double total = 0;
    for (double x : w) {
      LOOM_CHECK(x >= 0 && std::isfinite(x), "Loader: a sample weight of ", mp, " is ", x);
      total += x;
    }
    LOOM_CHECK(total > 0, "Loader: every sample weight of ", mp, " is 0");
  }
  batches_per_epoch_ = config_.drop_last ? n / config_.batch_size : (n + config_.batch_size - 1) / config_.batch_size;
  LOOM_CHECK(batches_per_epoch_ > 0, mp, ": ", n, " rows make no full batch of ", config_.batch_size,
             " (drop_last); lower batch_size or set drop_last false");
  LOOM_CHECK(start.epoch >= 0 && start.batch >= 0 && start.batch < batches_per_epoch_, "Loader: start position (epoch ",
             start.epoch, ", batch ", start.batch, ") outside [0, ", batches_per_epoch_, ") batches per epoch");
  start_ = start.epoch * batches_per_epoch_ + start.batch;
  total_ = config_.repeat ? std::numeric_limits<int64_t>::max() : batches_per_epoch_ - start.batch;
  for (const Example& ex : manifest_->rows) {
    has_images_ = has_images_ || (config_.read_images && !ex.image.empty());
    has_audio_ = has_audio_ || (config_.read_audio && !ex.audio.empty());
    has_multi_labels_ = has_multi_labels_ || !ex.labels.empty();
  }
  if (has_images_) config_.transform.validate(config_.channels);
  if (has_audio_) {
    config_.audio.validate();
    config_.audio.fbank.sample_rate = config_.audio.sample_rate;
    if (config_.audio.features == "fbank") fbank_ = std::make_shared<const KaldiFbank>(config_.audio.fbank);
  }
  for (int i = 0; i < config_.workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

std::vector<int64_t> Loader::epoch_order(int64_t epoch) const {
  const int64_t n = int64_t(manifest_->rows.size());
  std::vector<int64_t> order(size_t(n), 0);
  std::iota(order.begin(), order.end(), int64_t(0));
  if (!config_.shuffle) return order;
  if (config_.sample_weights) {  // n draws by inverting the cumulative weights at Philox uniforms
    const std::vector<double>& w = *config_.sample_weights;
    std::vector<double> cum(w.size());
    std::partial_sum(w.begin(), w.end(), cum.begin());
    detail::Stream rng(detail::combine(detail::combine(config_.seed, kWeightedSalt), uint64_t(epoch)));
    for (int64_t& o : order) {
      const double u = rng.uniform() * cum.back();
      o = std::min<int64_t>(n - 1, std::upper_bound(cum.begin(), cum.end(), u) - cum.begin());
    }
    return order;
  }
  // Fisher-Yates with Philox integers keyed by (seed, epoch): integer-only, the same on any machine.
  detail::Stream rng(detail::combine(detail::combine(config_.seed, kOrderSalt), uint64_t(epoch)));
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[size_t(i)], order[rng.below(uint64_t(i + 1))]);
  return order;
}

std::shared_ptr<const std::vector<int64_t>> Loader::cached_order(int64_t epoch) const {
  {
    std::lock_guard<std::mutex> lock(order_mu_);
    if (auto it = orders_.find(epoch); it != orders_.end()) return it->second;
  }
  auto order = std::make_shared<const std::vector<int64_t>>(epoch_order(epoch));
  std::lock_guard<std::mutex> lock(order_mu_);
  orders_.emplace(epoch, order);
  while (orders_.size() > 4) orders_.erase(orders_.begin());  // keep the latest few epochs
  return order;
}

Loader::Result Loader::build(int64_t seq) const {
  Result res;
  try {
    const int64_t g = start_ + seq, epoch = g / batches_per_epoch_, b = g % batches_per_epoch_;
    const std::shared_ptr<const std::vector<int64_t>> order_ptr = cached_order(epoch);
    const std::vector<int64_t>& order = *order_ptr;
    const int64_t n = int64_t(order.size());
    const int64_t whole_first = b * config_.batch_size, whole = std::min(n, whole_first + config_.batch_size) - whole_first;
    const int64_t first = whole_first + whole * config_.shard / config_.shards;
    const int64_t last = whole_first + whole * (config_.shard + 1) / config_.shards;
    const uint64_t aug_key = detail::combine(detail::combine(config_.seed, kAugSalt), uint64_t(epoch));

    Batch batch;
    batch.global_offset = first - whole_first;
    batch.global_size = whole;
    std::vector<Tensor> images, clips;
    std::vector<int64_t> labels;
    std::vector<const std::vector<int64_t>*> multi;  // each row's "labels"
    for (int64_t k = first; k < last; ++k) {
      const int64_t idx = order[size_t(k)];
      const Example& ex = manifest_->rows[size_t(idx)];
      const uint64_t seed = detail::combine(aug_key, uint64_t(idx));
      Tensor img, clip;
      std::string source = str_cat(manifest_->path, " row ", idx);  // what a skip names
      try {
        if (has_images_) {
          LOOM_CHECK(!ex.image.empty(), manifest_->path, ": row ", idx, " has no image");
          source = ex.image;
          Tensor decoded;
          if (ex.image_blob.present()) {
            const std::vector<unsigned char> bytes = read_blob(ex.image_blob, ex.image);
            decoded = decode_image_bytes(bytes.data(), bytes.size(), config_.channels, ex.image);
          } else {
            decoded = decode_image(ex.image, config_.channels);
          }
          img = config_.transform.apply(decoded, seed);
          if (!images.empty() && img.shape() != images.front().shape())
            throw Error(str_cat(ex.image, ": image is ", img.describe(), " after its transform, but the batch's first is ",
                                images.front().describe(), "; set transform.size"));
        }
        if (has_audio_) {
          LOOM_CHECK(!ex.audio.empty(), manifest_->path, ": row ", idx, " has no audio");
          source = ex.audio;
          clip = load_audio(ex, seed);
        }
      } catch (const Error& e) {
        if (config_.on_error == "fail") throw;
        res.skips.push_back({idx, source, e.what()});
        continue;
      }
      if (has_images_) images.push_back(std::move(img));
      if (has_audio_) clips.push_back(std::move(clip));
      batch.indices.push_back(idx);
      batch.texts.push_back(ex.text);
      labels.push_back(ex.label);
      multi.push_back(&ex.labels);
    }
    const int64_t B = int64_t(batch.indices.size());
    if (has_images_) {
      Shape s = images.empty() ? Shape{config_.channels, config_.transform.size, config_.transform.size}
                               : images.front().shape();
      Tensor stacked = Tensor::empty({B, s[0], s[1], s[2]});
      float* dst = stacked.data_ptr<float>();
      const int64_t per = s.numel();
      for (int64_t i = 0; i < B; ++i) std::memcpy(dst + i * per, images[size_t(i)].data_ptr<float>(), size_t(per) * sizeof(float));
      batch.tensors["image"] = stacked;
    }
    if (has_audio_) {
      Shape s{config_.audio.samples()};
      if (fbank_) s = Shape{1, config_.audio.fbank.num_mel_bins, audio_frames()};
      if (!clips.empty()) s = clips.front().shape();
      Shape full{B};
      for (int64_t d : s) full.push_back(d);
      Tensor stacked = Tensor::empty(full);
      const int64_t per = s.numel();
      for (int64_t i = 0; i < B; ++i)
        std::memcpy(stacked.data_ptr<float>() + i * per, clips[size_t(i)].data_ptr<float>(), size_t(per) * sizeof(float));
      batch.tensors["audio"] = stacked;
    }
    batch.tensors["label"] = Tensor::from(labels, {B}, DType::i64);
    if (has_multi_labels_) {  // [B, L]: each row's class ids, padded with -1 to the batch's longest
      size_t L = 1;
      for (const auto* l : multi) L = std::max(L, l->size());
      std::vector<int64_t> padded(size_t(B) * L, -1);
      for (size_t i = 0; i < multi.size(); ++i) std::copy(multi[i]->begin(), multi[i]->end(), padded.begin() + long(i * L));
      batch.tensors["labels"] = Tensor::from(padded, {B, int64_t(L)}, DType::i64);
    }
    if (tokenizer_) {
      Tensor tokens = tokenizer_->encode_batch(batch.texts, config_.context);
      check_token_ids(tokens, tokenizer_->vocab_size(), tokenizer_->end_token(), manifest_->path);
      batch.tensors["text"] = tokens;
    }
    res.batch = std::move(batch);
  } catch (...) {
    res.error = std::current_exception();
  }
  return res;
}

int64_t Loader::audio_frames() const {
  return config_.audio.frames > 0 ? config_.audio.frames : fbank_->num_frames(config_.audio.samples());
}

Tensor Loader::load_audio(const Example& ex, uint64_t seed) const {
  const AudioConfig& a = config_.audio;
  Waveform w;
  if (ex.audio_blob.present()) {
    const std::vector<unsigned char> bytes = read_blob(ex.audio_blob, ex.audio);
    w = decode_audio_bytes(bytes.data(), bytes.size(), ex.audio);
  } else {
    w = decode_audio(ex.audio);
  }
  std::vector<float> x = resample(w.samples, w.sample_rate, a.sample_rate, ex.audio);
  x = fit_duration(x, a.samples(), a.pad, a.random_crop, detail::combine(seed, kCropSalt));
  if (!fbank_) return Tensor::from(x, {int64_t(x.size())});
  const Tensor tf = fbank_->compute(x.data(), int64_t(x.size()));  // [computed frames, bins]
  const int64_t frames = audio_frames(), bins = tf.size(1), have = std::min(frames, tf.size(0));
  Tensor spec = Tensor::zeros({1, bins, frames});  // frames beyond the clip's stay 0 (the normalised mean)
  const float* src = tf.data_ptr<float>();
  float* dst = spec.data_ptr<float>();
  const float mean = float(a.mean), inv_std = float(1.0 / a.std);
  for (int64_t t = 0; t < have; ++t)
    for (int64_t b = 0; b < bins; ++b) dst[b * frames + t] = (src[t * bins + b] - mean) * inv_std;
  if (a.spec_augment.active()) a.spec_augment.apply(dst, bins, frames, 0.0f, detail::combine(seed, kMaskSalt));
  return spec;
}

void Loader::worker_loop() {
  // A worker is one of the loader's threads: the kernels it runs (decoding, collation copies) stay
  // on it rather than each starting an OpenMP team that competes with the training step's.
  omp_set_num_threads(1);
  for (;;) {
    int64_t seq;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || (claimed_ < total_ && claimed_ < consumed_ + config_.prefetch); });
      if (stop_) return;
      seq = claimed_++;
    }
    Result r = build(seq);
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready_.emplace(seq, std::move(r));
    }
    ready_cv_.notify_all();
  }
}

std::optional<Batch> Loader::next() {
  Result r;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (consumed_ >= total_) return std::nullopt;
    const int64_t seq = consumed_;
    if (workers_.empty()) {
      lock.unlock();
      r = build(seq);
      lock.lock();
    } else {
      ready_cv_.wait(lock, [&] { return ready_.count(seq) > 0; });
      auto it = ready_.find(seq);
      r = std::move(it->second);
      ready_.erase(it);
    }
    ++consumed_;
    skipped_ += int64_t(r.skips.size());
    for (const Skip& s : r.skips)
      if (logged_.insert(s.path).second) 
        std::cerr << "loom: " << manifest_->path << ": skipping row " << s.row << " (" << s.message << ")\n";
  }
  work_cv_.notify_all();
  if (r.error) std::rethrow_exception(r.error);
  return std::move(r.batch);
}

LoaderPosition Loader::position() const {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t g = start_ + consumed_;
  return {g / batches_per_epoch_, g % batches_per_epoch_};
}

int64_t Loader::skipped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return skipped_;
}

}  // namespace loom::data
