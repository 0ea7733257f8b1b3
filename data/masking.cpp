#include "data/masking.h"
#include <algorithm>
#include <cmath>
#include <numeric>
#include "core/error.h"
#include "data/random.h"

namespace loom::data {
namespace {

using detail::Stream;

// The stream of global row `row` in the draw that reserved `first`.
Stream row_stream(const Generator& gen, uint64_t first, int64_t row) {
  return Stream(detail::combine(detail::combine(gen.seed(), first), uint64_t(row)));
}

// Fisher–Yates.
template <class T>
void shuffle(std::vector<T>& v, Stream& s) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(s.below(i))]);
}

}  // namespace

MaskedTokens mask_tokens(const Tensor& ids_in, const TextTokenizer& tok, const TokenMasking& m, Generator& gen,
                         int64_t row_offset) {
  LOOM_CHECK(tok.mask_token() >= 0, "masked language modelling needs a mask token, and this ", tok.kind(),
             " tokenizer has none");
  LOOM_CHECK(m.ratio > 0 && m.ratio < 1, "mask ratio must be in (0, 1), got ", m.ratio);
  LOOM_CHECK(m.to_mask >= 0 && m.to_random >= 0 && m.to_mask + m.to_random <= 1, "the mask and random fractions (",
             m.to_mask, ", ", m.to_random, ") must be >= 0 and sum to at most 1");
  LOOM_CHECK(ids_in.dim() == 2 && ids_in.dtype() == DType::i64, "mask_tokens: ids must be i64 [B, S], got ",
             ids_in.describe());
  const Tensor ids = ids_in.to(Device::cpu()).contiguous();
  const int64_t B = ids.size(0), S = ids.size(1), V = tok.vocab_size();
  std::vector<int64_t> normal;  // the ids a random replacement draws from
  for (int64_t v = 0; v < V; ++v)
    if (!tok.is_special(v)) normal.push_back(v);
  LOOM_CHECK(!normal.empty(), "mask_tokens: the vocabulary holds only special tokens");

  MaskedTokens out;
  out.input = ids.clone();
  out.labels = Tensor::full({B, S}, double(MaskedTokens::ignore_label), DType::i64);
  const int64_t* src = ids.data_ptr<int64_t>();
  int64_t* in = out.input.data_ptr<int64_t>();
  int64_t* lab = out.labels.data_ptr<int64_t>();
  const uint64_t first = gen.reserve(4);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* row = src + b * S;
    Stream s = row_stream(gen, first, row_offset + b);
    // Words: runs of maskable positions, a token joining the previous one's word where it continues it.
    std::vector<std::vector<int64_t>> words;
    int64_t maskable = 0;
    for (int64_t j = 0; j < S; ++j) {
      const int64_t id = row[j];
      if (id == tok.pad_token() || tok.is_special(id)) continue;
      ++maskable;
      const bool joins = m.whole_word && j > 0 && !words.empty() && words.back().back() == j - 1 && tok.continues_word(row[j - 1], id);
      if (joins) words.back().push_back(j);
      else words.push_back({j});
    }
    if (maskable == 0) continue;
    const int64_t want = std::max<int64_t>(1, int64_t(std::llround(m.ratio * double(maskable))));
    shuffle(words, s);
    int64_t taken = 0;
    for (const auto& w : words) {
      if (taken >= want) break;
      if (taken + int64_t(w.size()) > want && taken > 0) continue;  // a word that would overshoot is skipped
      for (int64_t j : w) {
        lab[b * S + j] = row[j];
        const double u = s.uniform();
        if (u < m.to_mask) in[b * S + j] = tok.mask_token();
        else if (u < m.to_mask + m.to_random) in[b * S + j] = normal[size_t(s.below(normal.size()))];
      }
      taken += int64_t(w.size());
    }
    out.chosen += taken;
  }
  return out;
}

Tensor block_mask(int64_t B, int64_t gh, int64_t gw, const BlockMasking& m, Generator& gen, int64_t row_offset) {
  const int64_t N = gh * gw;
  LOOM_CHECK(gh > 0 && gw > 0, "block masking: the patch grid ", gh, "x", gw, " is empty");
  LOOM_CHECK(m.count > 0 && m.count < N, "block masking: ", m.count, " masked patches do not fit a ", gh, "x", gw,
             " grid (at least 1, fewer than ", N, ")");
  LOOM_CHECK(m.min_block >= 1, "block masking: min_block must be >= 1, got ", m.min_block);
  LOOM_CHECK(m.min_aspect > 0 && m.min_aspect <= 1, "block masking: min_aspect must be in (0, 1], got ", m.min_aspect);
  const int64_t max_block = m.max_block < 0 ? m.count : m.max_block;
  LOOM_CHECK(max_block >= m.min_block, "block masking: max_block ", max_block, " is below min_block ", m.min_block);
  const double log_lo = std::log(m.min_aspect), log_hi = -std::log(m.min_aspect);
  Tensor out = Tensor::zeros({B, N}, DType::f32);
  float* o = out.data_ptr<float>();
  const uint64_t first = gen.reserve(4);
  for (int64_t b = 0; b < B; ++b) {
    float* mask = o + b * N;
    Stream s = row_stream(gen, first, row_offset + b);
    int64_t masked = 0;
    // One block: up to 10 tries at a rectangle that adds patches without passing `budget` (BEiT's _mask).
    auto one_block = [&](int64_t budget) -> int64_t {
      for (int attempt = 0; attempt < 10; ++attempt) {
        const double area = double(m.min_block) + s.uniform() * double(budget - m.min_block);
        const double aspect = std::exp(log_lo + s.uniform() * (log_hi - log_lo));
        const int64_t h = std::llround(std::sqrt(area * aspect)), w = std::llround(std::sqrt(area / aspect));
        if (!(h >= 1 && w >= 1 && h < gh && w < gw)) continue;
        const int64_t top = int64_t(s.below(uint64_t(gh - h + 1))), left = int64_t(s.below(uint64_t(gw - w + 1)));
        int64_t fresh = 0;
        for (int64_t i = top; i < top + h; ++i)
          for (int64_t j = left; j < left + w; ++j) fresh += mask[i * gw + j] == 0.0f;
        if (fresh == 0 || fresh > budget) continue;
        for (int64_t i = top; i < top + h; ++i)
          for (int64_t j = left; j < left + w; ++j) mask[i * gw + j] = 1.0f;
        return fresh;
      }
      return 0;
    };
    int stuck = 0;
    while (masked < m.count && stuck < 10) {
      const int64_t added = one_block(std::min(m.count - masked, max_block));
      masked += added;
      stuck = added == 0 ? stuck + 1 : 0;
    }
    // What blocks could not reach (a remainder below min_block fits nowhere) is filled with single
    // patches drawn at random, as BEiT v2 keeps the count fixed.
    if (masked < m.count) {
      std::vector<int64_t> open;
      for (int64_t p = 0; p < N; ++p)
        if (mask[p] == 0.0f) open.push_back(p);
      shuffle(open, s);
      for (int64_t i = 0; i < m.count - masked; ++i) mask[open[size_t(i)]] = 1.0f;
    }
  }
  return out;
}

}  // namespace loom::data
