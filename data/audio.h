// Audio decoding (libsndfile), resampling (libsoxr) and fitting a clip to a fixed duration.
//
// Why libsoxr: it is the resampler of SoX and of librosa's default path (the `soxr` package), has a
// one-shot C API, linear-phase filters with a stated pass band and stop band at every quality
// setting, and supports arbitrary rational and irrational ratios. libsamplerate's best converter is
// slower for the same rejection and its API is built around streaming.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace loom::data {

struct Waveform {
  std::vector<float> samples;  // mono, nominally in [-1, 1]
  double sample_rate = 0;
  int channels = 0;            // in the file, before the mix-down
};

// Decodes any format libsndfile reads (WAV, FLAC, OGG/Vorbis, Opus, MP3, AIFF, ...), mixing every
// channel down to mono (their mean). A missing, unreadable, corrupt, truncated or empty file, a sample
// rate outside [1 kHz, 768 kHz], or a non-finite sample is a loom::Error naming the path.
Waveform decode_audio(const std::string& path);

// The same from bytes already in memory (a tar member, a fuzzer's input); `name` is used in errors.
Waveform decode_audio_bytes(const void* bytes, size_t size, const std::string& name);

// Resamples mono `samples` from `from_rate` to `to_rate` with libsoxr at very high quality
// (linear phase, pass band to 95% of the lower Nyquist, stop-band rejection ~175 dB): content above
// the new Nyquist is removed. Returns round(n * to_rate / from_rate) samples; the input itself when
// the rates are equal. `name` is used in errors.
std::vector<float> resample(const std::vector<float>& samples, double from_rate, double to_rate,
                            const std::string& name);

// What fit_duration does with a clip shorter than the target (LAION-CLAP's names):
//   zero      — zero-pad at the end;
//   repeat    — repeat the clip, then cut to the target;
//   repeatpad — repeat the clip as many whole times as fit, then zero-pad.
enum class AudioPad { zero, repeat, repeatpad };
AudioPad parse_audio_pad(const std::string& name);  // throws loom::Error for an unknown name

// Returns exactly `length` samples. A longer clip is cropped: at a position drawn from `seed` when
// `random_crop` (training), else centred (evaluation). A shorter one is padded per `pad`; an empty one
// becomes silence.
std::vector<float> fit_duration(const std::vector<float>& samples, int64_t length, AudioPad pad, bool random_crop,
                                uint64_t seed);

// Writes interleaved f32 samples (`channels` per frame), the format chosen by the extension: .wav
// (16-bit PCM, or 32-bit float with float_wav), .flac (16-bit), .ogg (Vorbis), .opus (Ogg Opus: 8, 12,
// 16, 24 or 48 kHz only), .aiff. For tests and demos. Throws loom::Error naming the path on failure.
void write_audio(const std::string& path, const std::vector<float>& interleaved, int channels, int sample_rate,
                 bool float_wav = false);

}  // namespace loom::data
