#include "data/image.h"
#include <algorithm>
#include <cctype>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <vector>
#include "core/error.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wshift-negative-value"
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO      // we read files ourselves (clear errors for missing files)
#define STBI_FAILURE_USERMSG
#define STBI_NO_JPEG       // JPEG goes to libjpeg-turbo (below): Debian's stb 2.27 overflows on bad Huffman tables
#define STBI_NO_PNM        // and PGM/PPM are read below: stb 2.27 mishandles truncated and 16-bit ones
// TGA has no magic bytes (stb takes many a corrupt file for one, then decodes zeros past its end),
// and PSD, PIC and HDR are not training-image formats: fewer decoders, fewer ways in.
#define STBI_NO_TGA
#define STBI_NO_PSD
#define STBI_NO_PIC
#define STBI_NO_HDR
#include "stb_image.h"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO  // we write files ourselves (errors name the path)
#include "stb_image_write.h"
#pragma GCC diagnostic pop
#include <jpeglib.h>  // after <cstdio>: it needs FILE and size_t
#include <jerror.h>  // the warning codes

namespace loom::data {

namespace {
// 8192 x 8192 (256 MB as RGBA bytes, 1 GB as f32): beyond any training resolution, below what
// would exhaust a loader worker's memory. stb refuses larger PNGs itself only past 2^30 bytes.
constexpr int64_t kMaxImagePixels = int64_t(1) << 26;

[[noreturn]] void refuse_size(const std::string& name, int64_t w, int64_t h) {
  throw Error(str_cat(name, ": the image claims ", w, "x", h, " pixels, more than loom decodes (", kMaxImagePixels,
                      "); resize it first"));
}

// Interleaved 8-bit grey (1) or RGB (3) pixels to `C` channels as stb converts them: grey
// replicated, stb's integer luma, an opaque alpha.
std::vector<unsigned char> convert_channels(const unsigned char* in, size_t n, int from, int64_t C) {
  std::vector<unsigned char> out(n * size_t(C));
  for (size_t i = 0; i < n; ++i, in += from) {
    const int r = in[0], g = from == 3 ? in[1] : r, b = from == 3 ? in[2] : r;
    unsigned char* o = out.data() + i * size_t(C);
    if (C <= 2) o[0] = (unsigned char)(from == 3 ? (r * 77 + g * 150 + b * 29) >> 8 : r);
    else o[0] = (unsigned char)r, o[1] = (unsigned char)g, o[2] = (unsigned char)b;
    if (C == 2 || C == 4) o[C - 1] = 255;
  }
  return out;
}

// stb_image grows its buffer to a PNG chunk's claimed length before reading it: a 79-byte file
// claiming a 2 GB IDAT made it allocate 2 GB (found by fuzz_image's memory limit). PNG chunks are
// length-prefixed and read in order, so each claim is checked against the bytes the file has.
void check_png_chunks(const unsigned char* b, size_t size, const std::string& name) {
  static const unsigned char signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size < 8 || std::memcmp(b, signature, 8) != 0) return;
  for (size_t i = 8; i + 8 <= size;) {
    const uint64_t length = uint64_t(b[i]) << 24 | uint64_t(b[i + 1]) << 16 | uint64_t(b[i + 2]) << 8 | b[i + 3];
    if (length > size - i - 8)
      throw Error(str_cat(name, ": corrupt image (a PNG chunk claims ", length, " bytes, the file has ", size - i - 8,
                          " after its header)"));
    if (std::memcmp(b + i + 4, "IEND", 4) == 0) return;
    i += 12 + length;  // length, type, data, CRC
  }
}

// ---- binary PGM/PPM (P5/P6), decoded here ----
// Debian's stb_image 2.27 fills a truncated PGM/PPM with uninitialised memory and reads past its
// buffer converting a 16-bit one to other channel counts (both found by fuzz_image), and the format
// is a header and raw samples, so loom reads it itself: 8- or 16-bit, any maxval scaled to 0-255.
struct Pnm {
  std::vector<unsigned char> px;  // interleaved, `components` per pixel
  int64_t width = 0, height = 0;
  int components = 0;
};

bool is_binary_pnm(const unsigned char* b, size_t size) { return size >= 2 && b[0] == 'P' && (b[1] == '5' || b[1] == '6'); }

Pnm decode_pnm(const unsigned char* bytes, size_t size, const std::string& name) {
  size_t i = 2;
  int64_t fields[3] = {0, 0, 0};  // width, height, maxval
  for (int64_t& f : fields) {
    for (;;) {  // whitespace and comments
      while (i < size && std::isspace(bytes[i])) ++i;
      if (i < size && bytes[i] == '#') { while (i < size && bytes[i] != '\n') ++i; continue; }
      break;
    }
    if (i >= size || !std::isdigit(bytes[i])) throw Error(str_cat(name, ": corrupt PNM header"));
    while (i < size && std::isdigit(bytes[i]) && f < (int64_t(1) << 40)) f = f * 10 + (bytes[i++] - '0');
  }
  if (i >= size || !std::isspace(bytes[i])) throw Error(str_cat(name, ": corrupt PNM header"));
  ++i;  // the single whitespace byte before the samples
  const int64_t W = fields[0], H = fields[1], maxval = fields[2];
  if (W < 1 || H < 1) throw Error(str_cat(name, ": corrupt PNM header (", W, "x", H, " pixels)"));
  if (H > kMaxImagePixels / W) refuse_size(name, W, H);
  if (maxval < 1 || maxval > 65535) throw Error(str_cat(name, ": corrupt PNM header (maxval ", maxval, ", not 1..65535)"));
  Pnm p;
  p.width = W, p.height = H, p.components = bytes[1] == '5' ? 1 : 3;
  const int bytes_per_sample = maxval > 255 ? 2 : 1;
  const int64_t samples = W * H * p.components, expected = samples * bytes_per_sample;
  const int64_t have = int64_t(size - i);
  if (have < expected)
    throw Error(str_cat(name, ": corrupt image (truncated PNM: ", have, " of ", expected, " pixel bytes)"));
  p.px.resize(size_t(samples));
  const unsigned char* in = bytes + i;
  for (int64_t k = 0; k < samples; ++k) {
    const int64_t v = bytes_per_sample == 2 ? (int64_t(in[2 * k]) << 8 | in[2 * k + 1]) : in[k];
    p.px[size_t(k)] = (unsigned char)((std::min(v, maxval) * 255 + maxval / 2) / maxval);
  }
  return p;
}

// ---- JPEG with libjpeg-turbo ----
// libjpeg-turbo is what Pillow decodes JPEGs with (open_clip's loaders), it is fuzzed continuously
// upstream, and it validates its own tables. Its errors arrive through a callback that must not
// return, so the decoder below is C-style: setjmp/longjmp, no C++ object alive across them.

constexpr int kMaxJpegScans = 1000;  // a progressive JPEG of many tiny scans decodes for minutes

struct JpegErrorManager {
  jpeg_error_mgr pub;  // first: libjpeg hands back a pointer to it
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX + 96];
};

