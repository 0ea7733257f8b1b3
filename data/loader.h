// The threaded loader: worker threads decode and transform whole batches into a bounded prefetch
// queue; batches come out in order whatever the worker count.
//
// Determinism: epoch e's order is a Fisher-Yates permutation drawn from Philox keyed by (seed, e),
// with integer arithmetic only, so it is the same on any machine. Example i's augmentation seed in
// epoch e derives from (seed, e, i). A Loader started at LoaderPosition{e, b} yields exactly the
// batches a fresh loader yields from that point on, which is how training resumes bitwise.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>
#include "core/tensor.h"
#include "data/audio.h"
#include "data/fbank.h"
#include "data/manifest.h"
#include "data/text_tokenizer.h"
#include "data/transforms.h"

namespace loom::data {

// How audio examples become the batch's "audio": decoded (any channel count mixed to mono), resampled
// to sample_rate, fit to `duration` seconds (longer clips cropped — at random when random_crop, else
// centred; shorter ones padded per `pad`), then either kept as the waveform (features "waveform": f32
// [B, samples]) or turned into a Kaldi log-mel filterbank normalised as (x - mean) / std (features
// "fbank": f32 [B, 1, mel_bins, frames], frequency on the height and time on the width, as an image
// for a patch embedding) with SpecAugment's masks (set to 0, the normalised mean) when spec_augment
// is active. `frames` cuts or pads the fbank's frames to a model's input length. All of it runs in the loader's workers.
struct AudioConfig {
  double sample_rate = 16000;
  double duration = 10.0;
  AudioPad pad = AudioPad::repeatpad;
  bool random_crop = false;
  std::string features = "fbank";  // fbank | waveform
  FbankOptions fbank;               // its sample_rate is this sample_rate
  int64_t frames = 0;               // fbank frames kept (AST's target_length): cut or padded with 0; 0: all
  double mean = 0, std = 1;
  SpecAugment spec_augment;
  int64_t samples() const;          // round(duration * sample_rate)
  void validate() const;            // throws loom::Error naming the setting
};

struct LoaderConfig {
  int64_t batch_size = 128;
  int workers = 2;    // threads that decode + transform; 0: build each batch inside next()
  int prefetch = 4;   // batches built ahead of the consumer, at most
  bool shuffle = true;
  // With shuffle: each epoch draws N rows with replacement, row i with probability weight[i] / sum
  // (a class-balanced sampler, AudioMAE's weighted sampler), instead of a permutation. Null: none.
  std::shared_ptr<const std::vector<double>> sample_weights;
  bool drop_last = true;
  bool repeat = true;  // endless over epochs; false: next() returns nullopt after one pass
  uint64_t seed = 0;
  // Data parallelism: every global batch (batch_size rows) is cut into `shards` contiguous parts and
  // this loader builds part `shard`, so the parts of all ranks together are the one-process batch,
  // augmentation included (an example's seed depends on the example, not on who loads it).
  int64_t shard = 0, shards = 1;
  // skip: a corrupt/missing image is dropped from its batch (the batch gets smaller), counted, and
  // logged once to stderr with its path; fail: next() throws loom::Error naming the path.
  std::string on_error = "skip";
  // Whether the batches hold the manifest's images and audio (false: rows' files of that kind are
  // not read, for a task that does not use them).
  bool read_images = true, read_audio = true;
  ImageTransform transform;
  int64_t channels = 1;
  int64_t context = 16;
  AudioConfig audio;
};

// A batch is named tensors that tasks ask for by key: "image" f32 [B, C, H, W] (when the manifest has
// images), "audio" (when it has audio; see AudioConfig), "text" i64 [B, context] token ids (with a
// tokenizer; every row holds an end-of-text id and ids below the vocabulary size, checked here on the
// host), "label" i64 [B] (-1: none), and "labels" i64 [B, L] (each row's class ids padded with -1,
// when some row of the manifest has "labels").
struct Batch {
  std::map<std::string, Tensor> tensors;
  std::vector<int64_t> indices;     // manifest rows
  std::vector<std::string> texts;
  // Where these rows sit in the global batch of a data-parallel run (shards): the first row's
  // position and the global batch's nominal size. One process: 0 and size(). A task drawing random
  // numbers per example draws them for the whole global batch and keeps its rows, so any world size
  // draws the same numbers for the same example.
  int64_t global_offset = 0, global_size = 0;
  std::string source;  // the data section it came from (set by the trainer; a task of several sources reads it)
  int64_t size() const { return int64_t(indices.size()); }
  bool has(const std::string& key) const { return tensors.count(key) > 0; }
  // The tensor under `key`; throws loom::Error naming the key and the keys the batch holds.
  const Tensor& operator[](const std::string& key) const;
  std::string keys() const;  // "image, label, text"
};

// Token ids [B, context] checked on the host before they reach any op: every id in [0, vocab_size),
// an end-of-text id in every row. Throws loom::Error naming `source`.
void check_token_ids(const Tensor& tokens, int64_t vocab_size, int64_t eot_id, const std::string& source);

struct LoaderPosition {  // the next batch next() will return
  int64_t epoch = 0, batch = 0;
};

class Loader {
 public:
  // The tokenizer (may be null) must outlive the loader. Throws loom::Error for a bad config or a
  // manifest too small for one batch.
  Loader(std::shared_ptr<const Manifest> manifest, const TextTokenizer* tokenizer, LoaderConfig config,
         LoaderPosition start = {});
  ~Loader();  // joins the workers
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  std::optional<Batch> next();
  LoaderPosition position() const;
  int64_t skipped() const;
  int64_t batches_per_epoch() const { return batches_per_epoch_; }

  // The manifest rows of epoch `epoch`, in the order the loader visits them (exposed for tests).
  std::vector<int64_t> epoch_order(int64_t epoch) const;

 private:
  struct Skip { int64_t row; std::string path, message; };  // message names the path
  struct Result {
    std::optional<Batch> batch;
    std::exception_ptr error;
    std::vector<Skip> skips;
  };
  Result build(int64_t seq) const;
  Tensor load_audio(const Example& ex, uint64_t seed) const;  // f32 [1, bins, frames] or [samples]
  int64_t audio_frames() const;                               // fbank frames per clip
  std::shared_ptr<const std::vector<int64_t>> cached_order(int64_t epoch) const;
  void worker_loop();

  std::shared_ptr<const Manifest> manifest_;
  const TextTokenizer* tokenizer_;
  LoaderConfig config_;
  int64_t start_ = 0;              // global batch index of the first batch
  int64_t batches_per_epoch_ = 0;
  int64_t total_ = 0;              // batches this loader will yield (INT64_MAX when repeating)
  bool has_images_ = false, has_audio_ = false, has_multi_labels_ = false;
  std::shared_ptr<const KaldiFbank> fbank_;  // when the manifest has audio and features are fbank

  mutable std::mutex mu_;
  std::condition_variable work_cv_, ready_cv_;
  int64_t claimed_ = 0, consumed_ = 0;   // sequence numbers (0 = the first batch of this loader)
  std::map<int64_t, Result> ready_;
  bool stop_ = false;
  int64_t skipped_ = 0;
  std::set<std::string> logged_;
  std::vector<std::thread> workers_;
  mutable std::mutex order_mu_;
  mutable std::map<int64_t, std::shared_ptr<const std::vector<int64_t>>> orders_;  // recent epochs
};

}  // namespace loom::data
