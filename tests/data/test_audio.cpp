// Audio decoding (every container libsndfile writes here, mix-down, bad files), resampling (a sine
// keeps its frequency, content above the new Nyquist is removed) and fitting clips to a duration.
#include <gtest/gtest.h>
#include <cmath>
#include <complex>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numbers>
#include <set>
#include <string>
#include <vector>
#include "data/audio.h"
#include "data/loader.h"
#include "helpers.h"

namespace loom::data {
namespace {

using testing::error_of;
using testing::TempDir;
using testing::write_file;

std::vector<float> sine(double freq, double rate, int64_t n, double amp = 0.5) {
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[size_t(i)] = float(amp * std::sin(2 * std::numbers::pi * freq * double(i) / rate));
  return x;
}

double rms(const std::vector<float>& x, size_t from = 0, size_t to = 0) {
  if (to == 0) to = x.size();
  double s = 0;
  for (size_t i = from; i < to; ++i) s += double(x[i]) * x[i];
  return std::sqrt(s / double(to - from));
}

// The frequency (Hz) of the largest DFT magnitude, searched at 1 Hz steps over [lo, hi], on a
// Hann-windowed stretch: a direct, library-free estimate for a single tone.
double peak_frequency(const std::vector<float>& x, double rate, double lo, double hi) {
  const size_t n = x.size();
  double best = 0, best_f = 0;
  for (double f = lo; f <= hi; f += 1.0) {
    std::complex<double> acc = 0;
    for (size_t i = 0; i < n; ++i) {
      const double w = 0.5 - 0.5 * std::cos(2 * std::numbers::pi * double(i) / double(n - 1));
      acc += w * double(x[i]) * std::polar(1.0, -2 * std::numbers::pi * f * double(i) / rate);
    }
    if (std::abs(acc) > best) best = std::abs(acc), best_f = f;
  }
  return best_f;
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// A canonical 44-byte WAV header for 16-bit PCM with the given fields (data follows).
std::string wav_header(uint32_t rate, uint16_t channels, uint32_t data_bytes) {
  std::string h;
  auto u32 = [&](uint32_t v) { for (int i = 0; i < 4; ++i) h.push_back(char((v >> (8 * i)) & 0xff)); };
  auto u16 = [&](uint16_t v) { h.push_back(char(v & 0xff)); h.push_back(char(v >> 8)); };
  h += "RIFF"; u32(36 + data_bytes); h += "WAVE";
  h += "fmt "; u32(16); u16(1); u16(channels); u32(rate); u32(rate * channels * 2); u16(uint16_t(channels * 2)); u16(16);
  h += "data"; u32(data_bytes);
  return h;
}

TEST(Audio, DecodesEveryContainerItWrites) {
  TempDir dir;
  const std::vector<float> x = sine(440, 16000, 8000);
  for (const char* ext : {".wav", ".flac", ".ogg", ".opus", ".aiff"}) {
    const std::string path = dir.file(std::string("clip") + ext);
    write_audio(path, x, 1, 16000);
    const Waveform w = decode_audio(path);
    EXPECT_EQ(w.sample_rate, 16000) << ext;
    EXPECT_EQ(w.channels, 1) << ext;
    // Lossy codecs add or drop a few frames of padding; lossless ones are exact to 16-bit steps.
    const bool lossy = std::string(ext) == ".ogg" || std::string(ext) == ".opus";
    if (!lossy) {
      ASSERT_EQ(w.samples.size(), x.size()) << ext;
      for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(w.samples[i], x[i], 1.0 / 32768 + 1e-6) << ext << " sample " << i;
    } else {
      EXPECT_NEAR(double(w.samples.size()), double(x.size()), 800) << ext;
      EXPECT_NEAR(rms(w.samples, 2000, 6000), rms(x, 2000, 6000), 0.05) << ext;
      EXPECT_EQ(peak_frequency(std::vector<float>(w.samples.begin() + 2000, w.samples.begin() + 6000), 16000, 400, 480), 440)
          << ext;
    }
  }
}

TEST(Audio, MixesChannelsDownToTheirMean) {
  TempDir dir;
  const int64_t n = 4000;
  std::vector<float> stereo(size_t(2 * n)), six(size_t(6 * n));
  for (int64_t i = 0; i < n; ++i) {
    stereo[size_t(2 * i)] = 0.5f;
    stereo[size_t(2 * i + 1)] = float(0.25 * std::sin(double(i) * 0.01));
    for (int c = 0; c < 6; ++c) six[size_t(6 * i + c)] = 0.1f * float(c);
  }
  write_audio(dir.file("stereo.flac"), stereo, 2, 44100);
  write_audio(dir.file("six.wav"), six, 6, 48000, /*float_wav=*/true);
  const Waveform s = decode_audio(dir.file("stereo.flac"));
  EXPECT_EQ(s.channels, 2);
  EXPECT_EQ(s.sample_rate, 44100);
  ASSERT_EQ(int64_t(s.samples.size()), n);
  for (int64_t i = 0; i < n; i += 97)
    EXPECT_NEAR(s.samples[size_t(i)], 0.5 * (0.5 + 0.25 * std::sin(double(i) * 0.01)), 2.0 / 32768);
  const Waveform m = decode_audio(dir.file("six.wav"));
  EXPECT_EQ(m.channels, 6);
  for (float v : m.samples) ASSERT_NEAR(v, 0.25, 1e-6);
}

TEST(Audio, BadFilesAreErrorsNamingThePath) {
  TempDir dir;
  const std::string missing = dir.file("missing.wav");
  EXPECT_NE(error_of([&] { decode_audio(missing); }).find(missing + ": no such audio file"), std::string::npos);

  write_file(dir.file("empty.wav"), "");
  EXPECT_NE(error_of([&] { decode_audio(dir.file("empty.wav")); }).find("empty.wav: empty audio file"), std::string::npos);

  write_file(dir.file("garbage.flac"), std::string(3000, '\x5a'));
  EXPECT_NE(error_of([&] { decode_audio(dir.file("garbage.flac")); }).find("garbage.flac: cannot decode audio"),
            std::string::npos);

  write_file(dir.file("text.wav"), "this is not a sound file, it is a sentence.\n");
  EXPECT_NE(error_of([&] { decode_audio(dir.file("text.wav")); }).find("text.wav: cannot decode audio"), std::string::npos);

  // A WAV with a valid header and no frames.
  write_file(dir.file("zero.wav"), wav_header(16000, 1, 0));
  EXPECT_NE(error_of([&] { decode_audio(dir.file("zero.wav")); }).find("zero.wav: audio file holds no samples"),
            std::string::npos);

  // Absurd sample rates in an otherwise valid WAV.
  const std::string pcm(2000, '\0');
  write_file(dir.file("rate1.wav"), wav_header(1, 1, 2000) + pcm);
  write_file(dir.file("rate10m.wav"), wav_header(10'000'000, 1, 2000) + pcm);
  for (const char* f : {"rate1.wav", "rate10m.wav"}) {
    const std::string e = error_of([&] { decode_audio(dir.file(f)); });
    EXPECT_TRUE(e.find(std::string(f) + ": audio sample rate") != std::string::npos &&
                e.find("outside [1000, 768000] Hz") != std::string::npos) << e;
  }

  // Truncated: the header promises 16000 frames, the file holds 3000; and a FLAC cut in half.
  write_file(dir.file("cut.wav"), wav_header(16000, 1, 32000) + std::string(6000, '\x01'));
  EXPECT_NE(error_of([&] { decode_audio(dir.file("cut.wav")); }).find("cut.wav: truncated audio"), std::string::npos);
  write_audio(dir.file("whole.flac"), sine(300, 16000, 32000), 1, 16000);
  const std::string flac = read_bytes(dir.file("whole.flac"));
  write_file(dir.file("cut.flac"), flac.substr(0, flac.size() / 2));
  const std::string e = error_of([&] { decode_audio(dir.file("cut.flac")); });
  EXPECT_TRUE(e.find("cut.flac: truncated audio") != std::string::npos || e.find("cut.flac: corrupt audio") != std::string::npos)
      << e;
}

TEST(Audio, NonFiniteSamplesAreErrors) {
  TempDir dir;
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::vector<float> x = sine(100, 16000, 1000);
    x[777] = bad;
    write_audio(dir.file("bad.wav"), x, 1, 16000, /*float_wav=*/true);
    const std::string e = error_of([&] { decode_audio(dir.file("bad.wav")); });
    EXPECT_NE(e.find("bad.wav: audio sample 777 (channel 0) is"), std::string::npos) << e;
    EXPECT_NE(e.find("every sample must be finite"), std::string::npos) << e;
  }
}

TEST(Audio, DecodesFromMemoryLikeFromAFile) {
  TempDir dir;
  write_audio(dir.file("a.flac"), sine(1000, 22050, 5000), 1, 22050);
  const std::string bytes = read_bytes(dir.file("a.flac"));
  const Waveform a = decode_audio(dir.file("a.flac")), b = decode_audio_bytes(bytes.data(), bytes.size(), "member");
  EXPECT_EQ(a.samples, b.samples);
  EXPECT_NE(error_of([&] { decode_audio_bytes(bytes.data(), 100, "shard.tar:x.flac"); }).find("shard.tar:x.flac: "),
            std::string::npos);
}

TEST(Resample, SineKeepsItsFrequency) {
  struct Case { double from, to, freq; };
  for (const Case c : {Case{44100, 16000, 1000}, Case{8000, 48000, 1234}, Case{48000, 22050, 5000}, Case{16000, 16000, 300}}) {
    const std::vector<float> x = sine(c.freq, c.from, int64_t(c.from));  // one second
    const std::vector<float> y = resample(x, c.from, c.to, "sine");
    ASSERT_EQ(int64_t(y.size()), int64_t(c.to)) << c.from << " -> " << c.to;
    const std::vector<float> mid(y.begin() + y.size() / 4, y.begin() + y.size() / 4 + 2000);
    EXPECT_EQ(peak_frequency(mid, c.to, c.freq - 20, c.freq + 20), c.freq) << c.from << " -> " << c.to;
    EXPECT_NEAR(rms(y, y.size() / 4, 3 * y.size() / 4), 0.5 / std::sqrt(2.0), 0.005) << c.from << " -> " << c.to;
  }
}

TEST(Resample, RemovesContentAboveTheNewNyquist) {
  // 7 kHz and 11 kHz tones at 48 kHz, taken to 16 kHz (Nyquist 8 kHz): the first passes, the second
  // must vanish instead of folding to 5 kHz.
  std::vector<float> low = sine(7000, 48000, 48000, 0.4), high = sine(11000, 48000, 48000, 0.4);
  const std::vector<float> y_low = resample(low, 48000, 16000, "low"), y_high = resample(high, 48000, 16000, "high");
  EXPECT_NEAR(rms(y_low, 4000, 12000), 0.4 / std::sqrt(2.0), 0.01);
  EXPECT_LT(rms(y_high, 4000, 12000), 1e-4);  // > 70 dB down
}

TEST(Resample, RejectsAbsurdRates) {
  const std::vector<float> x(100, 0.1f);
  EXPECT_NE(error_of([&] { resample(x, 16000, 1e9, "clip.wav"); }).find("clip.wav: cannot resample from 16000 Hz"),
            std::string::npos);
  EXPECT_NE(error_of([&] { resample(x, 0, 16000, "clip.wav"); }).find("clip.wav: cannot resample"), std::string::npos);
}

TEST(FitDuration, CropsCentredOrAtARandomPosition) {
  std::vector<float> x(100);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i);
  const std::vector<float> c = fit_duration(x, 40, AudioPad::zero, false, 1);
  EXPECT_EQ(c.front(), 30);
  EXPECT_EQ(c.back(), 69);
  std::set<float> starts;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const std::vector<float> r = fit_duration(x, 40, AudioPad::zero, true, seed);
    ASSERT_EQ(r.size(), 40u);
    ASSERT_GE(r.front(), 0);
    ASSERT_LE(r.front(), 60);
    for (size_t i = 1; i < r.size(); ++i) ASSERT_EQ(r[i], r[0] + float(i));  // contiguous
    starts.insert(r.front());
    EXPECT_EQ(r, fit_duration(x, 40, AudioPad::zero, true, seed));  // a function of the seed
  }
  EXPECT_GT(starts.size(), 40u);  // 61 possible starts, 200 draws
}

