#include "data/clip_bpe.h"
#include <fstream>
#include <nlohmann/json.hpp>
#include "core/error.h"
#include "data/unicode.h"

namespace loom::data {
namespace {

using json = nlohmann::json;
using namespace unicode;

constexpr const char* kSot = "<|startoftext|>";
constexpr const char* kEot = "<|endoftext|>";

// The text with every special token's occurrences (leftmost, longest first) cut out: calls
// plain(part) for the text between them and special(id) for each.
template <class Plain, class Special>
void split_specials(const std::string& text, const std::vector<std::pair<std::string, int64_t>>& specials, Plain plain,
                    Special special) {
  size_t from = 0;
  for (;;) {
    size_t best = std::string::npos, len = 0;
    int64_t id = -1;
    for (const auto& [content, tid] : specials) {
      const size_t at = text.find(content, from);
      if (at != std::string::npos && (at < best || (at == best && content.size() > len))) best = at, len = content.size(), id = tid;
    }
    plain(text.substr(from, best == std::string::npos ? std::string::npos : best - from));
    if (best == std::string::npos) return;
    special(id);
    from = best + len;
  }
}

}  // namespace

ClipBpeTokenizer ClipBpeTokenizer::load(const std::string& path) {
  std::ifstream f(path);
  LOOM_CHECK(f, path, ": cannot open the tokenizer file");
  json j;
  try {
    j = json::parse(f);
  } catch (const std::exception& e) {
    throw Error(str_cat(path, ": not a tokenizer.json (", e.what(), ")"));
  }
  ClipBpeTokenizer t;
  try {
    const json& m = j.at("model");
    const std::string type = m.value("type", "");
    LOOM_CHECK(type == "BPE", path, ": the tokenizer's model is '", type, "', not BPE (CLIP's)");
    const json& v = m.at("vocab");
    LOOM_CHECK(v.is_object() && !v.empty(), path, ": model.vocab is not a non-empty mapping");
    t.vocab_.resize(v.size());
    for (auto it = v.begin(); it != v.end(); ++it) {
      const int64_t id = it.value().get<int64_t>();
      LOOM_CHECK(id >= 0 && id < int64_t(v.size()) && t.vocab_[size_t(id)].empty(), path, ": model.vocab id ", id,
                 " of '", it.key(), "' is out of range or repeated");
      t.vocab_[size_t(id)] = it.key();
      t.ids_[it.key()] = id;
    }
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
      auto ia = t.ids_.find(a), ib = t.ids_.find(b), iab = t.ids_.find(a + b);
      LOOM_CHECK(ia != t.ids_.end() && ib != t.ids_.end() && iab != t.ids_.end(), path, ": merge ", rank, " ('", a, "', '",
                 b, "') names a token the vocabulary lacks");
      t.merges_.emplace(std::pair{ia->second, ib->second}, std::pair{rank++, iab->second});
    }
    for (const json& a : j.value("added_tokens", json::array()))
      if (a.value("special", false)) t.specials_.emplace_back(a.at("content").get<std::string>(), a.at("id").get<int64_t>());
    auto special = [&](const char* s) {
      auto it = t.ids_.find(s);
      LOOM_CHECK(it != t.ids_.end(), path, ": the vocabulary has no ", s, " token");
      return it->second;
    };
    t.sot_ = special(kSot);
    t.eot_ = special(kEot);
    const json unk = m.value("unk_token", json());
    t.unk_ = unk.is_string() ? special(unk.get<std::string>().c_str()) : -1;
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
    auto it = ids_.find(s);
    LOOM_CHECK(it != ids_.end() || unk_ >= 0, "CLIP BPE: symbol '", s, "' is not in the vocabulary and there is no unk_token");
    syms.push_back(it != ids_.end() ? it->second : unk_);
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
  std::vector<int64_t> ids;
  split_specials(
      text, specials_,
      [&](const std::string& part) {
        const std::vector<int64_t> p = encode_plain(part);
        ids.insert(ids.end(), p.begin(), p.end());
      },
      [&](int64_t id) { ids.push_back(id); });
  return ids;
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

}  // namespace loom::data
