// The one face every tokenizer shows the trainer, the loader and evaluation: loom's own BPE (trained
// on a recipe's captions, data/bpe_tokenizer.h), BERT's WordPiece and CLIP's byte-level BPE read from a
// Hugging Face tokenizer.json (data/wordpiece.h, data/clip_bpe.h).
#pragma once
#include <memory>
#include <string>
#include <vector>
#include "core/tensor.h"
#include "data/bpe_tokenizer.h"

namespace loom::data {

class TextTokenizer {
 public:
  virtual ~TextTokenizer() = default;
  virtual std::string kind() const = 0;  // the recipe's tokenizer.type: bpe | wordpiece | clip_bpe
  // i64 [B, context]: the start token, the ids (truncated), end_token(), then pad_token().
  virtual Tensor encode_batch(const std::vector<std::string>& texts, int64_t context) const = 0;
  virtual int64_t vocab_size() const = 0;
  // Every encoded row holds this id after its text: a causal tower pools there (CLIP's end of text);
  // for WordPiece it is [SEP].
  virtual int64_t end_token() const = 0;
  virtual int64_t pad_token() const = 0;
  virtual int64_t start_token() const = 0;  // first in every row: start of text, or [CLS]
  // The id masked language modelling writes over a masked token ([MASK], loom's "<mask>"); -1 when the
  // vocabulary has none (CLIP's BPE, loom's BPE trained without one).
  virtual int64_t mask_token() const = 0;
  // Start, end, padding, unknown, mask and any other special token: never masked, never a target.
  virtual bool is_special(int64_t id) const = 0;
  // Whether `id`, right after `prev`, belongs to the word `prev` is in (WordPiece's "##" pieces; a
  // BPE piece after one without the end-of-word mark): whole-word masking masks such runs together.
  virtual bool continues_word(int64_t prev, int64_t id) const = 0;
  // The file a run keeps beside its checkpoints; load_tokenizer() reads it back as the same kind.
  virtual void save(const std::string& path) const = 0;
};

// loom's BPE, trained on `corpus`; with `mask_token`, its vocabulary holds "<mask>" (id 4).
std::unique_ptr<TextTokenizer> train_bpe_tokenizer(const std::vector<std::string>& corpus, int64_t vocab_size,
                                                   bool mask_token = false);
// A saved tokenizer of any kind, told apart by its content (loom's "type": "loom-bpe", or a Hugging
// Face tokenizer.json whose model is WordPiece or BPE). `expect` (a kind, or empty for any) makes a file
// of another kind a loom::Error naming the path and both kinds. A directory means DIR/tokenizer.json.
std::unique_ptr<TextTokenizer> load_tokenizer(const std::string& path, const std::string& expect = "");

}  // namespace loom::data
