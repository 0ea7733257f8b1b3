#include <gtest/gtest.h>
#include "core/error.h"
#include "data/manifest.h"
#include "helpers.h"

using loom::Error;
using loom::data::Manifest;
using loom::data::testing::error_of;
using loom::data::testing::TempDir;
using loom::data::testing::write_file;

namespace {

TEST(Manifest, ParsesRowsAndResolvesPaths) {
  TempDir dir;
  const std::string path = dir.file("sub/m.jsonl");
  write_file(path,
             "{\"image\": \"images/train/00001.pgm\", \"text\": \"a photo of a shirt\", \"label\": 6}\n"
             "\n"
             "   \n"
             "{\"text\": \"only text\"}\r\n"
             "{\"image\": \"/abs/x.png\", \"audio\": \"../a/b.wav\", \"label\": 0}");  // no final newline
  Manifest m = Manifest::load(path);
  EXPECT_EQ(m.path, path);
  ASSERT_EQ(m.rows.size(), 3u);
  EXPECT_EQ(m.rows[0].image, dir.file("sub/images/train/00001.pgm"));
  EXPECT_EQ(m.rows[0].text, "a photo of a shirt");
  EXPECT_EQ(m.rows[0].label, 6);
  EXPECT_TRUE(m.rows[0].audio.empty());
  EXPECT_TRUE(m.rows[1].image.empty());
  EXPECT_EQ(m.rows[1].text, "only text");
  EXPECT_EQ(m.rows[1].label, -1);
  EXPECT_EQ(m.rows[2].image, "/abs/x.png");
  EXPECT_EQ(m.rows[2].audio, dir.file("a/b.wav"));
  EXPECT_EQ(m.rows[2].label, 0);
}

TEST(Manifest, EmptyFileHasNoRows) {
  TempDir dir;
  write_file(dir.file("m.jsonl"), "");
  EXPECT_TRUE(Manifest::load(dir.file("m.jsonl")).rows.empty());
}

TEST(Manifest, BadJsonNamesFileAndLine) {
  TempDir dir;
  const std::string path = dir.file("m.jsonl");
  write_file(path, "{\"text\": \"ok\"}\n\n{\"text\": \"unterminated}\n");
  std::string msg = error_of([&] { Manifest::load(path); });
  EXPECT_NE(msg.find(path + ":3: bad JSON"), std::string::npos) << msg;
}

TEST(Manifest, WrongTypeNamesFileLineAndKey) {
  TempDir dir;
  const std::string path = dir.file("m.jsonl");
  write_file(path, "{\"text\": \"ok\", \"label\": 1}\n{\"text\": \"x\", \"label\": \"6\"}\n");
  std::string msg = error_of([&] { Manifest::load(path); });
  EXPECT_NE(msg.find(path + ":2:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"label\" must be an integer, got string"), std::string::npos) << msg;

  write_file(path, "{\"image\": 5}\n");
  msg = error_of([&] { Manifest::load(path); });
  EXPECT_NE(msg.find(path + ":1: key \"image\" must be a string, got integer"), std::string::npos) << msg;

  write_file(path, "{\"label\": 1.5}\n");
  msg = error_of([&] { Manifest::load(path); });
  EXPECT_NE(msg.find(path + ":1: key \"label\" must be an integer, got number"), std::string::npos) << msg;
}

TEST(Manifest, NonObjectLineAndUnknownKey) {
  TempDir dir;
  const std::string path = dir.file("m.jsonl");
  write_file(path, "{\"text\": \"a\"}\n[1, 2]\n");
  std::string msg = error_of([&] { Manifest::load(path); });
  EXPECT_NE(msg.find(path + ":2: expected a JSON object, got array"), std::string::npos) << msg;

  write_file(path, "{\"text\": \"a\", \"caption\": \"b\"}\n");
  msg = error_of([&] { Manifest::load(path); });
  EXPECT_NE(msg.find(path + ":1: unknown key \"caption\""), std::string::npos) << msg;
}

TEST(Manifest, MissingFileNamesPath) {
  TempDir dir;
  const std::string path = dir.file("nope.jsonl");
  std::string msg = error_of([&] { Manifest::load(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("no such file"), std::string::npos) << msg;
}

}  // namespace

// A manifest beyond the memory it may take is refused naming file and line, not loaded until the
// machine runs out (the limit is half of this machine's memory; here a small one stands in).
TEST(Manifest, BeyondItsMemoryLimitIsRefused) {
  loom::data::testing::TempDir dir;
  std::string rows;
  for (int i = 0; i < 200; ++i) rows += "{\"text\": \"row " + std::to_string(i) + "\"}\n";
  loom::data::testing::write_file(dir.file("m.jsonl"), rows);
  EXPECT_EQ(loom::data::Manifest::load(dir.file("m.jsonl")).rows.size(), 200u);
  const std::string e = loom::data::testing::error_of([&] { loom::data::Manifest::load(dir.file("m.jsonl"), 20000); });
  EXPECT_NE(e.find("m.jsonl:"), std::string::npos) << e;
  EXPECT_NE(e.find("need more than 20000 bytes of memory"), std::string::npos) << e;
}

// Found by fuzz_manifest: a number too large for a double is nlohmann's out_of_range, not its
// parse_error; it is still an error naming file and line, not an escaped exception.
TEST(Manifest, OverflowingNumberNamesFileAndLine) {
  loom::data::testing::TempDir dir;
  loom::data::testing::write_file(dir.file("m.jsonl"), "{\"text\": \"a\"}\n 3e0333333o\n");
  const std::string e = loom::data::testing::error_of([&] { loom::data::Manifest::load(dir.file("m.jsonl")); });
  EXPECT_NE(e.find("m.jsonl:2: bad JSON"), std::string::npos) << e;
}
