// BERT's WordPiece tokenizer read from a Hugging Face tokenizer.json, giving the ids the `tokenizers`
// package gives: its BertNormalizer (control characters removed, whitespace made spaces, CJK
// characters split off, accents stripped by NFD, lowercasing), its BertPreTokenizer (split on
// whitespace, every punctuation character a word of its own), greedy longest-match-first WordPiece
// with the "##" continuation prefix (a word with no match, or longer than max_input_chars_per_word,
// becomes [UNK]), special tokens written in the text kept whole, and [CLS] ... [SEP] around the ids.
// Unicode properties and NFD come from utf8proc.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>
#include "core/tensor.h"
#include "data/hf_tokenizer_file.h"

namespace loom::data {

class WordPieceTokenizer {
 public:
  // loom::Error naming the path for an unreadable file, a tokenizer of another kind (model.type not
  // WordPiece) or a vocabulary without its special tokens.
  static WordPieceTokenizer load(const std::string& path);

  // The normalised, pre-tokenised words (exposed for tests).
  std::vector<std::string> words(const std::string& text) const;
  std::vector<int64_t> encode(const std::string& text) const;  // without [CLS]/[SEP]
  // i64 [B, context]: [CLS], ids truncated to context - 2, [SEP], then [PAD] (as the tokenizers
  // package with truncation to `context` and padding to it). context >= 2. With `mask`, also the
  // attention mask: i64 [B, context], 1 on the tokens and 0 on the padding.
  Tensor encode_batch(const std::vector<std::string>& texts, int64_t context, Tensor* mask = nullptr) const;

  int64_t vocab_size() const { return int64_t(vocab_.tokens.size()); }
  int64_t cls_id() const { return cls_; }
  int64_t sep_id() const { return sep_; }
  int64_t pad_id() const { return pad_; }
  int64_t unk_id() const { return unk_; }
  int64_t mask_id() const { return mask_; }  // [MASK]; -1 when the vocabulary has none
  bool is_special(int64_t id) const;          // [CLS], [SEP], [PAD], [UNK], [MASK] and added special tokens
  // Whether `id` continues the word `prev` is in: a "##" piece after a non-special token.
  bool continues_word(int64_t prev, int64_t id) const;
  const std::string& token(int64_t id) const { return vocab_.tokens.at(size_t(id)); }

 private:
  std::string normalize(const std::string& text) const;
  std::vector<int64_t> encode_plain(const std::string& text) const;  // text without special tokens
  std::vector<std::pair<std::string, int64_t>> specials_;             // added special tokens
  hf::Vocabulary vocab_;
  std::string prefix_ = "##";
  int64_t max_chars_ = 100;
  int64_t cls_ = -1, sep_ = -1, pad_ = -1, unk_ = -1, mask_ = -1;
  bool clean_text_ = true, chinese_chars_ = true, strip_accents_ = true, lowercase_ = true;
};

}  // namespace loom::data
