#include "data/clip_bpe.h"
#include <nlohmann/json.hpp>
#include "core/error.h"
#include "data/hf_tokenizer_file.h"
#include "data/unicode.h"

namespace loom::data {
namespace {

using json = nlohmann::json;
using namespace unicode;

constexpr const char* kSot = "<|startoftext|>";
constexpr const char* kEot = "<|endoftext|>";

}  // namespace

ClipBpeTokenizer ClipBpeTokenizer::load(const std::string& path) {
  const json j = hf::read_tokenizer_json(path);
  ClipBpeTokenizer t;
  try {
    const json& m = hf::model_of(j, "BPE", "CLIP's", path);
    t.vocab_ = hf::Vocabulary::from(m, path);
    if (m.contains("end_of_word_suffix") && m["end_of_word_suffix"].is_string()) t.suffix_ = m["end_of_word_suffix"];
    else t.suffix_.clear();
    if (m.contains("continuing_subword_prefix") && m["continuing_subword_prefix"].is_string())
      t.prefix_ = m["continuing_subword_prefix"];
    int64_t rank = 0;
    for (const json& e : m.at("merges")) {  // "a b" (older files) or ["a", "b"]
      std::string a, b;
      if (e.is_string()) {
        const std::string s = e.get<std::string>();
        const size_t sp = s.find(' ');
        LOOM_CHECK(sp != std::string::npos, path, ": merge ", rank, " '", s, "' is not two tokens");
        a = s.substr(0, sp), b = s.substr(sp + 1);
      } else {
        a = e.at(0).get<std::string>(), b = e.at(1).get<std::string>();
      }
      auto ia = t.vocab_.ids.find(a), ib = t.vocab_.ids.find(b), iab = t.vocab_.ids.find(a + b);
      LOOM_CHECK(ia != t.vocab_.ids.end() && ib != t.vocab_.ids.end() && iab != t.vocab_.ids.end(), path, ": merge ", rank, " ('", a, "', '",
                 b, "') names a token the vocabulary lacks");
      t.merges_.emplace(std::pair{ia->second, ib->second}, std::pair{rank++, iab->second});
    }
    t.specials_ = hf::special_tokens(j);
    t.sot_ = t.vocab_.required(kSot, path);
    t.eot_ = t.vocab_.required(kEot, path);
    const json unk = m.value("unk_token", json());
    t.unk_ = unk.is_string() ? t.vocab_.required(unk.get<std::string>(), path) : -1;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(str_cat(path, ": not a BPE tokenizer.json (", e.what(), ")"));
  }
  // GPT-2's bytes-to-unicode: printable Latin-1 bytes stand for themselves, the rest for 256 + n.
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    append(t.byte_char_[b], printable ? b : 256 + next++);
  }
  return t;
}

std::string ClipBpeTokenizer::normalize(const std::string& text) const {
  std::string out;
  bool space = false;
  for (CodePoint c : decode(nfc(text))) {
    if (is_whitespace(c)) {
      if (!space) out += ' ';
      space = true;
      continue;
    }
    space = false;
    append(out, to_lower(c));
  }
  return out;
}

std::vector<std::string> ClipBpeTokenizer::pieces(const std::string& text) const {
  static const char* kContractions[] = {"s", "t", "re", "ve", "m", "ll", "d"};
  const std::vector<CodePoint> cps = decode(normalize(text));
  std::vector<std::string> out;
  const size_t n = cps.size();
  auto starts_with = [&](size_t i, const std::string& s) {
    const std::vector<CodePoint> w = decode(s);
    if (i + w.size() > n) return false;
    for (size_t k = 0; k < w.size(); ++k)
      if (cps[i + k] != w[k]) return false;
    return true;
  };
  for (size_t i = 0; i < n;) {
    const CodePoint c = cps[i];
    size_t end = i;
    if (starts_with(i, kSot)) end = i + 15;
    else if (starts_with(i, kEot)) end = i + 13;
    if (end == i && c == '\'')
      for (const char* k : kContractions)
        if (starts_with(i + 1, k)) { end = i + 1 + std::string(k).size(); break; }
    if (end == i) {
      if (is_letter(c)) {
        end = i + 1;
        while (end < n && is_letter(cps[end])) ++end;
      } else if (is_number(c)) {
        end = i + 1;
      } else if (is_whitespace(c)) {
        ++i;  // not part of any piece
        continue;
      } else {
        end = i + 1;
        while (end < n && !is_whitespace(cps[end]) && !is_letter(cps[end]) && !is_number(cps[end])) ++end;
      }
    }
    out.push_back(to_utf8(std::vector<CodePoint>(cps.begin() + long(i), cps.begin() + long(end))));
    i = end;
  }
  return out;
}

