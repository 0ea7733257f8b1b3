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

using loom::Tensor;
using loom::data::decode_image;
using loom::data::testing::error_of;
using loom::data::testing::TempDir;
using loom::data::testing::write_file;
using loom::data::testing::write_pgm;

namespace {

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

// Found by fuzz_image under UBSan: a JPEG whose Huffman table declares more than 256 codes made
// stb_image write past its table; it is refused before stb sees it.
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
  EXPECT_NE(e.find("bad.jpg: corrupt image (a JPEG Huffman table declares " + std::to_string(codes) + " codes"), std::string::npos) << e;
}
