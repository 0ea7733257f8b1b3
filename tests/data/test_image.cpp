#include <gtest/gtest.h>
#include "data/image.h"
#include "helpers.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <jpeglib.h>

using loom::Tensor;
using loom::data::decode_image;
using loom::data::testing::error_of;
using loom::data::testing::TempDir;
using loom::data::testing::write_file;
using loom::data::testing::write_pgm;

namespace {

Tensor decode_bytes(const std::string& b, int64_t channels, const std::string& name = "x.jpg") {
  return loom::data::decode_image_bytes(reinterpret_cast<const unsigned char*>(b.data()), b.size(), channels, name);
}

TEST(Image, DecodesPgmToChw) {
  TempDir dir;
  const std::string path = dir.file("a.pgm");
  write_pgm(path, 3, 2, {0, 51, 102, 153, 204, 255});
  Tensor t = decode_image(path, 1);
  ASSERT_EQ(t.shape(), (loom::Shape{1, 2, 3}));
  EXPECT_EQ(t.dtype(), loom::DType::f32);
  std::vector<float> v = t.to_vector<float>();
  const float want[] = {0.0f, 0.2f, 0.4f, 0.6f, 0.8f, 1.0f};
  for (int i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(v[size_t(i)], want[i]);

  // Grey to RGB replicates the channel.
  Tensor rgb = decode_image(path, 3);
  ASSERT_EQ(rgb.shape(), (loom::Shape{3, 2, 3}));
  std::vector<float> r = rgb.to_vector<float>();
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(r[size_t(c * 6 + i)], want[i]);
}

// Binary PGM/PPM of 16 bits and of small maxvals scale to [0, 1]; a 16-bit grey image to RGB read
// past stb's buffer (found by fuzz_image), loom reads PNM itself.
TEST(Image, DecodesSixteenBitAndSmallMaxvalPnm) {
  const std::string pgm16 = std::string("P5\n2 1\n65535\n") + std::string("\xFF\xFF\x80\x00", 4);
  const std::vector<float> v = decode_bytes(pgm16, 3, "a.pgm").to_vector<float>();
  ASSERT_EQ(v.size(), 6u);
  EXPECT_FLOAT_EQ(v[0], 1.f);
  EXPECT_FLOAT_EQ(v[1], 128 / 255.f);  // 32768 of 65535
  EXPECT_FLOAT_EQ(v[4], 1.f);          // blue replicates grey
  const std::string ppm15 = std::string("P6 1 1 15 ") + std::string("\x0F\x00\x05", 3);
  const std::vector<float> w = decode_bytes(ppm15, 3, "b.ppm").to_vector<float>();
  EXPECT_FLOAT_EQ(w[0], 1.f);
  EXPECT_FLOAT_EQ(w[1], 0.f);
  EXPECT_FLOAT_EQ(w[2], 85 / 255.f);
  EXPECT_FLOAT_EQ(decode_bytes(ppm15, 1, "b.ppm").to_vector<float>()[0], ((255 * 77 + 85 * 29) >> 8) / 255.f);
  for (const char* bad : {"P5\n0 1\n255\n", "P5\n1 1\n0\n\x01", "P5\n1 1\n70000\n\x01\x01", "P5\n1 1 255"}) {
    const std::string e = error_of([&] { decode_bytes(bad, 1, "c.pgm"); });
    EXPECT_EQ(e.rfind("c.pgm: corrupt", 0), 0u) << e;
  }
}

TEST(Image, DecodesPngChannelsPlanar) {
  TempDir dir;
  const std::string path = dir.file("b.png");
  // 2x1 RGB: red, then (10, 20, 30).
  const unsigned char px[] = {255, 0, 0, 10, 20, 30};
  ASSERT_NE(stbi_write_png(path.c_str(), 2, 1, 3, px, 6), 0);
  Tensor t = decode_image(path, 3);
  ASSERT_EQ(t.shape(), (loom::Shape{3, 1, 2}));
  std::vector<float> v = t.to_vector<float>();
  const float want[] = {1.0f, 10 / 255.0f, 0.0f, 20 / 255.0f, 0.0f, 30 / 255.0f};  // [C][W]
  for (int i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(v[size_t(i)], want[i]);
  EXPECT_EQ(decode_image(path, 1).shape(), (loom::Shape{1, 1, 2}));
  EXPECT_EQ(decode_image(path, 4).shape(), (loom::Shape{4, 1, 2}));
  EXPECT_FLOAT_EQ(decode_image(path, 4).to_vector<float>()[7], 1.0f);  // opaque alpha
}

TEST(Image, MissingFileNamesPath) {
  TempDir dir;
  const std::string path = dir.file("missing.png");
  std::string msg = error_of([&] { decode_image(path, 1); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("no such file"), std::string::npos) << msg;
}

TEST(Image, CorruptFilesNamePath) {
  TempDir dir;
  const std::string garbage = dir.file("garbage.png");
  write_file(garbage, "this is not an image at all");
  std::string msg = error_of([&] { decode_image(garbage, 1); });
  EXPECT_NE(msg.find(garbage + ": corrupt"), std::string::npos) << msg;

  const std::string truncated = dir.file("truncated.pgm");
  write_file(truncated, "P5\n28 28\n255\nabc");  // header promises 784 pixels
  msg = error_of([&] { decode_image(truncated, 1); });
  EXPECT_NE(msg.find(truncated + ": corrupt"), std::string::npos) << msg;

  const std::string empty = dir.file("empty.pgm");
  write_file(empty, "");
  msg = error_of([&] { decode_image(empty, 1); });
  EXPECT_NE(msg.find(empty), std::string::npos) << msg;

  // Found by fuzz_image: a PPM header of 13-digit sizes overflowed the truncation check's product.
  const std::string absurd = dir.file("absurd.ppm");
  write_file(absurd, "P6\n1912594444444 1510191259405 255\n");
  msg = error_of([&] { decode_image(absurd, 3); });
  EXPECT_NE(msg.find(absurd + ": the image claims 1912594444444x1510191259405 pixels"), std::string::npos) << msg;

  std::string bad_channels = error_of([&] { decode_image(garbage, 5); });
  EXPECT_NE(bad_channels.find("channels"), std::string::npos) << bad_channels;
}

}  // namespace

// A 45-byte PNG whose header claims 10000 x 10000 (or 100000 x 100000) pixels is refused, naming
// the file, before anything is allocated.
TEST(Image, HugeClaimedSizeIsRefused) {
  auto png_of = [](uint32_t side) {
    std::string png("\x89PNG\r\n\x1a\n", 8);
    auto be32 = [](uint32_t v) { return std::string{char(v >> 24), char(v >> 16), char(v >> 8), char(v)}; };
    png += be32(13) + "IHDR" + be32(side) + be32(side) + std::string("\x08\x02\x00\x00\x00", 5) + be32(0);
    return png + be32(0) + "IDAT" + be32(0);
  };
  for (uint32_t side : {10000u, 100000u}) {
    const std::string png = png_of(side);
    const std::string e = error_of([&] {
      loom::data::decode_image_bytes(reinterpret_cast<const unsigned char*>(png.data()), png.size(), 3, "huge.png");
    });
    EXPECT_EQ(e.rfind("huge.png: ", 0), 0u) << e;
    if (side == 10000u) {
      EXPECT_NE(e.find("the image claims 10000x10000 pixels, more than loom decodes"), std::string::npos) << e;
    }
  }
}

namespace {
// A JPEG from libjpeg's encoder: interleaved 8-bit pixels of `space` (JCS_GRAYSCALE, JCS_RGB, JCS_CMYK).
std::string encode_jpeg(int width, int height, J_COLOR_SPACE space, const std::vector<unsigned char>& px,
                        bool progressive = false, bool adobe_cmyk = false) {
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buffer, &size);
  c.image_width = JDIMENSION(width);
  c.image_height = JDIMENSION(height);
  c.input_components = space == JCS_GRAYSCALE ? 1 : space == JCS_RGB ? 3 : 4;
  c.in_color_space = space;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 100, TRUE);
  if (progressive) jpeg_simple_progression(&c);
  c.write_Adobe_marker = adobe_cmyk ? TRUE : FALSE;
  jpeg_start_compress(&c, TRUE);
  const int row = width * c.input_components;
  while (c.next_scanline < c.image_height) {
    JSAMPROW line = const_cast<unsigned char*>(px.data()) + size_t(row) * c.next_scanline;
    jpeg_write_scanlines(&c, &line, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::string out(reinterpret_cast<char*>(buffer), size);
  std::free(buffer);
  return out;
}

// A smooth RGB test card (JPEG keeps smooth content nearly exactly at quality 100).
std::vector<unsigned char> test_card(int W, int H) {
  std::vector<unsigned char> px(size_t(W * H * 3));
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      unsigned char* p = px.data() + (y * W + x) * 3;
      p[0] = (unsigned char)(40 + 4 * x), p[1] = (unsigned char)(200 - 3 * y), p[2] = (unsigned char)(90 + x + y);
    }
  return px;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}
}  // namespace

// JPEGs decode with libjpeg-turbo: baseline and progressive, to 1-4 channels, planar, in [0, 1].
TEST(Image, DecodesJpegBaselineAndProgressive) {
  const int W = 40, H = 24;
  const std::vector<unsigned char> card = test_card(W, H);
  std::vector<float> want(size_t(3 * H * W));
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < H * W; ++i) want[size_t(c * H * W + i)] = float(card[size_t(i * 3 + c)]) / 255.f;
  for (bool progressive : {false, true}) {
    const std::string jpg = encode_jpeg(W, H, JCS_RGB, card, progressive);
    Tensor rgb = decode_bytes(jpg, 3);
    ASSERT_EQ(rgb.shape(), (loom::Shape{3, H, W}));
    EXPECT_LT(max_abs_diff(rgb.to_vector<float>(), want), 4.f / 255.f) << "progressive " << progressive;
    Tensor rgba = decode_bytes(jpg, 4);
    ASSERT_EQ(rgba.shape(), (loom::Shape{4, H, W}));
    const std::vector<float> v = rgba.to_vector<float>();
    EXPECT_LT(max_abs_diff(std::vector<float>(v.begin(), v.begin() + 3 * H * W), want), 4.f / 255.f);
    for (int i = 0; i < H * W; ++i) ASSERT_EQ(v[size_t(3 * H * W + i)], 1.f);  // opaque alpha
    Tensor grey = decode_bytes(jpg, 1);
    ASSERT_EQ(grey.shape(), (loom::Shape{1, H, W}));
    const float luma = 0.299f * want[0] + 0.587f * want[size_t(H * W)] + 0.114f * want[size_t(2 * H * W)];
    EXPECT_NEAR(grey.to_vector<float>()[0], luma, 4.f / 255.f);
    EXPECT_EQ(decode_bytes(jpg, 2).shape(), (loom::Shape{2, H, W}));
  }
  // A grey JPEG replicates to RGB.
  std::vector<unsigned char> g(size_t(W * H));
  for (int i = 0; i < W * H; ++i) g[size_t(i)] = (unsigned char)(i % W * 5);
  const std::vector<float> rgb = decode_bytes(encode_jpeg(W, H, JCS_GRAYSCALE, g), 3).to_vector<float>();
  for (int i = 0; i < H * W; ++i) {
    ASSERT_NEAR(rgb[size_t(i)], g[size_t(i)] / 255.f, 3.f / 255.f);
    ASSERT_EQ(rgb[size_t(i)], rgb[size_t(2 * H * W + i)]);
  }
}

// CMYK JPEGs (Adobe's inverted ones, as Photoshop writes them, and plain ones) come out as RGB.
TEST(Image, DecodesCmykJpegToRgb) {
  const int W = 16, H = 8;
  for (bool adobe : {true, false}) {
    // The colour (R, G, B) = (200, 100, 50) with K = 0 for plain CMYK: C = 255 - R, ...; Adobe
    // stores the inverted values (R, G, B, 255).
    std::vector<unsigned char> px;
    for (int i = 0; i < W * H; ++i) {
      if (adobe) px.insert(px.end(), {200, 100, 50, 255});
      else px.insert(px.end(), {55, 155, 205, 0});
    }
    const std::string jpg = encode_jpeg(W, H, JCS_CMYK, px, false, adobe);
    const std::vector<float> v = decode_bytes(jpg, 3).to_vector<float>();
    EXPECT_NEAR(v[0], 200 / 255.f, 3.f / 255.f) << "adobe " << adobe;
    EXPECT_NEAR(v[size_t(H * W)], 100 / 255.f, 3.f / 255.f) << "adobe " << adobe;
    EXPECT_NEAR(v[size_t(2 * H * W)], 50 / 255.f, 3.f / 255.f) << "adobe " << adobe;
  }
}

// A truncated or damaged JPEG is an error naming the file, never a half-grey image; a header that
// claims more pixels than loom decodes is refused before anything is allocated.
TEST(Image, BadJpegsAreRefused) {
  const int W = 64, H = 64;
  const std::string jpg = encode_jpeg(W, H, JCS_RGB, test_card(W, H));
  std::string e = error_of([&] { decode_bytes(jpg.substr(0, jpg.size() / 2), 3, "half.jpg"); });
  EXPECT_NE(e.find("half.jpg: corrupt or unsupported image (JPEG: Premature end of JPEG file)"), std::string::npos) << e;
  e = error_of([&] { decode_bytes(jpg.substr(0, 100), 3, "header.jpg"); });
  EXPECT_EQ(e.rfind("header.jpg: corrupt or unsupported image (JPEG: ", 0), 0u) << e;
  e = error_of([&] { decode_bytes(std::string("\xFF\xD8", 2), 3, "soi.jpg"); });
  EXPECT_EQ(e.rfind("soi.jpg: corrupt or unsupported image (JPEG: ", 0), 0u) << e;

  std::string huge = jpg;  // the frame header (FF C0, length, precision, height, width) rewritten
  const size_t sof = huge.find(std::string("\xFF\xC0", 2));
  ASSERT_NE(sof, std::string::npos);
  huge[sof + 5] = huge[sof + 7] = char(0x7F);  // 32767 x 32767
  huge[sof + 6] = huge[sof + 8] = char(0xFF);
  e = error_of([&] { decode_bytes(huge, 3, "huge.jpg"); });
  EXPECT_NE(e.find("huge.jpg: the image claims 32767x32767 pixels, more than loom decodes"), std::string::npos) << e;
}

// Found by fuzz_image's memory limit: a 79-byte PNG whose IDAT chunk claims ~2 GB made stb allocate
// it before reading; the chunk lengths are checked against the file first.
TEST(Image, PngChunkLongerThanTheFileIsRefused) {
  const unsigned char px[] = {1, 2, 3, 4, 5, 6};
  int len = 0;
  unsigned char* png = stbi_write_png_to_mem(px, 6, 2, 1, 3, &len);
  ASSERT_NE(png, nullptr);
  std::string good(reinterpret_cast<char*>(png), size_t(len));
  STBIW_FREE(png);
  EXPECT_EQ(decode_bytes(good, 3, "good.png").shape(), (loom::Shape{3, 1, 2}));
  std::string bad = good;
  const size_t idat = bad.find("IDAT");
  ASSERT_NE(idat, std::string::npos);
  bad[idat - 4] = char(0x7F);  // the length's top byte: ~2 GB
  const std::string e = error_of([&] { decode_bytes(bad, 3, "bad.png"); });
  EXPECT_NE(e.find("bad.png: corrupt image (a PNG chunk claims 21"), std::string::npos) << e;
}

// Found by fuzz_image under UBSan: a JPEG whose Huffman table declares more than 256 codes made
// Debian's stb_image write past its table. libjpeg-turbo, which decodes JPEGs now, refuses it.
TEST(Image, JpegHuffmanTableWithTooManyCodesIsRefused) {
  std::string jpg("\xFF\xD8", 2);
  std::string dht("\x00", 1);  // class 0, id 0
  for (int k = 0; k < 16; ++k) dht += char(k < 2 ? 0 : 17);
  dht[1 + 2] = char(60);  // 13 x 17 + 60 = 281 codes
  size_t codes = 0;
  for (int k = 1; k <= 16; ++k) codes += static_cast<unsigned char>(dht[size_t(k)]);
  dht += std::string(codes, '\x01');
  const size_t len = dht.size() + 2;
  jpg += std::string("\xFF\xC4", 2) + char(len >> 8) + char(len & 0xFF) + dht + std::string("\xFF\xD9", 2);
  const std::string e = error_of([&] {
    loom::data::decode_image_bytes(reinterpret_cast<const unsigned char*>(jpg.data()), jpg.size(), 3, "bad.jpg");
  });
  EXPECT_NE(e.find("bad.jpg: corrupt or unsupported image (JPEG: Bogus Huffman table definition)"), std::string::npos) << e;
}

// loom decodes JPEGs to the same pixels as Pillow (fixtures from scripts/golden/jpeg_pillow.py:
// Pillow 13 with libjpeg-turbo 3.2; loom links Debian's 2.1): 4:2:0, 4:2:2, 4:4:4, progressive and
// grey, at an odd size so the chroma upsampling's edges count.
TEST(Image, JpegDecodesAsPillowDoes) {
  const std::string dir = std::string(LOOM_SOURCE_DIR) + "/tests/fixtures/jpeg_pillow/";
  for (const char* name : {"q90_420", "q75_422", "q95_444", "q80_progressive", "grey"}) {
    const int64_t channels = std::string(name) == "grey" ? 1 : 3;
    const Tensor got = decode_image(dir + name + ".jpg", channels), want = decode_image(dir + name + ".png", channels);
    ASSERT_EQ(got.shape(), want.shape()) << name;
    EXPECT_EQ(got.shape(), (loom::Shape{channels, 29, 37})) << name;
    EXPECT_EQ(max_abs_diff(got.to_vector<float>(), want.to_vector<float>()), 0.f) << name;
  }
}