TEST(FitDuration, PadsShortClipsPerPolicy) {
  const std::vector<float> x{1, 2, 3};
  EXPECT_EQ(fit_duration(x, 8, AudioPad::zero, true, 0), (std::vector<float>{1, 2, 3, 0, 0, 0, 0, 0}));
  EXPECT_EQ(fit_duration(x, 8, AudioPad::repeat, true, 0), (std::vector<float>{1, 2, 3, 1, 2, 3, 1, 2}));
  EXPECT_EQ(fit_duration(x, 8, AudioPad::repeatpad, true, 0), (std::vector<float>{1, 2, 3, 1, 2, 3, 0, 0}));
  EXPECT_EQ(fit_duration({}, 4, AudioPad::repeat, false, 0), (std::vector<float>{0, 0, 0, 0}));
  EXPECT_EQ(fit_duration(x, 3, AudioPad::zero, true, 5), x);
  EXPECT_EQ(parse_audio_pad("repeatpad"), AudioPad::repeatpad);
  EXPECT_NE(error_of([] { parse_audio_pad("loop"); }).find("unknown audio pad policy \"loop\""), std::string::npos);
}

}  // namespace
}  // namespace loom::data

// ---- the loader's "audio" key ----

namespace loom::data {
namespace {

// Clips in mixed containers, rates and channel counts; row i is a sine of 200 + 100 i Hz lasting
// 0.2 + 0.1 i seconds, so some are shorter and some longer than the loader's 0.5 s.
struct AudioSet {
  TempDir dir;
  std::shared_ptr<Manifest> manifest;
  explicit AudioSet(int n, const std::string& broken = "") {
    const char* exts[] = {".wav", ".flac", ".ogg", ".aiff"};
    const int rates[] = {8000, 16000, 22050, 44100, 48000};
    std::string jsonl;
    std::filesystem::create_directories(dir.file("clips"));
    for (int i = 0; i < n; ++i) {
      const int rate = rates[i % 5], channels = 1 + i % 2;
      const std::string rel = "clips/" + std::to_string(i) + exts[i % 4];
      const std::vector<float> mono = sine(200 + 100 * i, rate, int64_t((0.2 + 0.1 * i) * rate), 0.3);
      std::vector<float> inter;
      for (float v : mono) for (int c = 0; c < channels; ++c) inter.push_back(v);
      write_audio(dir.file(rel), inter, channels, rate);
      if (rel == broken) write_file(dir.file(rel), "not audio at all");
      jsonl += R"({"audio": ")" + rel + R"(", "text": "clip )" + std::to_string(i) + R"(", "label": )" +
               std::to_string(i % 3) + "}\n";
    }
    write_file(dir.file("m.jsonl"), jsonl);
    manifest = std::make_shared<Manifest>(Manifest::load(dir.file("m.jsonl")));
  }
};

LoaderConfig audio_config(int64_t batch, bool train) {
  LoaderConfig c;
  c.batch_size = batch;
  c.workers = 2;
  c.shuffle = false;
  c.repeat = false;
  c.drop_last = false;
  c.audio.sample_rate = 16000;
  c.audio.duration = 0.5;
  c.audio.fbank.num_mel_bins = 64;
  c.audio.random_crop = train;
  if (train) c.audio.spec_augment = SpecAugment{1, 8, 1, 10};
  return c;
}

TEST(AudioLoader, FbankBatchesFromMixedFiles) {
  AudioSet set(8);
  Loader loader(set.manifest, nullptr, audio_config(4, false));
  int64_t seen = 0;
  while (auto b = loader.next()) {
    EXPECT_EQ(b->keys(), "audio, label");
    const Tensor& a = (*b)["audio"];
    ASSERT_EQ(a.shape(), (Shape{4, 1, 64, 48}));  // 0.5 s at 16 kHz: 8000 samples, 48 frames
    const std::vector<float> v = a.to_vector<float>();
    for (float x : v) ASSERT_TRUE(std::isfinite(x));
    // Every clip is a tone, so each row's loudest bin is well above the log floor.
    for (int64_t i = 0; i < 4; ++i) {
      float peak = -100;
      for (int64_t j = 0; j < 64 * 48; ++j) peak = std::max(peak, v[size_t(i * 64 * 48 + j)]);
      EXPECT_GT(peak, 0.0f) << "clip " << b->indices[size_t(i)];
    }
    seen += b->size();
  }
  EXPECT_EQ(seen, 8);
  EXPECT_EQ(loader.skipped(), 0);
}

TEST(AudioLoader, FramesAreCutOrPaddedToTheModelsLength) {
  AudioSet set(2);
  LoaderConfig c = audio_config(2, false);
  const std::vector<float> all = (*Loader(set.manifest, nullptr, c).next())["audio"].to_vector<float>();  // 48 frames
  c.audio.frames = 40;
  const Tensor cut = (*Loader(set.manifest, nullptr, c).next())["audio"];
  ASSERT_EQ(cut.shape(), (Shape{2, 1, 64, 40}));
  c.audio.frames = 60;
  const Tensor padded = (*Loader(set.manifest, nullptr, c).next())["audio"];
  ASSERT_EQ(padded.shape(), (Shape{2, 1, 64, 60}));
  const std::vector<float> v40 = cut.to_vector<float>(), v60 = padded.to_vector<float>();
  for (int64_t i = 0; i < 2 * 64; ++i)
    for (int64_t t = 0; t < 60; ++t) {
      if (t < 40) {
        ASSERT_EQ(v40[size_t(i * 40 + t)], all[size_t(i * 48 + t)]);
      }
      ASSERT_EQ(v60[size_t(i * 60 + t)], t < 48 ? all[size_t(i * 48 + t)] : 0.0f);
    }
}

TEST(AudioLoader, WaveformFeaturesAreResampledAndFitToTheDuration) {
  AudioSet set(4);
  LoaderConfig c = audio_config(4, false);
  c.audio.features = "waveform";
  c.audio.pad = AudioPad::zero;
  Loader loader(set.manifest, nullptr, c);
  const Batch b = *loader.next();
  const Tensor& a = b["audio"];
  ASSERT_EQ(a.shape(), (Shape{4, 8000}));
  const std::vector<float> v = a.to_vector<float>();
  // Row 0 lasts 0.2 s (3200 samples at 16 kHz) and is zero-padded; row 3 (0.5 s) fills the window.
  EXPECT_GT(rms(std::vector<float>(v.begin(), v.begin() + 3000)), 0.15);
  EXPECT_EQ(rms(std::vector<float>(v.begin() + 3300, v.begin() + 8000)), 0.0);
  EXPECT_GT(rms(std::vector<float>(v.begin() + 3 * 8000, v.begin() + 3 * 8000 + 7900)), 0.15);
  // Row 1 is a 300 Hz tone at 16 kHz after resampling from 16 kHz; row 2 a 400 Hz tone from 22.05 kHz.
  EXPECT_EQ(peak_frequency(std::vector<float>(v.begin() + 8000 + 500, v.begin() + 8000 + 4000), 16000, 250, 350), 300);
  EXPECT_EQ(peak_frequency(std::vector<float>(v.begin() + 16000 + 500, v.begin() + 16000 + 5000), 16000, 350, 450), 400);
}

TEST(AudioLoader, TrainingCropsAndMasksAreAFunctionOfTheSeed) {
  AudioSet set(8);
  auto first = [&](uint64_t seed, int workers) {
    LoaderConfig c = audio_config(8, true);
    c.seed = seed;
    c.workers = workers;
    Loader loader(set.manifest, nullptr, c);
    return (*loader.next())["audio"].to_vector<float>();
  };
  EXPECT_EQ(first(3, 2), first(3, 0));
  EXPECT_NE(first(3, 2), first(4, 2));
  // Masked cells are exactly 0 (the normalised mean).
  const std::vector<float> v = first(3, 2);
  EXPECT_GT(std::count(v.begin(), v.end(), 0.0f), 8 * 48);
}

TEST(AudioLoader, BadClipsAreSkippedAndCountedOrFatal) {
  AudioSet set(6, "clips/2.ogg");
  {
    Loader loader(set.manifest, nullptr, audio_config(6, false));
    const Batch b = *loader.next();
    EXPECT_EQ(b.size(), 5);
    EXPECT_EQ(b["audio"].size(0), 5);
    EXPECT_EQ(std::count(b.indices.begin(), b.indices.end(), 2), 0);
    EXPECT_EQ(loader.skipped(), 1);
  }
  LoaderConfig c = audio_config(6, false);
  c.on_error = "fail";
  Loader loader(set.manifest, nullptr, c);
  const std::string e = error_of([&] { loader.next(); });
  EXPECT_NE(e.find("clips/2.ogg: cannot decode audio"), std::string::npos) << e;
}

TEST(AudioLoader, ImpossibleSettingsNameTheSetting) {
  AudioSet set(2);
  LoaderConfig c = audio_config(2, false);
  c.audio.duration = 0.01;  // 160 samples, under one 400-sample frame
  EXPECT_NE(error_of([&] { Loader l(set.manifest, nullptr, c); }).find("shorter than one fbank frame"), std::string::npos);
  c = audio_config(2, false);
  c.audio.features = "mfcc";
  EXPECT_NE(error_of([&] { Loader l(set.manifest, nullptr, c); }).find("audio.features must be fbank or waveform"),
            std::string::npos);
  c = audio_config(2, false);
  c.audio.std = 0;
  EXPECT_NE(error_of([&] { Loader l(set.manifest, nullptr, c); }).find("audio.std must be > 0"), std::string::npos);
}

}  // namespace
}  // namespace loom::data
