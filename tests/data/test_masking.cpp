// Token masking (BERT's MLM) and block-wise patch masking (BEiT): counts, the replacement split and the
// choice of words by chi-square over many draws, specials never touched, blocks that look like blocks,
// and the same masks in any split of the global batch.
#include <gtest/gtest.h>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include "core/error.h"
#include "data/masking.h"
#include "data/text_tokenizer.h"

using namespace loom;
using namespace loom::data;

namespace {

// A vocabulary of 200: ids 0..4 special (pad, start, end, unk, mask), 5..99 word starts, 100..199
// continuations of the word before them (as WordPiece's "##" pieces).
class FakeTokenizer final : public TextTokenizer {
 public:
  explicit FakeTokenizer(bool mask = true) : mask_(mask) {}
  std::string kind() const override { return "fake"; }
  Tensor encode_batch(const std::vector<std::string>&, int64_t) const override { return {}; }
  int64_t vocab_size() const override { return 200; }
  int64_t end_token() const override { return 2; }
  int64_t pad_token() const override { return 0; }
  int64_t start_token() const override { return 1; }
  int64_t mask_token() const override { return mask_ ? 4 : -1; }
  bool is_special(int64_t id) const override { return id < 5; }
  bool continues_word(int64_t prev, int64_t id) const override { return !is_special(prev) && id >= 100; }
  void save(const std::string&) const override {}

 private:
  bool mask_;
};

Tensor rows_of(const std::vector<std::vector<int64_t>>& rows, int64_t S) {
  std::vector<int64_t> flat;
  for (const auto& r : rows) {
    std::vector<int64_t> row = r;
    row.resize(size_t(S), 0);
    flat.insert(flat.end(), row.begin(), row.end());
  }
  return Tensor::from(flat, {int64_t(rows.size()), S}, DType::i64);
}

// Pearson's chi-square of observed counts against expected probabilities.
double chi_square(const std::vector<double>& observed, const std::vector<double>& p) {
  double n = 0, x2 = 0;
  for (double o : observed) n += o;
  for (size_t i = 0; i < observed.size(); ++i) x2 += (observed[i] - n * p[i]) * (observed[i] - n * p[i]) / (n * p[i]);
  return x2;
}

}  // namespace

TEST(TokenMasking, ChoosesTheRatioOfEachRowAndNeverASpecialToken) {
  FakeTokenizer tok;
  // Rows of 1..30 plain tokens between start and end, padded to 40.
  std::vector<std::vector<int64_t>> rows;
  for (int64_t n = 1; n <= 30; ++n) {
    std::vector<int64_t> r{1};
    for (int64_t i = 0; i < n; ++i) r.push_back(5 + (i * 7) % 95);
    r.push_back(2);
    rows.push_back(r);
  }
  const Tensor ids = rows_of(rows, 40);
  Generator gen(7);
  TokenMasking m;
  for (int draw = 0; draw < 50; ++draw) {
    MaskedTokens mt = mask_tokens(ids, tok, m, gen);
    const int64_t* in = mt.input.data_ptr<int64_t>();
    const int64_t* lab = mt.labels.data_ptr<int64_t>();
    const int64_t* src = ids.data_ptr<int64_t>();
    for (int64_t b = 0; b < ids.size(0); ++b) {
      int64_t chosen = 0;
      for (int64_t j = 0; j < 40; ++j) {
        const int64_t k = b * 40 + j;
        if (tok.is_special(src[k])) {
          EXPECT_EQ(lab[k], MaskedTokens::ignore_label) << "a special token became a target";
          EXPECT_EQ(in[k], src[k]) << "a special token was replaced";
        }
        if (lab[k] != MaskedTokens::ignore_label) {
          ++chosen;
          EXPECT_EQ(lab[k], src[k]);
          EXPECT_TRUE(in[k] == 4 || !tok.is_special(in[k])) << "replaced by a special token other than the mask";
        } else {
          EXPECT_EQ(in[k], src[k]) << "a position that is no target changed";
        }
      }
      EXPECT_EQ(chosen, std::max<int64_t>(1, std::llround(0.15 * double(b + 1)))) << "row of " << b + 1 << " tokens";
    }
  }
}

