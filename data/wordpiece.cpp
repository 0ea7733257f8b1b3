#include "data/wordpiece.h"
#include <algorithm>
#include <nlohmann/json.hpp>
#include "core/json_integer.h"
#include "core/error.h"
#include "data/hf_tokenizer_file.h"
#include "data/unicode.h"

namespace loom::data {
namespace {

using json = nlohmann::json;
using namespace unicode;

// The tokenizers package's is_control: \t \n \r are not; otherwise any "Other" category.
bool is_control(CodePoint c) { return c != '\t' && c != '\n' && c != '\r' && is_other(c); }

bool is_chinese(CodePoint c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// BertPreTokenizer's punctuation: ASCII punctuation or any Unicode P* category.
bool is_bert_punctuation(CodePoint c) {
  return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126) ||
         is_punctuation(c);
}

}  // namespace

WordPieceTokenizer WordPieceTokenizer::load(const std::string& path) {
  const json j = hf::read_tokenizer_json(path);
  WordPieceTokenizer t;
  try {
    const json& m = hf::model_of(j, "WordPiece", "BERT's", path);
    t.prefix_ = m.value("continuing_subword_prefix", "##");
    t.max_chars_ = json_int64_or(m, "max_input_chars_per_word", 100, path + ": model");
    t.vocab_ = hf::Vocabulary::from(m, path);
    const std::string unk = m.value("unk_token", "[UNK]");
    const json& n = j.value("normalizer", json());
    if (n.is_object()) {
      LOOM_CHECK(n.value("type", "") == "BertNormalizer", path, ": normalizer ", n.value("type", ""),
                 " is not BERT's (BertNormalizer)");
      t.clean_text_ = n.value("clean_text", true);
      t.chinese_chars_ = n.value("handle_chinese_chars", true);
      t.lowercase_ = n.value("lowercase", true);
      // strip_accents null follows lowercase, as in the tokenizers package
      t.strip_accents_ = n.contains("strip_accents") && !n["strip_accents"].is_null() ? n["strip_accents"].get<bool>()
                                                                                       : t.lowercase_;
    }
    t.specials_ = hf::special_tokens(j);
    t.unk_ = t.vocab_.required(unk, path);
    t.cls_ = t.vocab_.required("[CLS]", path);
    t.sep_ = t.vocab_.required("[SEP]", path);
    t.pad_ = t.vocab_.required("[PAD]", path);
    if (auto it = t.vocab_.ids.find("[MASK]"); it != t.vocab_.ids.end()) t.mask_ = it->second;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(str_cat(path, ": not a WordPiece tokenizer.json (", e.what(), ")"));
  }
  return t;
}

std::string WordPieceTokenizer::normalize(const std::string& text) const {
  std::vector<CodePoint> cps = decode(text), out;
  out.reserve(cps.size());
  for (auto c : cps) {
    if (clean_text_) {
      if (c == 0 || c == 0xFFFD || is_control(c)) continue;
      if (is_whitespace(c)) c = ' ';
    }
    if (chinese_chars_ && is_chinese(c)) {
      out.push_back(' ');
      out.push_back(c);
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  if (strip_accents_) {
    std::vector<CodePoint> kept;
    for (auto c : decode(nfd(to_utf8(out))))
      if (!is_nonspacing_mark(c)) kept.push_back(c);
    out = std::move(kept);
  }
  std::string s;
  for (auto c : out) append(s, lowercase_ ? to_lower(c) : c);
  return s;
}

std::vector<std::string> WordPieceTokenizer::words(const std::string& text) const {
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    if (!cur.empty()) out.push_back(std::move(cur));
    cur.clear();
  };
  for (auto c : decode(normalize(text))) {
    if (is_whitespace(c)) {
      flush();
    } else if (is_bert_punctuation(c)) {
      flush();
      append(cur, c);
      flush();
    } else {
      append(cur, c);
    }
  }
  flush();
  return out;
}

std::vector<int64_t> WordPieceTokenizer::encode(const std::string& text) const {
  return hf::encode_around_specials(text, specials_, [this](const std::string& part) { return encode_plain(part); });
}

std::vector<int64_t> WordPieceTokenizer::encode_plain(const std::string& text) const {
  std::vector<int64_t> ids;
  for (const std::string& w : words(text)) {
    // Character boundaries of the word (byte offsets).
    std::vector<size_t> at;
    for (size_t i = 0; i < w.size(); ++i)
      if ((static_cast<unsigned char>(w[i]) & 0xC0) != 0x80) at.push_back(i);
    at.push_back(w.size());
    const size_t chars = at.size() - 1;
    if (int64_t(chars) > max_chars_) { ids.push_back(unk_); continue; }
    std::vector<int64_t> pieces;
    bool bad = false;
    for (size_t start = 0; start < chars && !bad;) {
      size_t end = chars;
      int64_t found = -1;
      for (; end > start; --end) {
        std::string sub = w.substr(at[start], at[end] - at[start]);
        if (start > 0) sub = prefix_ + sub;
        auto it = vocab_.ids.find(sub);
        if (it != vocab_.ids.end()) { found = it->second; break; }
      }
      if (found < 0) bad = true;
      else { pieces.push_back(found); start = end; }
    }
    if (bad) ids.push_back(unk_);
    else ids.insert(ids.end(), pieces.begin(), pieces.end());
  }
  return ids;
}

bool WordPieceTokenizer::is_special(int64_t id) const {
  if (id == cls_ || id == sep_ || id == pad_ || id == unk_ || id == mask_) return true;
  for (const auto& [_, sid] : specials_)
    if (sid == id) return true;
  return false;
}

bool WordPieceTokenizer::continues_word(int64_t prev, int64_t id) const {
  if (id < 0 || id >= vocab_size() || is_special(prev) || is_special(id)) return false;
  return token(id).rfind(prefix_, 0) == 0;
}

Tensor WordPieceTokenizer::encode_batch(const std::vector<std::string>& texts, int64_t context, Tensor* mask) const {
  LOOM_CHECK(context >= 2, "WordPiece: context must be >= 2 ([CLS] and [SEP]), got ", context);
  const int64_t B = int64_t(texts.size());
  std::vector<int64_t> out(static_cast<size_t>(B * context), pad_), on(static_cast<size_t>(B * context), 0);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> ids = encode(texts[size_t(b)]);
    if (int64_t(ids.size()) > context - 2) ids.resize(size_t(context - 2));
    int64_t* row = out.data() + b * context;
    row[0] = cls_;
    for (size_t i = 0; i < ids.size(); ++i) row[1 + i] = ids[i];
    row[1 + ids.size()] = sep_;
    std::fill(on.begin() + b * context, on.begin() + b * context + int64_t(ids.size()) + 2, 1);
  }
  if (mask) *mask = Tensor::from(on, {B, context});
  return Tensor::from(out, {B, context});
}

}  // namespace loom::data