void ClipBpeTokenizer::bpe(const std::string& piece, std::vector<int64_t>& out) const {
  // The piece's bytes as byte-level characters; the first may carry the prefix, the last the suffix.
  std::vector<int64_t> syms;
  const size_t n = piece.size();
  for (size_t i = 0; i < n; ++i) {
    std::string s = byte_char_[static_cast<unsigned char>(piece[i])];
    if (i > 0) s = prefix_ + s;
    if (i + 1 == n) s += suffix_;
    auto it = vocab_.ids.find(s);
    LOOM_CHECK(it != vocab_.ids.end() || unk_ >= 0, "CLIP BPE: symbol '", s, "' is not in the vocabulary and there is no unk_token");
    syms.push_back(it != vocab_.ids.end() ? it->second : unk_);
  }
  // Merge the adjacent pair of lowest rank (leftmost among equals) until none is a merge.
  for (;;) {
    int64_t best_rank = INT64_MAX, merged = -1;
    size_t at = 0;
    for (size_t k = 0; k + 1 < syms.size(); ++k) {
      auto it = merges_.find({syms[k], syms[k + 1]});
      if (it != merges_.end() && it->second.first < best_rank) best_rank = it->second.first, merged = it->second.second, at = k;
    }
    if (merged < 0) break;
    syms[at] = merged;
    syms.erase(syms.begin() + long(at) + 1);
  }
  out.insert(out.end(), syms.begin(), syms.end());
}

std::vector<int64_t> ClipBpeTokenizer::encode_plain(const std::string& text) const {
  std::vector<int64_t> ids;
  for (const std::string& p : pieces(text)) bpe(p, ids);
  return ids;
}

std::vector<int64_t> ClipBpeTokenizer::encode(const std::string& text) const {
  return hf::encode_around_specials(text, specials_, [this](const std::string& part) { return encode_plain(part); });
}

Tensor ClipBpeTokenizer::encode_batch(const std::vector<std::string>& texts, int64_t context) const {
  LOOM_CHECK(context >= 2, "CLIP BPE: context must be >= 2 (start and end of text), got ", context);
  const int64_t B = int64_t(texts.size());
  std::vector<int64_t> out(static_cast<size_t>(B * context), eot_);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> ids = encode(texts[size_t(b)]);
    if (int64_t(ids.size()) > context - 2) ids.resize(size_t(context - 2));
    int64_t* row = out.data() + b * context;
    row[0] = sot_;
    for (size_t i = 0; i < ids.size(); ++i) row[1 + i] = ids[i];
    row[1 + ids.size()] = eot_;
  }
  return Tensor::from(out, {B, context});
}

bool ClipBpeTokenizer::is_special(int64_t id) const {
  if (id == sot_ || id == eot_ || id == unk_) return true;
  for (const auto& [_, sid] : specials_)
    if (sid == id) return true;
  return false;
}

bool ClipBpeTokenizer::continues_word(int64_t prev, int64_t id) const {
  if (prev < 0 || prev >= vocab_size() || is_special(prev) || is_special(id)) return false;
  const std::string& t = token(prev);
  return suffix_.empty() || t.size() < suffix_.size() || t.compare(t.size() - suffix_.size(), suffix_.size(), suffix_) != 0;
}

}  // namespace loom::data