TEST(TokenMasking, ReplacesEightyTenTenByChiSquare) {
  FakeTokenizer tok;
  std::vector<std::vector<int64_t>> rows(64);
  for (auto& r : rows) {
    r.push_back(1);
    for (int64_t i = 0; i < 40; ++i) r.push_back(5 + (i * 13) % 95);
    r.push_back(2);
  }
  const Tensor ids = rows_of(rows, 42);
  Generator gen(11);
  TokenMasking m;
  std::vector<double> counts(3, 0.0);  // [mask, another token, unchanged]
  for (int draw = 0; draw < 200; ++draw) {
    MaskedTokens mt = mask_tokens(ids, tok, m, gen);
    const int64_t* in = mt.input.data_ptr<int64_t>();
    const int64_t* lab = mt.labels.data_ptr<int64_t>();
    for (int64_t k = 0; k < ids.numel(); ++k) {
      if (lab[k] == MaskedTokens::ignore_label) continue;
      counts[in[k] == 4 ? 0 : in[k] != lab[k] ? 1 : 2] += 1;
    }
  }
  // A random replacement draws one of the 195 plain ids, the original among them.
  const double same = 1.0 / 195.0;
  const std::vector<double> p{0.8, 0.1 * (1 - same), 0.1 + 0.1 * same};
  EXPECT_LT(chi_square(counts, p), 13.82) << "chi-square, 2 degrees of freedom, p = 0.001; counts " << counts[0] << " "
                                          << counts[1] << " " << counts[2];
  EXPECT_GT(counts[0] + counts[1] + counts[2], 70000);
}

TEST(TokenMasking, WholeWordsAreChosenTogetherAndAlike) {
  FakeTokenizer tok;
  // 20 words of two pieces each (a start, then a continuation): 40 tokens, 6 to choose = 3 words.
  std::vector<int64_t> r{1};
  for (int64_t w = 0; w < 20; ++w) {
    r.push_back(5 + w);
    r.push_back(100 + w);
  }
  r.push_back(2);
  const Tensor ids = rows_of({r, r, r, r}, 42);
  Generator gen(5);
  TokenMasking m;
  m.whole_word = true;
  std::vector<double> picked(20, 0.0);
  for (int draw = 0; draw < 2000; ++draw) {
    MaskedTokens mt = mask_tokens(ids, tok, m, gen);
    const int64_t* lab = mt.labels.data_ptr<int64_t>();
    for (int64_t b = 0; b < 4; ++b) {
      int64_t words = 0;
      for (int64_t w = 0; w < 20; ++w) {
        const bool a = lab[b * 42 + 1 + 2 * w] != MaskedTokens::ignore_label;
        const bool c = lab[b * 42 + 2 + 2 * w] != MaskedTokens::ignore_label;
        ASSERT_EQ(a, c) << "word " << w << " was split";
        if (a) picked[size_t(w)] += 1, ++words;
      }
      EXPECT_EQ(words, 3);
    }
  }
  EXPECT_LT(chi_square(picked, std::vector<double>(20, 1.0 / 20)), 43.82) << "chi-square, 19 degrees of freedom, p = 0.001";
}

TEST(TokenMasking, TheSameMasksInAnySplitOfTheGlobalBatch) {
  FakeTokenizer tok;
  std::vector<std::vector<int64_t>> rows(8);
  for (size_t i = 0; i < rows.size(); ++i) {
    rows[i].push_back(1);
    for (int64_t t = 0; t < 20; ++t) rows[i].push_back(5 + (int64_t(i) * 3 + t) % 95);
    rows[i].push_back(2);
  }
  const Tensor ids = rows_of(rows, 24);
  TokenMasking m;
  m.whole_word = true;
  Generator whole(9), first(9), second(9);
  MaskedTokens all = mask_tokens(ids, tok, m, whole);
  MaskedTokens a = mask_tokens(ids.narrow(0, 0, 3).contiguous(), tok, m, first, 0);
  MaskedTokens b = mask_tokens(ids.narrow(0, 3, 5).contiguous(), tok, m, second, 3);
  const int64_t* x = all.input.data_ptr<int64_t>();
  const int64_t* ya = a.input.data_ptr<int64_t>();
  const int64_t* yb = b.input.data_ptr<int64_t>();
  for (int64_t k = 0; k < 3 * 24; ++k) EXPECT_EQ(x[k], ya[k]);
  for (int64_t k = 0; k < 5 * 24; ++k) EXPECT_EQ(x[3 * 24 + k], yb[k]);
}

TEST(TokenMasking, RefusesATokenizerWithoutAMaskAndARatioOutOfRange) {
  const Tensor ids = rows_of({{1, 5, 6, 2}}, 4);
  Generator gen(1);
  FakeTokenizer none(false);
  try {
    mask_tokens(ids, none, TokenMasking{}, gen);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has none"), std::string::npos) << e.what();
  }
  FakeTokenizer tok;
  for (double r : {0.0, 1.0, -0.2, 1.5}) {
    TokenMasking m;
    m.ratio = r;
    EXPECT_THROW(mask_tokens(ids, tok, m, gen), Error) << r;
  }
}

