// A Kaldi-compatible log-mel filterbank, equal to torchaudio.compliance.kaldi.fbank for the options
// below (the front end of AST, AudioMAE, CAV-MAE and BEATs). The FFT is FFTW's (double precision);
// everything else is computed in double and returned as f32.
//
// Per frame (snip_edges: frames = 1 + (n - window) / shift, none when n < window): remove the frame's
// mean, pre-emphasise (x[i] -= k * x[i-1], the first sample against itself), multiply by the window,
// zero-pad to a power of two, power spectrum, triangular mel filters (Kaldi's mel = 1127 ln(1 + f/700),
// filters equally spaced in mel between low_freq and high_freq), log(max(energy, FLT_EPSILON)).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include "core/tensor.h"

namespace loom::data {

struct FbankOptions {
  double sample_rate = 16000;
  double frame_length_ms = 25, frame_shift_ms = 10;
  int64_t num_mel_bins = 128;
  double low_freq = 20, high_freq = 0;  // high_freq <= 0: relative to the Nyquist frequency
  double preemphasis = 0.97;
  bool remove_dc_offset = true;
  std::string window = "hanning";  // hanning | povey | hamming | rectangular
  // Throws loom::Error naming the option for an impossible setting.
  void validate() const;
};

class KaldiFbank {
 public:
  explicit KaldiFbank(FbankOptions options);  // validates the options
  ~KaldiFbank();
  KaldiFbank(const KaldiFbank&) = delete;
  KaldiFbank& operator=(const KaldiFbank&) = delete;

  int64_t window_length() const { return window_; }   // samples per frame
  int64_t window_shift() const { return shift_; }
  int64_t fft_length() const { return padded_; }
  int64_t num_frames(int64_t num_samples) const;      // 0 when shorter than one window
  const FbankOptions& options() const { return options_; }

  // f32 [num_frames(n), num_mel_bins] for n mono samples at options().sample_rate. Thread-safe.
  Tensor compute(const float* samples, int64_t n) const;
  // The mel filters, [num_mel_bins, fft_length/2 + 1] (the last column, the Nyquist bin, is 0 as in Kaldi).
  const std::vector<double>& mel_filters() const { return filters_; }

 private:
  FbankOptions options_;
  int64_t window_ = 0, shift_ = 0, padded_ = 0;
  std::vector<double> window_fn_, filters_;
  std::vector<int64_t> filter_begin_, filter_end_;  // the nonzero columns of each filter, [begin, end)
  struct Plan;
  std::unique_ptr<Plan> plan_;
};

// SpecAugment (Park et al. 2019) as torchaudio's FrequencyMasking / TimeMasking, which AST and AudioMAE
// use: `freq_masks` bands of width uniform in [0, max_freq_width) mel bins and `time_masks` bands of
// width uniform in [0, max_time_width) frames, each at a uniform start, set to `value`. Operates on a
// contiguous f32 [bins, frames] in place; all randomness from `seed`.
struct SpecAugment {
  int64_t freq_masks = 0, max_freq_width = 0;
  int64_t time_masks = 0, max_time_width = 0;
  bool active() const { return (freq_masks > 0 && max_freq_width > 1) || (time_masks > 0 && max_time_width > 1); }
  void apply(float* spec, int64_t bins, int64_t frames, float value, uint64_t seed) const;
};

}  // namespace loom::data
