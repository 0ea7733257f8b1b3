#include "data/text_tokenizer.h"
#include <filesystem>
#include <fstream>
#include <sstream>
#include "core/error.h"
#include "data/clip_bpe.h"
#include "data/hf_tokenizer_file.h"
#include "data/wordpiece.h"

namespace loom::data {
namespace {

namespace fs = std::filesystem;

class LoomBpe final : public TextTokenizer {
 public:
  explicit LoomBpe(BpeTokenizer t) : t_(std::move(t)) {}
  std::string kind() const override { return "bpe"; }
  Tensor encode_batch(const std::vector<std::string>& texts, int64_t context) const override {
    return t_.encode_batch(texts, context);
  }
  int64_t vocab_size() const override { return t_.vocab_size(); }
  int64_t end_token() const override { return BpeTokenizer::eot_id; }
  int64_t pad_token() const override { return BpeTokenizer::pad_id; }
  int64_t start_token() const override { return BpeTokenizer::sot_id; }
  int64_t mask_token() const override { return t_.mask_id(); }
  bool is_special(int64_t id) const override { return id >= 0 && id < t_.special_count(); }
  bool continues_word(int64_t prev, int64_t id) const override { return t_.continues_word(prev, id); }
  void save(const std::string& path) const override { t_.save(path); }

 private:
  BpeTokenizer t_;
};

// A Hugging Face tokenizer is saved as the very file it was read from.
void write_text(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    f << text;
    LOOM_CHECK(f.good(), "writing ", tmp, " failed");
  }
  fs::rename(tmp, path);
}

class HfWordPiece final : public TextTokenizer {
 public:
  HfWordPiece(WordPieceTokenizer t, std::string text) : t_(std::move(t)), text_(std::move(text)) {}
  std::string kind() const override { return "wordpiece"; }
  Tensor encode_batch(const std::vector<std::string>& texts, int64_t context) const override {
    return t_.encode_batch(texts, context);
  }
  int64_t vocab_size() const override { return t_.vocab_size(); }
  int64_t end_token() const override { return t_.sep_id(); }
  int64_t pad_token() const override { return t_.pad_id(); }
  int64_t start_token() const override { return t_.cls_id(); }
  int64_t mask_token() const override { return t_.mask_id(); }
  bool is_special(int64_t id) const override { return t_.is_special(id); }
  bool continues_word(int64_t prev, int64_t id) const override { return t_.continues_word(prev, id); }
  void save(const std::string& path) const override { write_text(path, text_); }

 private:
  WordPieceTokenizer t_;
  std::string text_;
};

class HfClipBpe final : public TextTokenizer {
 public:
  HfClipBpe(ClipBpeTokenizer t, std::string text) : t_(std::move(t)), text_(std::move(text)) {}
  std::string kind() const override { return "clip_bpe"; }
  Tensor encode_batch(const std::vector<std::string>& texts, int64_t context) const override {
    return t_.encode_batch(texts, context);
  }
  int64_t vocab_size() const override { return t_.vocab_size(); }
  int64_t end_token() const override { return t_.eot_id(); }
  int64_t pad_token() const override { return t_.eot_id(); }  // Hugging Face's CLIP pads with end of text
  int64_t start_token() const override { return t_.sot_id(); }
  int64_t mask_token() const override { return -1; }
  bool is_special(int64_t id) const override { return t_.is_special(id); }
  bool continues_word(int64_t prev, int64_t id) const override { return t_.continues_word(prev, id); }
  void save(const std::string& path) const override { write_text(path, text_); }

 private:
  ClipBpeTokenizer t_;
  std::string text_;
};

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(str_cat(path, ": cannot open tokenizer (", fs::exists(path) ? "unreadable" : "no such file", ")"));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

std::unique_ptr<TextTokenizer> train_bpe_tokenizer(const std::vector<std::string>& corpus, int64_t vocab_size,
                                                   bool mask_token) {
  return std::make_unique<LoomBpe>(BpeTokenizer::train(corpus, vocab_size, mask_token));
}

std::unique_ptr<TextTokenizer> load_tokenizer(const std::string& path_in, const std::string& expect) {
  const std::string path = fs::is_directory(path_in) ? (fs::path(path_in) / "tokenizer.json").string() : path_in;
  const std::string text = read_all(path);
  // Which kind: loom's files say "type": "loom-bpe"; Hugging Face's name their model's type.
  std::string kind;
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.value("type", "") == "loom-bpe") {
    kind = "bpe";
  } else if (j.is_object() && j.contains("model") && j["model"].is_object()) {
    const std::string t = j["model"].value("type", "");
    kind = t == "WordPiece" ? "wordpiece" : t == "BPE" ? "clip_bpe" : "";
    if (kind.empty())
      throw Error(str_cat(path, ": a Hugging Face tokenizer of model type '", t,
                          "', which loom does not read (it reads WordPiece as BERT's and BPE as CLIP's)"));
  } else if (j.is_discarded()) {
    throw Error(str_cat(path, ": bad tokenizer file: not JSON"));
  } else {
    throw Error(str_cat(path, ": not a tokenizer file loom knows (neither loom's \"type\": \"loom-bpe\" nor a Hugging "
                              "Face tokenizer.json with a \"model\")"));
  }
  if (!expect.empty() && expect != kind)
    throw Error(str_cat(path, ": a ", kind, " tokenizer, but the recipe asks for tokenizer.type ", expect));
  if (kind == "bpe") return std::make_unique<LoomBpe>(BpeTokenizer::load(path));
  if (kind == "wordpiece") return std::make_unique<HfWordPiece>(WordPieceTokenizer::load(path), text);
  return std::make_unique<HfClipBpe>(ClipBpeTokenizer::load(path), text);
}

}  // namespace loom::data