TEST(TokenMasking, LoomBpeGainsAMaskTokenOnlyWhenAsked) {
  const std::vector<std::string> corpus{"a red circle", "two blue squares on the left", "the circle is red"};
  auto plain = train_bpe_tokenizer(corpus, 60);
  auto masked = train_bpe_tokenizer(corpus, 60, true);
  EXPECT_EQ(plain->mask_token(), -1);
  EXPECT_EQ(masked->mask_token(), 4);
  EXPECT_TRUE(masked->is_special(4));
  EXPECT_FALSE(masked->is_special(5));
  // Without the mask the ids are those of the tokenizer before it existed; with it, every id past the
  // specials moves up by one.
  const Tensor a = plain->encode_batch({"a red circle"}, 8), b = masked->encode_batch({"a red circle"}, 8);
  EXPECT_EQ(a.data_ptr<int64_t>()[1] + 1, b.data_ptr<int64_t>()[1]);
  // "circle" is one word however many pieces: every piece but its last continues it.
  const std::string path = ::testing::TempDir() + "/bpe_mask.json";
  masked->save(path);
  auto back = load_tokenizer(path);
  EXPECT_EQ(back->mask_token(), 4);
}

// ---------------------------------------------------------------- BEiT's block-wise masking

namespace {
// The sizes of the 4-connected components of one mask row.
std::vector<int64_t> components(const float* mask, int64_t gh, int64_t gw) {
  std::vector<int> seen(size_t(gh * gw), 0);
  std::vector<int64_t> sizes;
  for (int64_t p = 0; p < gh * gw; ++p) {
    if (mask[p] == 0 || seen[size_t(p)]) continue;
    int64_t n = 0;
    std::vector<int64_t> stack{p};
    seen[size_t(p)] = 1;
    while (!stack.empty()) {
      const int64_t q = stack.back();
      stack.pop_back();
      ++n;
      const int64_t i = q / gw, j = q % gw;
      const int64_t nb[4][2] = {{i - 1, j}, {i + 1, j}, {i, j - 1}, {i, j + 1}};
      for (auto& [a, c] : nb)
        if (a >= 0 && a < gh && c >= 0 && c < gw && mask[a * gw + c] != 0 && !seen[size_t(a * gw + c)]) {
          seen[size_t(a * gw + c)] = 1;
          stack.push_back(a * gw + c);
        }
    }
    sizes.push_back(n);
  }
  return sizes;
}
}  // namespace

TEST(BlockMasking, MasksExactlyTheCountInBlocks) {
  struct Case { int64_t gh, gw, count, min_block; };
  for (const Case c : {Case{14, 14, 75, 16}, Case{14, 14, 118, 16}, Case{7, 7, 20, 4}, Case{8, 16, 40, 8}}) {
    BlockMasking m;
    m.count = c.count;
    m.min_block = c.min_block;
    Generator gen(3);
    const int64_t B = 400;
    Tensor mask = block_mask(B, c.gh, c.gw, m, gen);
    ASSERT_EQ(mask.shape(), (Shape{B, c.gh * c.gw}));
    const float* o = mask.data_ptr<float>();
    double in_blocks = 0, total = 0, largest = 0;
    for (int64_t b = 0; b < B; ++b) {
      int64_t n = 0;
      for (int64_t p = 0; p < c.gh * c.gw; ++p) n += o[b * c.gh * c.gw + p] != 0;
      EXPECT_EQ(n, c.count) << c.gh << "x" << c.gw << " image " << b;
      for (int64_t s : components(o + b * c.gh * c.gw, c.gh, c.gw)) {
        if (s >= c.min_block) in_blocks += double(s);
        largest = std::max(largest, double(s));
      }
      total += double(n);
    }
    // Nearly every masked patch lies in a connected region of at least min_block patches (random
    // masking of the same count would give few such regions).
    EXPECT_GT(in_blocks / total, 0.9) << c.gh << "x" << c.gw << " count " << c.count;
    EXPECT_GE(largest, double(c.min_block));
  }
}

