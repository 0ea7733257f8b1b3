// CLIP's byte-level BPE from a Hugging Face tokenizer.json (data/clip_bpe.h) against the `tokenizers`
// package: tests/fixtures/clip_bpe/ holds a small tokenizer in CLIP's layout and the ids the package
// gave for sentences with accents, CJK, emoji, contractions, punctuation runs, unknown symbols, special
// tokens in the text and texts longer than the context (scripts/golden/hf_clip_bpe.py).
#include <gtest/gtest.h>
#include "tests/tmp_dir.h"
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include "data/clip_bpe.h"

using namespace loom;
using namespace loom::data;
namespace fs = std::filesystem;

namespace {
const fs::path kDir = fs::path(LOOM_SOURCE_DIR) / "tests" / "fixtures" / "clip_bpe";
}  // namespace

TEST(ClipBpe, IdsEqualTheTokenizersPackage) {
  const ClipBpeTokenizer t = ClipBpeTokenizer::load((kDir / "tokenizer.json").string());
  std::ifstream f(kDir / "expected.json");
  const nlohmann::json e = nlohmann::json::parse(f);
  const auto sentences = e.at("sentences").get<std::vector<std::string>>();
  const auto ids = e.at("ids").get<std::vector<std::vector<int64_t>>>();
  ASSERT_EQ(sentences.size(), ids.size());
  for (size_t i = 0; i < sentences.size(); ++i) {
    std::vector<int64_t> got = t.encode(sentences[i]);
    got.insert(got.begin(), t.sot_id());
    got.push_back(t.eot_id());
    EXPECT_EQ(got, ids[i]) << "sentence " << i << ": '" << sentences[i] << "'";
  }
  const int64_t context = e.at("context").get<int64_t>();
  const auto got = t.encode_batch(sentences, context).to_vector<int64_t>();
  const auto want = e.at("batch_ids").get<std::vector<std::vector<int64_t>>>();
  for (size_t i = 0; i < sentences.size(); ++i)
    EXPECT_EQ(std::vector<int64_t>(got.begin() + long(i) * context, got.begin() + long(i + 1) * context), want[i])
        << "batch row " << i;
}

TEST(ClipBpe, SplitsAsClipsPattern) {
  const ClipBpeTokenizer t = ClipBpeTokenizer::load((kDir / "tokenizer.json").string());
  EXPECT_EQ(t.pieces("It's  A dog's!? 42x"),
            (std::vector<std::string>{"it", "'s", "a", "dog", "'s", "!?", "4", "2", "x"}));
  EXPECT_EQ(t.pieces("e\xCC\x81t\xC3\xA9"), (std::vector<std::string>{"\xC3\xA9t\xC3\xA9"}));  // NFC joins e + U+0301
  EXPECT_TRUE(t.pieces(" \t\n").empty());
  EXPECT_THROW(t.encode_batch({"x"}, 1), Error);
}

TEST(ClipBpe, BadFilesNameThePath) {
  const fs::path dir = loom::testing_support::tmp_path("loom_clip_bpe_bad");
  fs::create_directories(dir);
  auto error_of = [&](const std::string& name, const std::string& content) {
    const fs::path p = dir / name;
    std::ofstream(p) << content;
    try {
      ClipBpeTokenizer::load(p.string());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  std::string e = error_of("wp.json", R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})");
  EXPECT_NE(e.find("wp.json"), std::string::npos) << e;
  EXPECT_NE(e.find("not BPE"), std::string::npos) << e;
  e = error_of("merge.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}})");
  EXPECT_NE(e.find("merge 0 ('a', 'b') names a token the vocabulary lacks"), std::string::npos) << e;
  e = error_of("nosot.json", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
  EXPECT_NE(e.find("no <|startoftext|> token"), std::string::npos) << e;
  e = error_of("cut.json", R"({"model": {"type": "BPE", "vocab": {)");
  EXPECT_NE(e.find("cut.json: not a tokenizer.json"), std::string::npos) << e;
}