[[noreturn]] void jpeg_fail_with(j_common_ptr c, const char* message) {
  auto* e = reinterpret_cast<JpegErrorManager*>(c->err);
  std::snprintf(e->message, sizeof e->message, "%s", message);
  std::longjmp(e->jump, 1);
}

[[noreturn]] void jpeg_on_error(j_common_ptr c) {
  char message[JMSG_LENGTH_MAX];
  (*c->err->format_message)(c, message);
  jpeg_fail_with(c, message);
}

// Level -1 is a warning about the data. Those that mean damaged pixels (a truncated file, a bad
// Huffman code, a lost restart) are errors: libjpeg would fill the rest with grey. The harmless
// ones (extra bytes before a marker, an unknown JFIF revision) are ignored, as Pillow ignores them.
void jpeg_on_message(j_common_ptr c, int level) {
  if (level >= 0) return;
  switch (c->err->msg_code) {
    case JWRN_JPEG_EOF: case JWRN_HIT_MARKER: case JWRN_HUFF_BAD_CODE: case JWRN_ARITH_BAD_CODE:
    case JWRN_MUST_RESYNC: case JWRN_BOGUS_PROGRESSION: case JWRN_NOT_SEQUENTIAL:
      jpeg_on_error(c);
    default:
      return;
  }
}

