#include "data/image.h"
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
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
#include "stb_image.h"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO  // we write files ourselves (errors name the path)
#include "stb_image_write.h"
#pragma GCC diagnostic pop

namespace loom::data {

namespace {
// stb_image (v2.27) fills a truncated binary PGM/PPM with uninitialised memory instead of failing,
// so the header is checked here: the file must hold every pixel byte the header promises.
// stb_image 2.27 (Debian's) writes past its Huffman size table when a JPEG's DHT segment declares
// more than 256 codes (found by fuzz_image under UBSan). The segments are checked here first.
void check_jpeg_huffman_tables(const unsigned char* b, size_t size, const std::string& name) {
  if (size < 4 || b[0] != 0xFF || b[1] != 0xD8) return;
  size_t i = 2;
  while (i + 4 <= size) {
    if (b[i] != 0xFF) { ++i; continue; }  // stb skips bytes between segments to the next marker: so do we
    const unsigned char marker = b[i + 1];
    if (marker == 0xFF) { ++i; continue; }  // fill byte
    if (marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01) { i += 2; continue; }
    if (marker == 0xD9) return;  // end of image
    const size_t len = (size_t(b[i + 2]) << 8) | b[i + 3];
    if (len < 2) return;
    if (marker == 0xDA) {  // start of scan: its header, then entropy-coded bytes up to the next marker
      // (progressive JPEGs define tables between scans); FF 00 is a stuffed byte, FF D0-D7 a restart
      for (i += 2 + len; i + 1 < size; ++i)
        if (b[i] == 0xFF && b[i + 1] != 0x00 && !(b[i + 1] >= 0xD0 && b[i + 1] <= 0xD7)) break;
      continue;
    }
    if (marker == 0xC4) {
      // DHT: [class/id, 16 counts, symbols] while bytes of the segment remain, read exactly as stb
      // reads them: a table may start in the segment's last byte and run past it, and bytes past
      // the end of the file read as 0.
      auto at = [&](size_t k) -> size_t { return k < size ? b[k] : 0; };
      size_t p = i + 4;
      for (int64_t left = int64_t(len) - 2; left > 0;) {
        size_t codes = 0;
        for (size_t k = 1; k <= 16; ++k) codes += at(p + k);
        if (codes > 256)
          throw Error(str_cat(name, ": corrupt image (a JPEG Huffman table declares ", codes, " codes, at most 256 exist)"));
        p += 17 + codes;
        left -= int64_t(17 + codes);
      }
    }
    if (i + 2 + len > size) return;
    i += 2 + len;
  }
}

void check_pnm_size(const unsigned char* bytes, size_t size, const std::string& name) {
  if (size < 2 || bytes[0] != 'P' || (bytes[1] != '5' && bytes[1] != '6')) return;
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
  ++i;  // the single whitespace byte before the pixels
  const int64_t expected = fields[0] * fields[1] * (bytes[1] == '5' ? 1 : 3) * (fields[2] > 255 ? 2 : 1);
  const int64_t have = i <= size ? int64_t(size - i) : 0;
  if (have < expected)
    throw Error(str_cat(name, ": corrupt image (truncated PNM: ", have, " of ", expected, " pixel bytes)"));
}
}  // namespace

// 8192 x 8192 (256 MB as RGBA bytes, 1 GB as f32): beyond any training resolution, below what
// would exhaust a loader worker's memory. stb refuses larger PNGs itself only past 2^30 bytes.
constexpr int64_t kMaxImagePixels = int64_t(1) << 26;

Tensor decode_image_bytes(const unsigned char* bytes, size_t size, int64_t channels, const std::string& name) {
  LOOM_CHECK(channels >= 1 && channels <= 4, name, ": decode_image: channels must be 1..4, got ", channels);
  LOOM_CHECK(size > 0, name, ": empty image file");
  LOOM_CHECK(size <= size_t(INT32_MAX), name, ": image file too large (", size, " bytes)");
  check_pnm_size(bytes, size, name);
  check_jpeg_huffman_tables(bytes, size, name);
  int w = 0, h = 0, n = 0;
  // The header's size first: a small file may claim a huge image, and decoding would allocate it.
  if (stbi_info_from_memory(bytes, int(size), &w, &h, &n) && (int64_t(w) * int64_t(h) > kMaxImagePixels))
    throw Error(str_cat(name, ": the image claims ", w, "x", h, " pixels, more than loom decodes (", kMaxImagePixels,
                        "); resize it first"));
  // stb's failure reason is thread-local, so concurrent decodes report their own errors.
  unsigned char* px = stbi_load_from_memory(bytes, int(size), &w, &h, &n, int(channels));
  if (!px) {
    const char* why = stbi_failure_reason();
    throw Error(str_cat(name, ": corrupt or unsupported image (", why ? why : "unknown reason", ")"));
  }
  const int64_t C = channels, H = h, W = w;
  Tensor out = Tensor::empty({C, H, W});
  float* o = out.data_ptr<float>();
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      for (int64_t c = 0; c < C; ++c) o[(c * H + y) * W + x] = float(px[(y * W + x) * C + c]) * (1.0f / 255.0f);
  stbi_image_free(px);
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
