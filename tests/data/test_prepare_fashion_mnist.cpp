// Runs scripts/prepare-fashion-mnist on a tiny fake dataset (gzipped IDX files written by python3) and
// loads its output with Manifest and Loader.
#include <gtest/gtest.h>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include "data/loader.h"
#include "helpers.h"

using loom::data::Loader;
using loom::data::LoaderConfig;
using loom::data::Manifest;
using loom::data::testing::TempDir;

namespace {

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

int run(const std::string& cmd) { return std::system(cmd.c_str()); }

TEST(PrepareFashionMnist, WritesManifestsTheLoaderReads) {
  if (run("python3 -c pass > /dev/null 2>&1") != 0) GTEST_SKIP() << "python3 not found";
  TempDir dir;
  const std::string src = dir.file("src"), out = dir.file("out");
  // 5 train images (labels 0, 9, 3, 8, 1) and 2 test images (labels 9, 2), 28x28, pixel = (k + y) % 256.
  const std::string make_idx = R"(
import gzip, struct, sys
src = sys.argv[1]
def write(name, magic, dims, body):
    with gzip.open(src + '/' + name, 'wb') as f:
        f.write(struct.pack('>I', magic) + b''.join(struct.pack('>I', d) for d in dims) + bytes(body))
for prefix, labels in (('train', [0, 9, 3, 8, 1]), ('t10k', [9, 2])):
    n = len(labels)
    write(prefix + '-images-idx3-ubyte.gz', 0x803, [n, 28, 28], [(k + y) % 256 for k in range(n) for y in range(28) for x in range(28)])
    write(prefix + '-labels-idx1-ubyte.gz', 0x801, [n], labels)
)";
  std::filesystem::create_directories(src);
  {
    std::ofstream(dir.file("make_idx.py")) << make_idx;
  }
  ASSERT_EQ(run("python3 " + dir.file("make_idx.py") + " " + src), 0);
  const std::string script = std::string(LOOM_SOURCE_DIR) + "/scripts/prepare-fashion-mnist";
  const std::string cmd = script + " --source " + src + " --out " + out + " > " + dir.file("log.txt") + " 2>&1";
  ASSERT_EQ(run(cmd), 0) << read(dir.file("log.txt"));
  EXPECT_NE(read(dir.file("log.txt")).find("wrote"), std::string::npos);
  ASSERT_EQ(run(cmd), 0);
  EXPECT_NE(read(dir.file("log.txt")).find("up to date"), std::string::npos) << read(dir.file("log.txt"));

  EXPECT_EQ(read(out + "/classes.txt"),
            "t-shirt\ntrouser\npullover\ndress\ncoat\nsandal\nshirt\nsneaker\nbag\nankle boot\n");
  EXPECT_NE(read(out + "/README.md").find("a picture of"), std::string::npos);

  Manifest test = Manifest::load(out + "/test.jsonl");
  ASSERT_EQ(test.rows.size(), 2u);
  EXPECT_EQ(test.rows[0].text, "a photo of an ankle boot.");
  EXPECT_EQ(test.rows[1].text, "a photo of a pullover.");
  EXPECT_EQ(test.rows[1].label, 2);
  EXPECT_EQ(test.rows[1].image, out + "/images/test/00001.pgm");

  auto train = std::make_shared<Manifest>(Manifest::load(out + "/train.jsonl"));
  ASSERT_EQ(train->rows.size(), 5u);
  const char* names[] = {"t-shirt", "ankle boot", "dress", "bag", "trouser"};
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_NE(train->rows[i].text.find(names[i]), std::string::npos) << train->rows[i].text;
    EXPECT_EQ(train->rows[i].text.find("a picture of"), std::string::npos);  // zero-shot templates held out
    EXPECT_EQ(train->rows[i].text.find("an image of"), std::string::npos);
  }

  LoaderConfig c;
  c.batch_size = 5;
  c.shuffle = false;
  c.workers = 1;
  c.transform.mean = {0.0};
  c.transform.std = {1.0};
  Loader loader(train, nullptr, c);
  std::optional<loom::data::Batch> b = loader.next();
  ASSERT_TRUE(b);
  EXPECT_EQ((*b)["image"].shape(), (loom::Shape{5, 1, 28, 28}));
  EXPECT_EQ((*b)["label"].to_vector<int64_t>(), (std::vector<int64_t>{0, 9, 3, 8, 1}));
  std::vector<float> px = (*b)["image"].to_vector<float>();
  EXPECT_FLOAT_EQ(px[3 * 784 + 5 * 28 + 7], float(3 + 5) / 255.0f);  // image 3, row 5
  EXPECT_EQ(loader.skipped(), 0);
}

}  // namespace
