#include <gtest/gtest.h>
#include "data/bpe_tokenizer.h"
#include "helpers.h"

using loom::Tensor;
using loom::data::BpeTokenizer;
using loom::data::pretokenize;
using loom::data::testing::error_of;
using loom::data::testing::TempDir;
using loom::data::testing::write_file;

namespace {

std::vector<std::string> corpus() {
  std::vector<std::string> c;
  const char* classes[] = {"t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"};
  for (int r = 0; r < 3; ++r)
    for (const char* k : classes) {
      c.push_back(std::string("a photo of a ") + k);
      c.push_back(std::string("A grayscale picture of a ") + k + ".");
    }
  return c;
}

TEST(Tokenizer, Pretokenize) {
  EXPECT_EQ(pretokenize("  A Photo, of a T-shirt!\n"),
            (std::vector<std::string>{"a", "photo", ",", "of", "a", "t", "-", "shirt", "!"}));
  EXPECT_EQ(pretokenize("caf\xc3\xa9 42x"), (std::vector<std::string>{"caf\xc3\xa9", "42x"}));
  EXPECT_TRUE(pretokenize(" \t\n").empty());
}

TEST(Tokenizer, TrainEncodeDecodeRoundTrip) {
  BpeTokenizer tok = BpeTokenizer::train(corpus(), 200);
  EXPECT_LE(tok.vocab_size(), 200);
  EXPECT_EQ(tok.vocab()[0], "<pad>");
  EXPECT_EQ(tok.vocab()[3], "<unk>");
  // Frequent words become single tokens.
  std::vector<int64_t> ids = tok.encode("a photo of a pullover");
  EXPECT_EQ(ids.size(), 5u);
  for (int64_t id : ids) EXPECT_GT(id, BpeTokenizer::unk_id);
  EXPECT_EQ(tok.decode(ids), "a photo of a pullover");
  EXPECT_EQ(tok.decode(tok.encode("A  PHOTO of a t-shirt.")), "a photo of a t - shirt .");
  // An unseen word made of known characters still encodes without unk and round-trips.
  std::vector<int64_t> novel = tok.encode("gadget");
  for (int64_t id : novel) EXPECT_NE(id, BpeTokenizer::unk_id);
  EXPECT_EQ(tok.decode(novel), "gadget");
  // Training is deterministic.
  BpeTokenizer again = BpeTokenizer::train(corpus(), 200);
  EXPECT_EQ(again.vocab(), tok.vocab());
  EXPECT_EQ(again.merges(), tok.merges());
}

TEST(Tokenizer, UnknownCharactersMapToUnk) {
  BpeTokenizer tok = BpeTokenizer::train(corpus(), 200);
  std::vector<int64_t> ids = tok.encode("a photo of a zebra");  // no 'z' in the corpus
  EXPECT_NE(std::find(ids.begin(), ids.end(), BpeTokenizer::unk_id), ids.end());
  EXPECT_EQ(tok.decode(ids).find("a photo of a "), 0u);
  EXPECT_NE(tok.decode(ids).find("<unk>"), std::string::npos);
}

TEST(Tokenizer, SmallVocabularyStopsMerging) {
  std::vector<std::string> c = {"ab ab ab", "abc"};
  // Base symbols: a, b, b</w>, c</w> -> 8 with the specials; a vocab below that is an error.
  EXPECT_NE(error_of([&] { BpeTokenizer::train(c, 7); }).find("vocab_size 7"), std::string::npos);
  BpeTokenizer tok = BpeTokenizer::train(c, 9);
  EXPECT_EQ(tok.vocab_size(), 9);
  ASSERT_EQ(tok.merges().size(), 1u);
  EXPECT_EQ(tok.merges()[0], (std::pair<std::string, std::string>{"a", "b</w>"}));
  BpeTokenizer big = BpeTokenizer::train(c, 1000);  // stops when no pair occurs twice
  EXPECT_LT(big.vocab_size(), 1000);
}

TEST(Tokenizer, EncodeBatchPadsAndTruncatesKeepingEot) {
  BpeTokenizer tok = BpeTokenizer::train(corpus(), 200);
  const int64_t P = BpeTokenizer::pad_id, S = BpeTokenizer::sot_id, E = BpeTokenizer::eot_id;
  std::vector<int64_t> five = tok.encode("a photo of a coat");
  ASSERT_EQ(five.size(), 5u);
  Tensor t = tok.encode_batch({"a photo of a coat", "", "a photo of a coat"}, 8);
  ASSERT_EQ(t.shape(), (loom::Shape{3, 8}));
  EXPECT_EQ(t.dtype(), loom::DType::i64);
  std::vector<int64_t> v = t.to_vector<int64_t>();
  std::vector<int64_t> row0(v.begin(), v.begin() + 8), row1(v.begin() + 8, v.begin() + 16);
  EXPECT_EQ(row0, (std::vector<int64_t>{S, five[0], five[1], five[2], five[3], five[4], E, P}));
  EXPECT_EQ(row1, (std::vector<int64_t>{S, E, P, P, P, P, P, P}));

  std::vector<int64_t> cut = tok.encode_batch({"a photo of a coat"}, 4).to_vector<int64_t>();
  EXPECT_EQ(cut, (std::vector<int64_t>{S, five[0], five[1], E}));
  std::vector<int64_t> exact = tok.encode_batch({"a photo of a coat"}, 7).to_vector<int64_t>();
  EXPECT_EQ(exact.back(), E);
  EXPECT_EQ(exact[5], five[4]);
  EXPECT_NE(error_of([&] { tok.encode_batch({"x"}, 1); }).find("context"), std::string::npos);
  EXPECT_EQ(tok.decode(v), "a photo of a coat a photo of a coat");  // specials dropped
}

TEST(Tokenizer, SaveLoadRoundTrip) {
  TempDir dir;
  BpeTokenizer tok = BpeTokenizer::train(corpus(), 150);
  const std::string path = dir.file("tok.json");
  tok.save(path);
  BpeTokenizer back = BpeTokenizer::load(path);
  EXPECT_EQ(back.vocab(), tok.vocab());
  EXPECT_EQ(back.merges(), tok.merges());
  for (const std::string& s : corpus()) EXPECT_EQ(back.encode(s), tok.encode(s));
  EXPECT_EQ(back.encode("zzz sneaker"), tok.encode("zzz sneaker"));
}

TEST(Tokenizer, BrokenFilesNameThePath) {
  TempDir dir;
  const std::string path = dir.file("tok.json");
  auto expect_error = [&](const std::string& contents, const std::string& what) {
    write_file(path, contents);
    std::string msg = error_of([&] { BpeTokenizer::load(path); });
    EXPECT_NE(msg.find(path + ":"), std::string::npos) << contents << " -> " << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << contents << " -> " << msg;
  };
  const std::string specials = R"("<pad>", "<sot>", "<eot>", "<unk>")";
  expect_error("{\"type\": \"loom-bpe\", ", "bad JSON");
  expect_error("[1]", "JSON object");
  expect_error(R"({"type": "other", "version": 1, "vocab": [], "merges": []})", "type");
  expect_error(R"({"type": "loom-bpe", "version": 2, "vocab": [], "merges": []})", "version");
  expect_error(R"({"type": "loom-bpe", "version": 1, "vocab": [)" + specials + R"(], "merges": [], "extra": 1})", "unknown key \"extra\"");
  expect_error(R"({"type": "loom-bpe", "version": 1, "vocab": ["<pad>"], "merges": []})", "4 special");
  expect_error(R"({"type": "loom-bpe", "version": 1, "vocab": ["<pad>", "<sot>", "<unk>", "<eot>"], "merges": []})", "vocab[2]");
  expect_error(R"({"type": "loom-bpe", "version": 1, "vocab": [)" + specials + R"(, "a", 5], "merges": []})", "vocab[5]");
  expect_error(R"({"type": "loom-bpe", "version": 1, "vocab": [)" + specials + R"(, "a", "a"], "merges": []})", "duplicate");
  expect_error(R"({"type": "loom-bpe", "version": 1, "vocab": [)" + specials + R"(, "a", "b"], "merges": [["a", "b"]]})", "merges[0]");
  expect_error(R"({"type": "loom-bpe", "version": 1, "vocab": [)" + specials + R"(, "a"], "merges": ["ab"]})", "merges[0]");
  expect_error(R"({"type": "loom-bpe", "version": 1, "vocab": {}, "merges": []})", "vocab");

  std::string missing = dir.file("none.json");
  std::string msg = error_of([&] { BpeTokenizer::load(missing); });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;
}

}  // namespace
