// The Kaldi-compatible filterbank against torchaudio.compliance.kaldi.fbank (fixture from
// scripts/golden/fbank_kaldi.py: tones, noise, a chirp, speech, silence, one-window clips, other
// options), and SpecAugment's masks.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <string>
#include "core/safetensors.h"
#include "data/fbank.h"
#include "helpers.h"

namespace loom::data {
namespace {

using testing::error_of;

FbankOptions options_from(const nlohmann::json& j) {
  FbankOptions o;
  o.sample_rate = j.at("sample_frequency");
  o.frame_length_ms = j.at("frame_length");
  o.frame_shift_ms = j.at("frame_shift");
  o.num_mel_bins = j.at("num_mel_bins");
  o.window = j.at("window_type");
  o.low_freq = j.at("low_freq");
  o.high_freq = j.at("high_freq");
  o.preemphasis = j.at("preemphasis_coefficient");
  o.remove_dc_offset = j.at("remove_dc_offset");
  return o;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, double(std::abs(x[i] - y[i])));
  return m;
}

TEST(Fbank, MatchesTorchaudioKaldiOnEveryClip) {
  const SafetensorsFile f = load_safetensors(std::string(LOOM_SOURCE_DIR) + "/tests/fixtures/fbank_kaldi.safetensors");
  const nlohmann::json options = nlohmann::json::parse(f.metadata.at("options"));
  ASSERT_GE(options.size(), 9u);
  for (const auto& [name, opts] : options.items()) {
    SCOPED_TRACE(name);
    const Tensor wave = f.tensors.at("wave/" + name), want32 = f.tensors.at("fbank32/" + name),
                 want64 = f.tensors.at("fbank64/" + name);
    const KaldiFbank fbank(options_from(opts));
    const Tensor got = fbank.compute(wave.data_ptr<float>(), wave.size(0));
    ASSERT_EQ(got.shape(), want32.shape());
    EXPECT_EQ(fbank.num_frames(wave.size(0)), want32.size(0));
    // Against torchaudio in float64: the reference without float32 FFT error (what remains is float32
    // rounding of the output and of torchaudio's float32 mel filters).
    const double vs64 = max_abs_diff(got, want64);
    EXPECT_LE(vs64, 2e-4);
    // Against torchaudio's usual float32 run: within 1e-3 wherever torchaudio's own float32 result is
    // within 1e-3 of its float64 one. Tones put some bins' energies near the log floor (ln FLT_EPSILON
    // = -15.9), where float32's FFT rounding alone moves torchaudio by up to 6e-3 (chirp, chord).
    const std::vector<float> g = got.to_vector<float>(), w32 = want32.to_vector<float>(), w64 = want64.to_vector<float>();
    double vs32 = 0, own = 0;
    int64_t beyond = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      const double d = std::abs(double(g[i]) - w32[i]), self = std::abs(double(w32[i]) - w64[i]);
      vs32 = std::max(vs32, d);
      own = std::max(own, self);
      if (d > 1e-3 + self) ++beyond;
    }
    EXPECT_EQ(beyond, 0) << "entries beyond 1e-3 + torchaudio's own float32 error";
    std::printf("  fbank %-12s frames %4ld: max |loom - torchaudio f64| %.2e, |loom - torchaudio f32| %.2e "
                "(torchaudio f32 vs f64: %.2e)\n", name.c_str(), long(got.size(0)), vs64, vs32, own);
  }
}

TEST(Fbank, SilenceIsTheLogOfFloatEpsilon) {
  const KaldiFbank fbank(FbankOptions{});
  const std::vector<float> zeros(1600, 0.0f);
  const Tensor got = fbank.compute(zeros.data(), int64_t(zeros.size()));
  ASSERT_EQ(got.shape(), (Shape{8, 128}));
  for (float v : got.to_vector<float>()) ASSERT_FLOAT_EQ(v, std::log(FLT_EPSILON));
}

