// A small byte-pair-encoding tokenizer (Sennrich et al. 2016, CLIP-style end-of-word marker), trained
// on the recipe's own captions. See data/README.md for why loom has its own.
//
// Text is lowercased (ASCII) and split into words: runs of letters/digits (and non-ASCII characters),
// each other non-space character on its own; whitespace separates. A word starts as its UTF-8
// characters, the last one marked "</w>"; merges never cross words.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>
#include "core/tensor.h"

namespace loom::data {

class BpeTokenizer {
 public:
  // Learns merges until the vocabulary (4 specials + base characters + merges) reaches vocab_size or
  // no pair occurs twice. Throws if vocab_size cannot hold the specials and base characters.
  // With `mask_token`, a fifth special "<mask>" (id 4) for masked language modelling; without it the
  // ids are those of a tokenizer trained before the mask token existed.
  static BpeTokenizer train(const std::vector<std::string>& corpus, int64_t vocab_size, bool mask_token = false);
  static BpeTokenizer load(const std::string& path);  // JSON; loom::Error naming the path on any defect
  void save(const std::string& path) const;

  std::vector<int64_t> encode(const std::string& text) const;  // no specials; unknown characters -> unk_id
  // i64 [B, context]: sot, tokens, eot, then pad; too long -> truncated, eot kept last. context >= 2.
  Tensor encode_batch(const std::vector<std::string>& texts, int64_t context) const;
  // Joins tokens, a space after each end of word; specials other than unk ("<unk>") are dropped.
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t vocab_size() const { return int64_t(vocab_.size()); }
  int64_t mask_id() const { return has_mask_ ? kMaskId : -1; }  // -1: trained without one
  int64_t special_count() const { return has_mask_ ? 5 : 4; }   // ids below this are special
  // Whether `id` continues the word `prev` began: `prev` is no special and lacks the end-of-word mark.
  bool continues_word(int64_t prev, int64_t id) const;
  const std::vector<std::string>& vocab() const { return vocab_; }
  const std::vector<std::pair<std::string, std::string>>& merges() const { return merges_; }

  static constexpr int64_t pad_id = 0, sot_id = 1, eot_id = 2, unk_id = 3, kMaskId = 4;
  static constexpr const char* end_of_word = "</w>";

 private:
  void build_index();  // ids_ and ranks_ from vocab_ and merges_
  std::vector<std::string> vocab_;                            // id -> token
  std::vector<std::pair<std::string, std::string>> merges_;   // in priority order
  std::unordered_map<std::string, int64_t> ids_;              // token -> id
  std::map<std::pair<std::string, std::string>, int64_t> ranks_;  // merge -> priority
  bool has_mask_ = false;  // vocab_[4] is "<mask>"
};

// The words of `text` as the tokenizer sees them (lowercased, split); exposed for tests.
std::vector<std::string> pretokenize(const std::string& text);

}  // namespace loom::data