TEST(BlockMasking, BlocksKeepTheirAspectRatioAndCoverTheGrid) {
  // One block per image (count = min_block = max_block = 16 on a large grid, the rest filled with single
  // patches): the largest region's bounding box has an aspect ratio near [0.3, 1/0.3] (whole patches
  // round it), tall and wide blocks come alike (log-uniform aspect), and every patch gets masked.
  BlockMasking m;
  m.count = 16;
  m.min_block = 16;
  m.max_block = 16;
  Generator gen(4);
  const int64_t gh = 14, gw = 14, B = 2000;
  Tensor mask = block_mask(B, gh, gw, m, gen);
  const float* o = mask.data_ptr<float>();
  std::vector<int> hit(size_t(gh * gw), 0);
  int64_t tall = 0, wide = 0, big = 0;
  for (int64_t b = 0; b < B; ++b) {
    const float* row = o + b * gh * gw;
    for (int64_t p = 0; p < gh * gw; ++p) hit[size_t(p)] |= row[p] != 0;
    // The largest region, found again to take its bounding box.
    std::vector<int64_t> sizes = components(row, gh, gw);
    const int64_t largest = *std::max_element(sizes.begin(), sizes.end());
    if (largest >= 12) ++big;
    std::vector<int> seen(size_t(gh * gw), 0);
    for (int64_t p = 0; p < gh * gw; ++p) {
      if (row[p] == 0 || seen[size_t(p)]) continue;
      int64_t top = gh, bottom = -1, left = gw, right = -1, n = 0;
      std::vector<int64_t> stack{p};
      seen[size_t(p)] = 1;
      while (!stack.empty()) {
        const int64_t q = stack.back();
        stack.pop_back();
        ++n;
        const int64_t i = q / gw, j = q % gw;
        top = std::min(top, i), bottom = std::max(bottom, i), left = std::min(left, j), right = std::max(right, j);
        const int64_t nb[4][2] = {{i - 1, j}, {i + 1, j}, {i, j - 1}, {i, j + 1}};
        for (auto& [a, c] : nb)
          if (a >= 0 && a < gh && c >= 0 && c < gw && row[a * gw + c] != 0 && !seen[size_t(a * gw + c)]) {
            seen[size_t(a * gw + c)] = 1;
            stack.push_back(a * gw + c);
          }
      }
      if (n != largest) continue;
      const double h = double(bottom - top + 1), w = double(right - left + 1);
      EXPECT_GE(h / w, 0.2) << h << "x" << w;
      EXPECT_LE(h / w, 5.0) << h << "x" << w;
      tall += h > w, wide += w > h;
      break;
    }
  }
  EXPECT_GT(big, B * 9 / 10) << "the block is most of the 16 patches";
  EXPECT_LT(std::abs(double(tall - wide)), 0.1 * double(tall + wide)) << tall << " tall, " << wide << " wide";
  for (int64_t p = 0; p < gh * gw; ++p) EXPECT_TRUE(hit[size_t(p)]) << "patch " << p << " never masked";
}

TEST(BlockMasking, TheSameMasksInAnySplitAndClearErrors) {
  BlockMasking m;
  m.count = 20;
  m.min_block = 4;
  Generator a(8), b(8), c(8);
  Tensor all = block_mask(6, 7, 7, m, a);
  Tensor first = block_mask(2, 7, 7, m, b, 0), rest = block_mask(4, 7, 7, m, c, 2);
  for (int64_t k = 0; k < 2 * 49; ++k) EXPECT_EQ(all.data_ptr<float>()[k], first.data_ptr<float>()[k]);
  for (int64_t k = 0; k < 4 * 49; ++k) EXPECT_EQ(all.data_ptr<float>()[2 * 49 + k], rest.data_ptr<float>()[k]);
  m.count = 49;
  EXPECT_THROW(block_mask(1, 7, 7, m, a), Error);
  m.count = 10;
  m.min_aspect = 0;
  EXPECT_THROW(block_mask(1, 7, 7, m, a), Error);
}

TEST(TokenMasking, WordPieceContinuationsStayWithTheirWord) {
  auto tok = load_tokenizer((std::filesystem::path(LOOM_SOURCE_DIR) / "tests" / "fixtures" / "bert_wordpiece" / "tokenizer.json").string());
  ASSERT_GE(tok->mask_token(), 0) << "the fixture's vocabulary has [MASK]";
  const Tensor ids = tok->encode_batch({"unbelievably tokenization happens", "a dog barks while cars pass by"}, 24);
  TokenMasking m;
  m.whole_word = true;
  m.ratio = 0.3;
  Generator gen(2);
  int split_words = 0, continuations = 0;
  for (int draw = 0; draw < 300; ++draw) {
    MaskedTokens mt = mask_tokens(ids, *tok, m, gen);
    const int64_t* src = ids.data_ptr<int64_t>();
    const int64_t* lab = mt.labels.data_ptr<int64_t>();
    for (int64_t k = 1; k < ids.numel(); ++k) {
      if (k % 24 == 0 || !tok->continues_word(src[k - 1], src[k])) continue;
      ++continuations;
      split_words += (lab[k] == MaskedTokens::ignore_label) != (lab[k - 1] == MaskedTokens::ignore_label);
    }
  }
  EXPECT_GT(continuations, 0) << "the sentences hold ## pieces";
  EXPECT_EQ(split_words, 0);
}
