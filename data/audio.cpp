#include "data/audio.h"
#include <sndfile.h>
#include <soxr.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include "core/error.h"
#include "data/random.h"

namespace loom::data {

namespace {

constexpr double kMinRate = 1000, kMaxRate = 768000;
constexpr int kMaxChannels = 1024;

// libsndfile reads from memory through its virtual I/O callbacks.
struct MemoryFile {
  const unsigned char* data;
  sf_count_t size, pos = 0;
};

sf_count_t mem_length(void* user) { return static_cast<MemoryFile*>(user)->size; }
sf_count_t mem_seek(sf_count_t offset, int whence, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? f->pos : f->size;
  f->pos = std::clamp<sf_count_t>(base + offset, 0, f->size);
  return f->pos;
}
sf_count_t mem_read(void* ptr, sf_count_t count, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  const sf_count_t n = std::max<sf_count_t>(0, std::min(count, f->size - f->pos));
  if (n > 0) std::memcpy(ptr, f->data + f->pos, size_t(n));
  f->pos += n;
  return n;
}
sf_count_t mem_write(const void*, sf_count_t, void*) { return 0; }
sf_count_t mem_tell(void* user) { return static_cast<MemoryFile*>(user)->pos; }

// libsndfile opens a WAV whose header promises more data than the file holds and silently shortens
// it; its log ("data : 32000 (should be 6000)") is the only trace. Such a file is truncated (a partial
// download or copy). Streaming writers leave the size 0 or 0xFFFFFFFF: those are not truncation.
bool log_says_truncated(SNDFILE* sf) {
  char log[8192] = {0};
  sf_command(sf, SFC_GET_LOG_INFO, log, sizeof(log) - 1);
  const std::string s(log);
  for (size_t at = s.find("data :"); at != std::string::npos; at = s.find("data :", at + 1)) {
    unsigned long long declared = 0, actual = 0;
    const std::string line = s.substr(at, s.find('\n', at) - at);
    if (std::sscanf(line.c_str(), "data : %llu (should be %llu)", &declared, &actual) == 2 && declared > actual &&
        declared != 0xFFFFFFFFull && declared != 0xFFFFFFFFFFFFFFFFull)
      return true;
  }
  return s.find("truncated") != std::string::npos || s.find("Truncated") != std::string::npos;
}

struct SndfileCloser {
  void operator()(SNDFILE* f) const { if (f) sf_close(f); }
};

}  // namespace

Waveform decode_audio_bytes(const void* bytes, size_t size, const std::string& name) {
  LOOM_CHECK(size > 0, name, ": empty audio file (0 bytes)");
  MemoryFile mem{static_cast<const unsigned char*>(bytes), sf_count_t(size)};
  SF_VIRTUAL_IO io{mem_length, mem_seek, mem_read, mem_write, mem_tell};
  SF_INFO info;
  std::memset(&info, 0, sizeof(info));
  std::unique_ptr<SNDFILE, SndfileCloser> sf(sf_open_virtual(&io, SFM_READ, &info, &mem));
  if (!sf) throw Error(str_cat(name, ": cannot decode audio (", sf_strerror(nullptr), ")"));
  LOOM_CHECK(info.channels >= 1 && info.channels <= kMaxChannels, name, ": audio has ", info.channels,
             " channels; expected 1..", kMaxChannels);
  LOOM_CHECK(info.samplerate >= kMinRate && info.samplerate <= kMaxRate, name, ": audio sample rate ",
             info.samplerate, " Hz is outside [", kMinRate, ", ", kMaxRate, "] Hz");
  LOOM_CHECK(info.frames > 0, name, ": audio file holds no samples");
  // A header may claim any length; nothing real exceeds the bytes we hold by more than a codec's ratio.
  LOOM_CHECK(info.frames <= sf_count_t(size) * 64, name, ": audio header claims ", info.frames,
             " frames, impossible for a ", size, "-byte file");
  if (log_says_truncated(sf.get()))
    throw Error(str_cat(name, ": truncated audio file (its header promises more data than the file holds)"));

  const int ch = info.channels;
  std::vector<float> interleaved(size_t(info.frames) * size_t(ch));
  sf_count_t got = 0;
  while (got < info.frames) {  // compressed formats may return short reads before the end
    const sf_count_t n = sf_readf_float(sf.get(), interleaved.data() + got * ch, info.frames - got);
    if (n <= 0) break;
    got += n;
  }
  if (sf_error(sf.get()) != SF_ERR_NO_ERROR)
    throw Error(str_cat(name, ": corrupt audio (", sf_strerror(sf.get()), " after ", got, " of ", info.frames,
                        " frames)"));
  LOOM_CHECK(got == info.frames, name, ": truncated audio: decoded ", got, " of the ", info.frames, " frames its header promises");

  Waveform w;
  w.sample_rate = info.samplerate;
  w.channels = ch;
  w.samples.resize(size_t(got));
  for (sf_count_t i = 0; i < got; ++i) {
    double acc = 0;
    const float* frame = interleaved.data() + i * ch;
    for (int c = 0; c < ch; ++c) {
      if (!std::isfinite(frame[c]))
        throw Error(str_cat(name, ": audio sample ", i, " (channel ", c, ") is ", frame[c], "; every sample must be finite"));
      acc += frame[c];
    }
    w.samples[size_t(i)] = float(acc / ch);
  }
  return w;
}

Waveform decode_audio(const std::string& path) {
  std::error_code ec;
  LOOM_CHECK(std::filesystem::is_regular_file(path, ec), path, ": no such audio file");
  std::ifstream f(path, std::ios::binary);
  LOOM_CHECK(f, path, ": cannot open audio file");
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  LOOM_CHECK(!f.bad(), path, ": read error");
  return decode_audio_bytes(bytes.data(), bytes.size(), path);
}

std::vector<float> resample(const std::vector<float>& samples, double from_rate, double to_rate,
                            const std::string& name) {
  LOOM_CHECK(from_rate >= kMinRate && from_rate <= kMaxRate && to_rate >= kMinRate && to_rate <= kMaxRate, name,
             ": cannot resample from ", from_rate, " Hz to ", to_rate, " Hz (rates must be in [", kMinRate, ", ",
             kMaxRate, "] Hz)");
  if (from_rate == to_rate || samples.empty()) return samples;
  const size_t out_len = size_t(std::llround(double(samples.size()) * to_rate / from_rate));
  std::vector<float> out(std::max<size_t>(out_len, 1));
  const soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  const soxr_quality_spec_t quality = soxr_quality_spec(SOXR_VHQ, 0);
  const soxr_runtime_spec_t runtime = soxr_runtime_spec(1);  // the loader's workers are the parallelism
  size_t done = 0;
  const soxr_error_t err = soxr_oneshot(from_rate, to_rate, 1, samples.data(), samples.size(), nullptr, out.data(),
                                        out.size(), &done, &io, &quality, &runtime);
  if (err) throw Error(str_cat(name, ": resampling from ", from_rate, " to ", to_rate, " Hz failed (", err, ")"));
  out.resize(out_len);  // soxr may deliver a sample less than asked at the very end; that one stays 0
  return out;
}

AudioPad parse_audio_pad(const std::string& name) {
  if (name == "zero") return AudioPad::zero;
  if (name == "repeat") return AudioPad::repeat;
  if (name == "repeatpad") return AudioPad::repeatpad;
  throw Error(str_cat("unknown audio pad policy \"", name, "\" (expected zero, repeat or repeatpad)"));
}

std::vector<float> fit_duration(const std::vector<float>& samples, int64_t length, AudioPad pad, bool random_crop,
                                uint64_t seed) {
  LOOM_CHECK(length > 0, "fit_duration: length must be > 0, got ", length);
  const int64_t n = int64_t(samples.size());
  if (n >= length) {
    int64_t start = (n - length) / 2;
    if (random_crop) start = int64_t(detail::Stream(seed).below(uint64_t(n - length + 1)));
    return std::vector<float>(samples.begin() + start, samples.begin() + start + length);
  }
  std::vector<float> out(size_t(length), 0.0f);
  if (n == 0) return out;
  int64_t filled = n;
  if (pad == AudioPad::repeat) filled = length;
  if (pad == AudioPad::repeatpad) filled = (length / n) * n;
  for (int64_t i = 0; i < filled; ++i) out[size_t(i)] = samples[size_t(i % n)];
  return out;
}

void write_audio(const std::string& path, const std::vector<float>& interleaved, int channels, int sample_rate,
                 bool float_wav) {
  LOOM_CHECK(channels >= 1 && interleaved.size() % size_t(channels) == 0, path, ": write_audio: ", interleaved.size(),
             " samples do not divide into ", channels, " channels");
  const std::string ext = std::filesystem::path(path).extension().string();
  SF_INFO info;
  std::memset(&info, 0, sizeof(info));
  info.samplerate = sample_rate;
  info.channels = channels;
  if (ext == ".wav") info.format = SF_FORMAT_WAV | (float_wav ? SF_FORMAT_FLOAT : SF_FORMAT_PCM_16);
  else if (ext == ".flac") info.format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
  else if (ext == ".ogg") info.format = SF_FORMAT_OGG | SF_FORMAT_VORBIS;
  else if (ext == ".opus") info.format = SF_FORMAT_OGG | SF_FORMAT_OPUS;
  else if (ext == ".aiff") info.format = SF_FORMAT_AIFF | SF_FORMAT_PCM_16;
  else throw Error(str_cat(path, ": write_audio: unknown extension \"", ext, "\" (wav, flac, ogg, opus, aiff)"));
  std::unique_ptr<SNDFILE, SndfileCloser> sf(sf_open(path.c_str(), SFM_WRITE, &info));
  if (!sf) throw Error(str_cat(path, ": cannot write audio (", sf_strerror(nullptr), ")"));
  if (!float_wav) sf_command(sf.get(), SFC_SET_CLIPPING, nullptr, SF_TRUE);
  const sf_count_t frames = sf_count_t(interleaved.size()) / channels;
  const sf_count_t n = sf_writef_float(sf.get(), interleaved.data(), frames);
  LOOM_CHECK(n == frames, path, ": short write (", n, " of ", frames, " frames: ", sf_strerror(sf.get()), ")");
}

}  // namespace loom::data
