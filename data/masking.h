// Which positions a masked-modelling task hides: BERT's token masking for masked language modelling
// (Devlin et al. 2019), with whole-word masking as Google's later release does it, and BEiT's block-wise
// patch masking (Bao et al. 2021). Every draw is a pure function of (seed, draw, global row), so a row
// gets the same mask whether it is trained in one process or in any of several (data parallelism).
#pragma once
#include <cstdint>
#include <vector>
#include "core/rng.h"
#include "core/tensor.h"
#include "data/text_tokenizer.h"

namespace loom::data {

struct TokenMasking {
  double ratio = 0.15;          // of a row's maskable tokens (never a special one, never padding)
  double to_mask = 0.8;         // of the chosen: replaced by the mask token
  double to_random = 0.1;       // of the chosen: replaced by a random non-special token; the rest are kept
  bool whole_word = false;      // choose words (a token and its continuations) instead of tokens
};

struct MaskedTokens {
  Tensor input;   // i64 [B, S]: the rows with the chosen tokens replaced
  Tensor labels;  // i64 [B, S]: the original id at a chosen position, ignore_label elsewhere
  int64_t chosen = 0;
  static constexpr int64_t ignore_label = -100;
};

// Chooses round(ratio * maskable) tokens of each row (at least one where a row has any), whole words
// when asked (words in random order, a word taken while it fits the count, as BERT's
// create_pretraining_data does), then replaces each chosen token as `m` says. `ids` i64 [B, S] on the
// CPU; rows are rows [row_offset, row_offset + B) of the global batch. Draws one block of `gen`.
// loom::Error when the tokenizer has no mask token or the fractions are not in range.
MaskedTokens mask_tokens(const Tensor& ids, const TextTokenizer& tok, const TokenMasking& m, Generator& gen,
                         int64_t row_offset = 0);

struct BlockMasking {
  int64_t count = 75;                 // patches to mask per image (BEiT: 75 of 196)
  int64_t min_block = 16;             // patches in a block, at least
  int64_t max_block = -1;             // at most (-1: count)
  double min_aspect = 0.3;            // a block's height / width in [min_aspect, 1 / min_aspect]
};

// BEiT's block-wise masking of a grid_h x grid_w patch grid, per image: rectangles of at least
// min_block patches, area and log-aspect drawn uniformly, each adding the patches it newly covers
// only when that keeps the total at or below `count`, retried until exactly `count` are masked.
// -> f32 [B, grid_h * grid_w] (1 = masked, row-major), on the CPU. B images are rows
// [row_offset, row_offset + B) of the global batch. loom::Error for a count the grid cannot hold.
Tensor block_mask(int64_t B, int64_t grid_h, int64_t grid_w, const BlockMasking& m, Generator& gen, int64_t row_offset = 0);

}  // namespace loom::data
