// WordPiece from a Hugging Face tokenizer.json (data/wordpiece.h) against the `tokenizers` package:
// tests/fixtures/bert_wordpiece/ holds a small BERT tokenizer and the ids the package gave for
// sentences with accents, CJK, emoji, punctuation runs, long words, control characters, specials in
// the text and texts longer than the context (scripts/golden/hf_wordpiece.py).
#include <gtest/gtest.h>
#include "tests/tmp_dir.h"
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include "data/wordpiece.h"

using namespace loom;
using namespace loom::data;
namespace fs = std::filesystem;

namespace {
const fs::path kDir = fs::path(LOOM_SOURCE_DIR) / "tests" / "fixtures" / "bert_wordpiece";

nlohmann::json expected() {
  std::ifstream f(kDir / "expected.json");
  return nlohmann::json::parse(f);
}
}  // namespace

TEST(WordPiece, IdsEqualTheTokenizersPackage) {
  const WordPieceTokenizer t = WordPieceTokenizer::load((kDir / "tokenizer.json").string());
  const nlohmann::json e = expected();
  const auto sentences = e.at("sentences").get<std::vector<std::string>>();
  const auto ids = e.at("ids").get<std::vector<std::vector<int64_t>>>();
  ASSERT_EQ(sentences.size(), ids.size());
  for (size_t i = 0; i < sentences.size(); ++i) {
    std::vector<int64_t> got = t.encode(sentences[i]);
    got.insert(got.begin(), t.cls_id());
    got.push_back(t.sep_id());
    EXPECT_EQ(got, ids[i]) << "sentence " << i << ": '" << sentences[i] << "'";
  }
  const int64_t context = e.at("context").get<int64_t>();
  Tensor batch_mask;
  const Tensor batch = t.encode_batch(sentences, context, &batch_mask);
  const auto want = e.at("batch_ids").get<std::vector<std::vector<int64_t>>>();
  const auto mask = e.at("batch_mask").get<std::vector<std::vector<int64_t>>>();
  const auto got = batch.to_vector<int64_t>(), got_mask = batch_mask.to_vector<int64_t>();
  for (size_t i = 0; i < sentences.size(); ++i) {
    EXPECT_EQ(std::vector<int64_t>(got.begin() + long(i) * context, got.begin() + long(i + 1) * context), want[i])
        << "batch row " << i;
    EXPECT_EQ(std::vector<int64_t>(got_mask.begin() + long(i) * context, got_mask.begin() + long(i + 1) * context), mask[i])
        << "mask row " << i;
  }
}

TEST(WordPiece, NormalisesAndSplitsAsBert) {
  const WordPieceTokenizer t = WordPieceTokenizer::load((kDir / "tokenizer.json").string());
  EXPECT_EQ(t.words("Héllo, WORLD!!"), (std::vector<std::string>{"hello", ",", "world", "!", "!"}));
  EXPECT_EQ(t.words("东京x"), (std::vector<std::string>{"东", "京", "x"}));
  EXPECT_EQ(t.words("a\tb\x01" "c"), (std::vector<std::string>{"a", "bc"}));
  EXPECT_TRUE(t.words("").empty());
  EXPECT_EQ(t.encode(std::string(101, 'a')), (std::vector<int64_t>{t.unk_id()}));  // past max_input_chars_per_word
  EXPECT_THROW(t.encode_batch({"x"}, 1), Error);
}

TEST(WordPiece, BadFilesNameThePath) {
  const fs::path dir = loom::testing_support::tmp_path("loom_wordpiece_bad");
  fs::create_directories(dir);
  auto error_of = [&](const std::string& name, const std::string& content) {
    const fs::path p = dir / name;
    std::ofstream(p) << content;
    try {
      WordPieceTokenizer::load(p.string());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  std::string e = error_of("bpe.json", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
  EXPECT_NE(e.find("bpe.json"), std::string::npos) << e;
  EXPECT_NE(e.find("not WordPiece"), std::string::npos) << e;
  e = error_of("cut.json", R"({"model": {"type": "WordPiece", "vocab": {"a": 0)");
  EXPECT_NE(e.find("cut.json: not a tokenizer.json"), std::string::npos) << e;
  e = error_of("nospecial.json", R"({"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 1}}})");
  EXPECT_NE(e.find("no [CLS] token"), std::string::npos) << e;
  e = error_of("dup.json", R"({"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 0}}})");
  EXPECT_NE(e.find("out of range or repeated"), std::string::npos) << e;
  // Found by fuzz_tokenizer: a float id was cast to an integer (undefined behaviour out of range).
  e = error_of("float.json", R"({"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 3e64}}})");
  EXPECT_NE(e.find("float.json: model.vocab id of 'a' must be an integer, got 3"), std::string::npos) << e;
  e = error_of("chars.json", R"({"model": {"type": "WordPiece", "max_input_chars_per_word": 1.5, "vocab": {"[UNK]": 0}}})");
  EXPECT_NE(e.find("chars.json: model.max_input_chars_per_word must be an integer"), std::string::npos) << e;
  EXPECT_THROW(WordPieceTokenizer::load((dir / "absent.json").string()), Error);
}