void jpeg_on_progress(j_common_ptr c) {
  if (c->is_decompressor && reinterpret_cast<j_decompress_ptr>(c)->input_scan_number > kMaxJpegScans)
    jpeg_fail_with(c, "more than 1000 progressive scans");
}

struct JpegPixels {
  unsigned char* px = nullptr;  // malloc'ed, interleaved, `components` per pixel
  int width = 0, height = 0, components = 0;
  bool cmyk = false, adobe = false;  // CMYK/YCCK output; Adobe's CMYK is stored inverted
};

// Decodes to grey (channels 1-2), RGB (3) or RGBA (4), or CMYK when the file is CMYK/YCCK (libjpeg
// converts those to nothing else). False with `message` set on any error; nothing leaks.
bool jpeg_decode(const unsigned char* bytes, size_t size, int channels, int64_t max_pixels, JpegPixels* out,
                 char* message, size_t message_size) {
  jpeg_decompress_struct cinfo;
  JpegErrorManager err;
  jpeg_progress_mgr progress;
  unsigned char* volatile px = nullptr;  // written after setjmp, freed after a longjmp
  std::memset(&cinfo, 0, sizeof cinfo);
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = jpeg_on_error;
  err.pub.emit_message = jpeg_on_message;
  err.message[0] = 0;
  if (setjmp(err.jump)) {
    std::snprintf(message, message_size, "%s", err.message);
    jpeg_destroy_decompress(&cinfo);
    std::free(px);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  progress.progress_monitor = jpeg_on_progress;
  cinfo.progress = &progress;
  jpeg_mem_src(&cinfo, bytes, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  if (int64_t(cinfo.image_width) * int64_t(cinfo.image_height) > max_pixels) {
    std::snprintf(err.message, sizeof err.message, "the image claims %ux%u pixels, more than loom decodes (%lld); resize it first",
                  cinfo.image_width, cinfo.image_height, static_cast<long long>(max_pixels));
    std::longjmp(err.jump, 1);
  }
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : channels <= 2 ? JCS_GRAYSCALE : channels == 3 ? JCS_RGB : JCS_EXT_RGBA;
  jpeg_start_decompress(&cinfo);
  const size_t row = size_t(cinfo.output_width) * size_t(cinfo.output_components);
  px = static_cast<unsigned char*>(std::malloc(row * cinfo.output_height));
  if (!px) jpeg_fail_with(reinterpret_cast<j_common_ptr>(&cinfo), "out of memory");
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW line = px + row * cinfo.output_scanline;
    if (jpeg_read_scanlines(&cinfo, &line, 1) != 1) jpeg_fail_with(reinterpret_cast<j_common_ptr>(&cinfo), "no scanline decoded");
  }
  out->width = int(cinfo.output_width);
  out->height = int(cinfo.output_height);
  out->components = cinfo.output_components;
  out->cmyk = cmyk;
  out->adobe = cinfo.saw_Adobe_marker;
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  out->px = px;
  return true;
}

bool is_jpeg(const unsigned char* bytes, size_t size) { return size >= 2 && bytes[0] == 0xFF && bytes[1] == 0xD8; }
}  // namespace


