// What BERT's WordPiece and CLIP's BPE (data/wordpiece.h, data/clip_bpe.h) read alike from a Hugging
// Face tokenizer.json: the file itself, the model's vocabulary, the added special tokens, and the
// splitting of a text around special tokens written in it (matched before normalisation, as the
// tokenizers package does with its added tokens).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>
#include <nlohmann/json.hpp>

namespace loom::data::hf {

// The parsed file; loom::Error naming the path when it cannot be opened or is not JSON.
nlohmann::json read_tokenizer_json(const std::string& path);

// The model's checked type ("WordPiece", "BPE"); loom::Error naming the path and `who` otherwise.
const nlohmann::json& model_of(const nlohmann::json& file, const std::string& type, const std::string& who,
                               const std::string& path);

struct Vocabulary {
  std::vector<std::string> tokens;                 // id -> token
  std::unordered_map<std::string, int64_t> ids;    // token -> id
  // model.vocab, a mapping token -> id over 0..n-1; loom::Error naming the path for any defect.
  static Vocabulary from(const nlohmann::json& model, const std::string& path);
  // The id of a token the tokenizer cannot do without; loom::Error naming the path when absent.
  int64_t required(const std::string& token, const std::string& path) const;
};

// added_tokens marked special: (content, id).
std::vector<std::pair<std::string, int64_t>> special_tokens(const nlohmann::json& file);

// Cuts `text` at each occurrence of a special token (leftmost first, the longest at one place): the
// ids of plain(part) for the text between them, the special's id for each.
std::vector<int64_t> encode_around_specials(const std::string& text,
                                            const std::vector<std::pair<std::string, int64_t>>& specials,
                                            const std::function<std::vector<int64_t>(const std::string&)>& plain);

}  // namespace loom::data::hf
