// CLIP's byte-level BPE read from a Hugging Face tokenizer.json (as openai/clip-* ship it), giving the
// ids the `tokenizers` package gives:
//   normaliser     NFC, each run of whitespace one space, lowercase
//   pre-tokeniser  CLIP's pattern: <|startoftext|>, <|endoftext|>, 's 't 're 've 'm 'll 'd, runs of
//                  letters, single numbers, runs of other non-space characters (whitespace dropped);
//                  then each piece's UTF-8 bytes through GPT-2's bytes-to-unicode table
//   model          BPE merges by rank within a piece, "</w>" on its last symbol; a symbol not in the
//                  vocabulary becomes the unknown token
//   specials       <|startoftext|> and <|endoftext|> written in the text are tokens of their own;
//                  encode_batch puts them around the ids (RobertaProcessing)
// Unicode properties and NFC come from utf8proc. loom's own BpeTokenizer (data/bpe_tokenizer.h) stays the
// one that trains on a recipe's captions.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>
#include "core/tensor.h"
#include "data/hf_tokenizer_file.h"

namespace loom::data {

class ClipBpeTokenizer {
 public:
  // loom::Error naming the path for an unreadable file, a tokenizer of another kind (model.type not
  // BPE), merges naming unknown tokens, or no <|startoftext|>/<|endoftext|>.
  static ClipBpeTokenizer load(const std::string& path);

  std::vector<std::string> pieces(const std::string& text) const;  // after the split, before bytes (tests)
  std::vector<int64_t> encode(const std::string& text) const;      // without the start/end tokens
  // i64 [B, context]: <|startoftext|>, ids truncated to context - 2, <|endoftext|>, then padding with
  // <|endoftext|> (Hugging Face's CLIP pads with it; the text tower pools at the first one). context >= 2.
  Tensor encode_batch(const std::vector<std::string>& texts, int64_t context) const;

  int64_t vocab_size() const { return int64_t(vocab_.tokens.size()); }
  int64_t sot_id() const { return sot_; }
  int64_t eot_id() const { return eot_; }
  const std::string& token(int64_t id) const { return vocab_.tokens.at(size_t(id)); }
  bool is_special(int64_t id) const;  // start and end of text, unknown, and added special tokens
  // Whether `id` continues the word `prev` began: `prev` is no special and lacks the end-of-word suffix.
  bool continues_word(int64_t prev, int64_t id) const;

 private:
  std::string normalize(const std::string& text) const;
  std::vector<int64_t> encode_plain(const std::string& text) const;
  void bpe(const std::string& piece, std::vector<int64_t>& out) const;
  hf::Vocabulary vocab_;
  std::map<std::pair<int64_t, int64_t>, std::pair<int64_t, int64_t>> merges_;  // (a, b) -> (rank, merged id)
  std::vector<std::pair<std::string, int64_t>> specials_;
  std::string suffix_ = "</w>", prefix_;
  std::string byte_char_[256];  // bytes-to-unicode, as UTF-8
  int64_t sot_ = -1, eot_ = -1, unk_ = -1;
};

}  // namespace loom::data