Tensor decode_image_bytes(const unsigned char* bytes, size_t size, int64_t channels, const std::string& name) {
  LOOM_CHECK(channels >= 1 && channels <= 4, name, ": decode_image: channels must be 1..4, got ", channels);
  LOOM_CHECK(size > 0, name, ": empty image file");
  LOOM_CHECK(size <= size_t(INT32_MAX), name, ": image file too large (", size, " bytes)");
  const int64_t C = channels;
  Tensor out;
  // Interleaved 8-bit pixels with `channels` components to planar f32 in [0, 1].
  auto to_planar = [&](const unsigned char* px, int64_t H, int64_t W) {
    out = Tensor::empty({C, H, W});
    float* o = out.data_ptr<float>();
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x)
        for (int64_t c = 0; c < C; ++c) o[(c * H + y) * W + x] = float(px[(y * W + x) * C + c]) * (1.0f / 255.0f);
  };
  if (is_jpeg(bytes, size)) {
    JpegPixels j;
    char why[JMSG_LENGTH_MAX + 96];
    if (!jpeg_decode(bytes, size, int(channels), kMaxImagePixels, &j, why, sizeof why)) {
      if (std::strncmp(why, "the image claims", 16) == 0) throw Error(str_cat(name, ": ", why));
      throw Error(str_cat(name, ": corrupt or unsupported image (JPEG: ", why, ")"));
    }
    std::unique_ptr<unsigned char, decltype(&std::free)> owned(j.px, &std::free);
    const size_t n = size_t(j.width) * size_t(j.height);
    if (j.components == channels && !j.cmyk) {
      to_planar(j.px, j.height, j.width);
    } else if (!j.cmyk) {  // grey plus an opaque alpha
      to_planar(convert_channels(j.px, n, j.components, C).data(), j.height, j.width);
    } else {  // CMYK to RGB (as stb and Pillow do), then to `channels`
      std::vector<unsigned char> rgb(n * 3);
      for (size_t i = 0; i < n; ++i) {
        const unsigned char* in = j.px + i * 4;
        const int k = j.adobe ? in[3] : 255 - in[3];
        for (int c = 0; c < 3; ++c) rgb[i * 3 + size_t(c)] = (unsigned char)(((j.adobe ? in[c] : 255 - in[c]) * k + 127) / 255);
      }
      to_planar(convert_channels(rgb.data(), n, 3, C).data(), j.height, j.width);
    }
    return out;
  }
  if (is_binary_pnm(bytes, size)) {
    const Pnm p = decode_pnm(bytes, size, name);
    if (p.components == C) to_planar(p.px.data(), p.height, p.width);
    else to_planar(convert_channels(p.px.data(), size_t(p.width * p.height), p.components, C).data(), p.height, p.width);
    return out;
  }
  check_png_chunks(bytes, size, name);
  int w = 0, h = 0, n = 0;
  // The header's size first: a small file may claim a huge image, and decoding would allocate it.
  if (stbi_info_from_memory(bytes, int(size), &w, &h, &n) && (int64_t(w) * int64_t(h) > kMaxImagePixels))
    refuse_size(name, w, h);
  // stb's failure reason is thread-local, so concurrent decodes report their own errors.
  unsigned char* px = stbi_load_from_memory(bytes, int(size), &w, &h, &n, int(channels));
  if (!px) {
    const char* why = stbi_failure_reason();
    throw Error(str_cat(name, ": corrupt or unsupported image (", why ? why : "unknown reason", ")"));
  }
  std::unique_ptr<unsigned char, decltype(&stbi_image_free)> owned(px, &stbi_image_free);
  to_planar(px, h, w);
  return out;
}

Tensor decode_image(const std::string& path, int64_t channels) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(str_cat(path, ": cannot open image (", std::filesystem::exists(path) ? "unreadable" : "no such file", ")"));
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error(str_cat(path, ": read error"));
  return decode_image_bytes(bytes.data(), bytes.size(), channels, path);
}

void write_png(const std::string& path, const Tensor& image) {
  LOOM_CHECK(image.dim() == 3 && (image.size(0) == 1 || image.size(0) == 3) && image.size(1) > 0 && image.size(2) > 0,
             path, ": write_png needs an image [1 or 3, H, W], got ", image.describe());
  const int64_t C = image.size(0), H = image.size(1), W = image.size(2);
  const std::vector<float> v = image.to(DType::f32).contiguous().to_vector<float>();
  std::vector<unsigned char> px(size_t(C * H * W));
  for (int64_t c = 0; c < C; ++c)  // planar [C, H, W] -> interleaved rows
    for (int64_t i = 0; i < H * W; ++i) {
      const float x = v[size_t(c * H * W + i)];
      px[size_t(i * C + c)] = (unsigned char)(std::lround(std::clamp(std::isfinite(x) ? x : 0.f, 0.f, 1.f) * 255.f));
    }
  std::string bytes;
  auto append = [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size_t(size)); };
  LOOM_CHECK(stbi_write_png_to_func(append, &bytes, int(W), int(H), int(C), px.data(), int(W * C)) != 0, path,
             ": PNG encoding failed");
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
    f.close();
    LOOM_CHECK(f, path, ": cannot write the picture");
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace loom::data
