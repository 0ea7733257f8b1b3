#include "data/fbank.h"
#include <fftw3.h>
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <mutex>
#include <numbers>
#include "core/error.h"
#include "data/random.h"

namespace loom::data {

namespace {
// FFTW's planner is not thread-safe (fftw_execute* is); plans are made once per KaldiFbank.
std::mutex& fftw_planner_mutex() {
  static std::mutex mu;
  return mu;
}
double mel_scale(double f) { return 1127.0 * std::log(1.0 + f / 700.0); }

struct FftwBuffers {  // fftw_malloc'd, so new-array execution keeps the plan's alignment
  double* in;
  fftw_complex* out;
  explicit FftwBuffers(int64_t n)
      : in(fftw_alloc_real(size_t(n))), out(fftw_alloc_complex(size_t(n / 2 + 1))) {
    LOOM_CHECK(in && out, "fbank: out of memory for an FFT of ", n);
  }
  ~FftwBuffers() { fftw_free(in); fftw_free(out); }
  FftwBuffers(const FftwBuffers&) = delete;
  FftwBuffers& operator=(const FftwBuffers&) = delete;
};
}  // namespace

struct KaldiFbank::Plan {
  fftw_plan plan = nullptr;
  ~Plan() {
    std::lock_guard<std::mutex> lock(fftw_planner_mutex());
    if (plan) fftw_destroy_plan(plan);
  }
};

void FbankOptions::validate() const {
  LOOM_CHECK(sample_rate >= 1000 && sample_rate <= 768000, "fbank.sample_rate must be in [1000, 768000] Hz, got ",
             sample_rate);
  LOOM_CHECK(frame_length_ms > 0 && frame_shift_ms > 0, "fbank.frame_length_ms and fbank.frame_shift_ms must be > 0, got ",
             frame_length_ms, " and ", frame_shift_ms);
  const int64_t window_samples = int64_t(sample_rate * frame_length_ms * 0.001);
  const int64_t shift = int64_t(sample_rate * frame_shift_ms * 0.001);
  LOOM_CHECK(window_samples >= 2 && window_samples <= (int64_t(1) << 20), "fbank: a frame of ", frame_length_ms, " ms at ",
             sample_rate, " Hz is ", window_samples, " samples; expected 2 to 2^20");
  LOOM_CHECK(shift >= 1, "fbank: a shift of ", frame_shift_ms, " ms at ", sample_rate, " Hz is under one sample");
  LOOM_CHECK(num_mel_bins > 3 && num_mel_bins <= 1024, "fbank.num_mel_bins must be in [4, 1024], got ", num_mel_bins);
  const double nyquist = 0.5 * sample_rate, high = high_freq <= 0 ? high_freq + nyquist : high_freq;
  LOOM_CHECK(low_freq >= 0 && low_freq < nyquist && high > 0 && high <= nyquist && low_freq < high,
             "fbank: low_freq ", low_freq, " and high_freq ", high_freq, " must satisfy 0 <= low < high <= Nyquist (",
             nyquist, " Hz)");
  LOOM_CHECK(preemphasis >= 0 && preemphasis <= 1, "fbank.preemphasis must be in [0, 1], got ", preemphasis);
  LOOM_CHECK(window == "hanning" || window == "povey" || window == "hamming" || window == "rectangular",
             "fbank.window must be hanning, povey, hamming or rectangular, got \"", window, "\"");
}

KaldiFbank::KaldiFbank(FbankOptions options) : options_(std::move(options)) {
  options_.validate();
  window_ = int64_t(options_.sample_rate * options_.frame_length_ms * 0.001);  // as Python's int(): truncation
  shift_ = int64_t(options_.sample_rate * options_.frame_shift_ms * 0.001);
  padded_ = 1;
  while (padded_ < window_) padded_ *= 2;

  window_fn_.resize(size_t(window_));
  const double a = 2 * std::numbers::pi / double(window_ - 1);
  for (int64_t i = 0; i < window_; ++i) {
    const double hann = 0.5 - 0.5 * std::cos(a * double(i));
    double w = 1.0;
    if (options_.window == "hanning") w = hann;
    if (options_.window == "povey") w = std::pow(hann, 0.85);
    if (options_.window == "hamming") w = 0.54 - 0.46 * std::cos(a * double(i));
    window_fn_[size_t(i)] = w;
  }

  // Triangular filters equally spaced on Kaldi's mel scale, evaluated at each FFT bin's mel value.
  const int64_t bins = options_.num_mel_bins, cols = padded_ / 2 + 1;
  const double nyquist = 0.5 * options_.sample_rate;
  const double high = options_.high_freq <= 0 ? options_.high_freq + nyquist : options_.high_freq;
  const double mel_low = mel_scale(options_.low_freq), mel_high = mel_scale(high);
  const double delta = (mel_high - mel_low) / double(bins + 1), bin_width = options_.sample_rate / double(padded_);
  filters_.assign(size_t(bins * cols), 0.0);
  filter_begin_.assign(size_t(bins), cols);
  filter_end_.assign(size_t(bins), 0);
  for (int64_t m = 0; m < bins; ++m) {
    const double left = mel_low + double(m) * delta, center = left + delta, right = left + 2 * delta;
    for (int64_t k = 0; k < cols - 1; ++k) {  // the Nyquist column stays 0, as Kaldi's
      const double mel = mel_scale(bin_width * double(k));
      const double w = std::max(0.0, std::min((mel - left) / (center - left), (right - mel) / (right - center)));
      if (w > 0) {
        filters_[size_t(m * cols + k)] = w;
        filter_begin_[size_t(m)] = std::min(filter_begin_[size_t(m)], k);
        filter_end_[size_t(m)] = k + 1;
      }
    }
    if (filter_end_[size_t(m)] == 0) filter_begin_[size_t(m)] = 0;  // an empty filter (too many bins for the FFT)
  }

  plan_ = std::make_unique<Plan>();
  FftwBuffers buf(padded_);
  std::lock_guard<std::mutex> lock(fftw_planner_mutex());
  plan_->plan = fftw_plan_dft_r2c_1d(int(padded_), buf.in, buf.out, FFTW_ESTIMATE);
  LOOM_CHECK(plan_->plan, "fbank: FFTW could not plan an FFT of ", padded_);
}

KaldiFbank::~KaldiFbank() = default;

int64_t KaldiFbank::num_frames(int64_t num_samples) const {
  return num_samples < window_ ? 0 : 1 + (num_samples - window_) / shift_;
}

Tensor KaldiFbank::compute(const float* samples, int64_t n) const {
  const int64_t frames = num_frames(n), bins = options_.num_mel_bins, cols = padded_ / 2 + 1;
  Tensor out = Tensor::empty({frames, bins});
  float* dst = out.data_ptr<float>();
  FftwBuffers buf(padded_);
  std::vector<double> frame(static_cast<size_t>(window_)), power(static_cast<size_t>(cols));
  const double k = options_.preemphasis;
  for (int64_t f = 0; f < frames; ++f) {
    const float* src = samples + f * shift_;
    double mean = 0;
    for (int64_t i = 0; i < window_; ++i) mean += src[i];
    mean = options_.remove_dc_offset ? mean / double(window_) : 0.0;
    for (int64_t i = 0; i < window_; ++i) frame[size_t(i)] = double(src[i]) - mean;
    if (k != 0) {
      for (int64_t i = window_ - 1; i > 0; --i) frame[size_t(i)] -= k * frame[size_t(i - 1)];
      frame[0] -= k * frame[0];
    }
    for (int64_t i = 0; i < window_; ++i) buf.in[i] = frame[size_t(i)] * window_fn_[size_t(i)];
    for (int64_t i = window_; i < padded_; ++i) buf.in[i] = 0.0;
    fftw_execute_dft_r2c(plan_->plan, buf.in, buf.out);
    for (int64_t c = 0; c < cols; ++c) power[size_t(c)] = buf.out[c][0] * buf.out[c][0] + buf.out[c][1] * buf.out[c][1];
    for (int64_t m = 0; m < bins; ++m) {
      double e = 0;
      const double* w = filters_.data() + m * cols;
      for (int64_t c = filter_begin_[size_t(m)]; c < filter_end_[size_t(m)]; ++c) e += w[c] * power[size_t(c)];
      // The log in f32, as torchaudio takes it (of f32 energies): ~10% less loader CPU than a double log
      // (loom stats over the 3200 demo clips), results ~1e-7 apart.
      dst[f * bins + m] = std::log(std::max(float(e), FLT_EPSILON));
    }
  }
  return out;
}

void SpecAugment::apply(float* spec, int64_t bins, int64_t frames, float value, uint64_t seed) const {
  detail::Stream rng(seed);
  // torchaudio's mask_along_axis: width = floor(U * max_width), start = floor(U * (size - width)).
  auto band = [&](int64_t size, int64_t max_width, int64_t& start, int64_t& width) {
    width = std::min(size, int64_t(rng.uniform() * double(max_width)));
    start = int64_t(rng.uniform() * double(size - width));
  };
  for (int64_t i = 0; i < freq_masks && max_freq_width > 1; ++i) {
    int64_t start, width;
    band(bins, max_freq_width, start, width);
    for (int64_t b = start; b < start + width; ++b) std::fill(spec + b * frames, spec + (b + 1) * frames, value);
  }
  for (int64_t i = 0; i < time_masks && max_time_width > 1; ++i) {
    int64_t start, width;
    band(frames, max_time_width, start, width);
    for (int64_t b = 0; b < bins; ++b) std::fill(spec + b * frames + start, spec + b * frames + start + width, value);
  }
}

}  // namespace loom::data