TEST(Fbank, FrameCountAndShapes) {
  const KaldiFbank fbank(FbankOptions{});
  EXPECT_EQ(fbank.window_length(), 400);
  EXPECT_EQ(fbank.window_shift(), 160);
  EXPECT_EQ(fbank.fft_length(), 512);
  EXPECT_EQ(fbank.num_frames(399), 0);
  EXPECT_EQ(fbank.num_frames(400), 1);
  EXPECT_EQ(fbank.num_frames(559), 1);
  EXPECT_EQ(fbank.num_frames(560), 2);
  EXPECT_EQ(fbank.num_frames(160000), 998);  // AST pads/crops 10 s clips' 998 frames to 1024
  const std::vector<float> short_clip(300, 0.1f);
  EXPECT_EQ(fbank.compute(short_clip.data(), 300).shape(), (Shape{0, 128}));
  // No filter touches the Nyquist column. With 128 bins on a 512-point FFT a few of the narrowest
  // (lowest) filters fall between FFT bins and are empty, as in Kaldi; every filter above 300 Hz has weight.
  const std::vector<double>& w = fbank.mel_filters();
  int64_t empty = 0;
  for (int64_t m = 0; m < 128; ++m) {
    double peak = 0;
    for (int64_t c = 0; c < 257; ++c) peak = std::max(peak, w[size_t(m * 257 + c)]);
    if (peak == 0) {
      ++empty;
      EXPECT_LT(m, 12) << "filter " << m << " is empty";
    }
    EXPECT_EQ(w[size_t(m * 257 + 256)], 0.0);
  }
  EXPECT_LT(empty, 12);
}

TEST(Fbank, ImpossibleOptionsNameTheOption) {
  FbankOptions o;
  o.num_mel_bins = 2;
  EXPECT_NE(error_of([&] { KaldiFbank f(o); }).find("fbank.num_mel_bins must be in [4, 1024]"), std::string::npos);
  o = FbankOptions{};
  o.high_freq = 9000;
  EXPECT_NE(error_of([&] { KaldiFbank f(o); }).find("Nyquist (8000 Hz)"), std::string::npos);
  o = FbankOptions{};
  o.window = "blackmann";
  EXPECT_NE(error_of([&] { KaldiFbank f(o); }).find("fbank.window must be"), std::string::npos);
  o = FbankOptions{};
  o.frame_shift_ms = 0;
  EXPECT_NE(error_of([&] { KaldiFbank f(o); }).find("frame_shift_ms"), std::string::npos);
}

TEST(SpecAugment, MasksBandsWithinTheirLimitsDeterministically) {
  const int64_t bins = 64, frames = 200;
  SpecAugment aug{2, 12, 2, 40};
  int64_t any_masked = 0;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    std::vector<float> s(size_t(bins * frames), 1.0f), again = s;
    aug.apply(s.data(), bins, frames, 0.0f, seed);
    aug.apply(again.data(), bins, frames, 0.0f, seed);
    ASSERT_EQ(s, again);
    // Rows entirely masked are frequency bands (at most 2 x 11); columns entirely masked are time bands.
    int64_t rows = 0, cols = 0;
    for (int64_t b = 0; b < bins; ++b) rows += std::all_of(s.begin() + b * frames, s.begin() + (b + 1) * frames, [](float v) { return v == 0; });
    for (int64_t t = 0; t < frames; ++t) {
      bool all = true;
      for (int64_t b = 0; b < bins; ++b) all = all && s[size_t(b * frames + t)] == 0;
      cols += all;
    }
    EXPECT_LE(rows, 22);
    EXPECT_LE(cols, 78);
    // Every masked cell lies in a masked row or column.
    for (int64_t b = 0; b < bins; ++b)
      for (int64_t t = 0; t < frames; ++t)
        if (s[size_t(b * frames + t)] == 0) {
          bool row = std::all_of(s.begin() + b * frames, s.begin() + (b + 1) * frames, [](float v) { return v == 0; });
          bool col = true;
          for (int64_t r = 0; r < bins; ++r) col = col && s[size_t(r * frames + t)] == 0;
          ASSERT_TRUE(row || col);
        }
    any_masked += rows + cols;
  }
  EXPECT_GT(any_masked, 50 * 20);  // mean band widths ~5.5 and ~19.5, two of each
  EXPECT_FALSE(SpecAugment{}.active());
}

}  // namespace
}  // namespace loom::data
