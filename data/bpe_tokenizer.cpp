#include "data/bpe_tokenizer.h"
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include "core/error.h"

namespace loom::data {

namespace {

const char* const kSpecials[4] = {"<pad>", "<sot>", "<eot>", "<unk>"};
// The optional fifth special; pretokenize() splits '<' and '>' off, so no text encodes to it.
const char* const kMaskToken = "<mask>";

// Length of the UTF-8 character starting with byte c (1 for stray continuation/invalid bytes).
size_t utf8_len(unsigned char c) {
  if (c >= 0xF0 && c < 0xF8) return 4;
  if (c >= 0xE0) return c < 0xF0 ? 3 : 1;
  if (c >= 0xC0) return 2;
  return 1;
}

// The characters of a word, the last marked with the end-of-word marker.
std::vector<std::string> word_symbols(const std::string& word) {
  std::vector<std::string> out;
  for (size_t i = 0; i < word.size();) {
    size_t n = std::min(utf8_len((unsigned char)word[i]), word.size() - i);
    out.push_back(word.substr(i, n));
    i += n;
  }
  if (!out.empty()) out.back() += BpeTokenizer::end_of_word;
  return out;
}

bool ends_with_eow(const std::string& s) {
  const size_t n = std::char_traits<char>::length(BpeTokenizer::end_of_word);
  return s.size() >= n && s.compare(s.size() - n, n, BpeTokenizer::end_of_word) == 0;
}

}  // namespace

std::vector<std::string> pretokenize(const std::string& text) {
  std::vector<std::string> words;
  std::string cur;
  auto flush = [&] { if (!cur.empty()) { words.push_back(cur); cur.clear(); } };
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = (unsigned char)text[i];
    if (c >= 0x80) {  // a non-ASCII character belongs to the word
      size_t n = std::min(utf8_len(c), text.size() - i);
      cur.append(text, i, n);
      i += n;
      continue;
    }
    if (std::isalnum(c)) cur += char(std::tolower(c));
    else if (c <= 0x20 || c == 0x7F) flush();          // whitespace and control characters separate
    else { flush(); words.push_back(std::string(1, char(c))); }  // punctuation is a word of its own
    ++i;
  }
  flush();
  return words;
}

void BpeTokenizer::build_index() {
  ids_.clear();
  ranks_.clear();
  for (size_t i = 0; i < vocab_.size(); ++i) ids_.emplace(vocab_[i], int64_t(i));
  for (size_t i = 0; i < merges_.size(); ++i) ranks_.emplace(merges_[i], int64_t(i));
}

BpeTokenizer BpeTokenizer::train(const std::vector<std::string>& corpus, int64_t vocab_size, bool mask_token) {
  // Word frequencies (std::map: a deterministic order).
  std::map<std::string, int64_t> counts;
  for (const std::string& text : corpus)
    for (std::string& w : pretokenize(text)) ++counts[std::move(w)];

  BpeTokenizer tok;
  tok.vocab_.assign(std::begin(kSpecials), std::end(kSpecials));
  if (mask_token) {
    tok.vocab_.push_back(kMaskToken);
    tok.has_mask_ = true;
  }
  std::set<std::string> base;
  for (const auto& [w, n] : counts)
    for (std::string& s : word_symbols(w)) base.insert(std::move(s));
  LOOM_CHECK(vocab_size >= int64_t(tok.vocab_.size() + base.size()), "BpeTokenizer::train: vocab_size ", vocab_size,
             " cannot hold the ", tok.vocab_.size(), " special tokens and the corpus's ", base.size(), " base symbols");
  tok.vocab_.insert(tok.vocab_.end(), base.begin(), base.end());
  tok.build_index();

  // Each distinct word as symbol ids, with its count.
  struct Word { std::vector<int64_t> syms; int64_t count; };
  std::vector<Word> words;
  words.reserve(counts.size());
  for (const auto& [w, n] : counts) {
    Word word{{}, n};
    for (const std::string& s : word_symbols(w)) word.syms.push_back(tok.ids_.at(s));
    words.push_back(std::move(word));
  }

  // Greedy merges: the most frequent adjacent pair (ties: the lexicographically smallest strings).
  // Recounting every round is O(merges x corpus symbols): ample for caption vocabularies.
  while (tok.vocab_size() < vocab_size) {
    std::map<std::pair<int64_t, int64_t>, int64_t> pairs;
    for (const Word& w : words)
      for (size_t i = 0; i + 1 < w.syms.size(); ++i) pairs[{w.syms[i], w.syms[i + 1]}] += w.count;
    const std::pair<int64_t, int64_t>* best = nullptr;
    int64_t best_count = 0;
    for (const auto& [p, n] : pairs) {
      if (n > best_count ||
          (n == best_count && std::tie(tok.vocab_[p.first], tok.vocab_[p.second]) <
                                  std::tie(tok.vocab_[best->first], tok.vocab_[best->second]))) {
        best = &p;
        best_count = n;
      }
    }
    if (!best || best_count < 2) break;
    const auto [a, b] = *best;
    const std::string merged = tok.vocab_[a] + tok.vocab_[b];
    tok.merges_.emplace_back(tok.vocab_[a], tok.vocab_[b]);
    int64_t id;
    if (auto it = tok.ids_.find(merged); it != tok.ids_.end()) {
      id = it->second;
    } else {
      id = tok.vocab_size();
      tok.vocab_.push_back(merged);
      tok.ids_.emplace(merged, id);
    }
    for (Word& w : words) {
      std::vector<int64_t> out;
      out.reserve(w.syms.size());
      for (size_t i = 0; i < w.syms.size(); ++i) {
        if (i + 1 < w.syms.size() && w.syms[i] == a && w.syms[i + 1] == b) { out.push_back(id); ++i; }
        else out.push_back(w.syms[i]);
      }
      w.syms = std::move(out);
    }
  }
  tok.build_index();
  return tok;
}

std::vector<int64_t> BpeTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> ids;
  for (const std::string& word : pretokenize(text)) {
    std::vector<std::string> syms = word_symbols(word);
    while (syms.size() > 1) {
      int64_t best_rank = INT64_MAX;
      size_t best_at = 0;
      for (size_t i = 0; i + 1 < syms.size(); ++i) {
        auto it = ranks_.find({syms[i], syms[i + 1]});
        if (it != ranks_.end() && it->second < best_rank) { best_rank = it->second; best_at = i; }
      }
      if (best_rank == INT64_MAX) break;
      const std::string a = syms[best_at], b = syms[best_at + 1];
      std::vector<std::string> out;
      out.reserve(syms.size());
      for (size_t i = 0; i < syms.size(); ++i) {
        if (i + 1 < syms.size() && syms[i] == a && syms[i + 1] == b) { out.push_back(a + b); ++i; }
        else out.push_back(std::move(syms[i]));
      }
      syms = std::move(out);
    }
    for (const std::string& s : syms) {
      auto it = ids_.find(s);
      ids.push_back(it == ids_.end() ? unk_id : it->second);
    }
  }
  return ids;
}

Tensor BpeTokenizer::encode_batch(const std::vector<std::string>& texts, int64_t context) const {
  LOOM_CHECK(context >= 2, "BpeTokenizer::encode_batch: context must be >= 2 (sot and eot), got ", context);
  const int64_t B = int64_t(texts.size());
  Tensor out = Tensor::full({B, context}, double(pad_id), DType::i64);
  int64_t* o = out.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> ids = encode(texts[size_t(b)]);
    const int64_t n = std::min<int64_t>(int64_t(ids.size()), context - 2);
    int64_t* row = o + b * context;
    row[0] = sot_id;
    std::copy(ids.begin(), ids.begin() + n, row + 1);
    row[n + 1] = eot_id;
  }
  return out;
}

bool BpeTokenizer::continues_word(int64_t prev, int64_t id) const {
  if (prev < special_count() || id < special_count() || prev >= vocab_size()) return false;
  return !ends_with_eow(vocab_[size_t(prev)]);
}

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) {
    LOOM_CHECK(id >= 0 && id < vocab_size(), "BpeTokenizer::decode: token id ", id, " outside the vocabulary [0, ",
               vocab_size(), ")");
    if (id == pad_id || id == sot_id || id == eot_id || id == mask_id()) continue;
    const std::string& t = vocab_[size_t(id)];
    if (ends_with_eow(t)) {
      out.append(t, 0, t.size() - std::char_traits<char>::length(end_of_word));
      out += ' ';
    } else {
      out += t;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

void BpeTokenizer::save(const std::string& path) const {
  nlohmann::json j;
  j["type"] = "loom-bpe";
  j["version"] = 1;
  j["vocab"] = vocab_;
  nlohmann::json merges = nlohmann::json::array();
  for (const auto& [a, b] : merges_) merges.push_back({a, b});
  j["merges"] = std::move(merges);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    LOOM_CHECK(out, tmp, ": cannot open for writing");
    out << j.dump(1) << '\n';
    out.close();
    LOOM_CHECK(out, tmp, ": write failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw Error(str_cat(path, ": cannot write tokenizer (rename failed)"));
  }
}

BpeTokenizer BpeTokenizer::load(const std::string& path) {
  auto fail = [&](const std::string& why) { return Error(str_cat(path, ": bad tokenizer file: ", why)); };
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(str_cat(path, ": cannot open tokenizer (", std::filesystem::exists(path) ? "unreadable" : "no such file", ")"));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw fail(str_cat("bad JSON (", e.what(), ")"));
  }
  if (!j.is_object()) throw fail("expected a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (it.key() != "type" && it.key() != "version" && it.key() != "vocab" && it.key() != "merges")
      throw fail(str_cat("unknown key \"", it.key(), "\""));
  if (!j.contains("type") || j["type"] != "loom-bpe") throw fail("\"type\" must be \"loom-bpe\"");
  if (!j.contains("version") || j["version"] != 1) throw fail("\"version\" must be 1");
  if (!j.contains("vocab") || !j["vocab"].is_array()) throw fail("\"vocab\" must be an array of strings");
  if (!j.contains("merges") || !j["merges"].is_array()) throw fail("\"merges\" must be an array of [left, right] pairs");

  BpeTokenizer tok;
  for (size_t i = 0; i < j["vocab"].size(); ++i) {
    const auto& v = j["vocab"][i];
    if (!v.is_string() || v.get<std::string>().empty()) throw fail(str_cat("vocab[", i, "] must be a non-empty string"));
    tok.vocab_.push_back(v.get<std::string>());
  }
  if (tok.vocab_.size() < 4) throw fail("vocab must start with the 4 special tokens");
  for (size_t i = 0; i < 4; ++i)
    if (tok.vocab_[i] != kSpecials[i]) throw fail(str_cat("vocab[", i, "] must be \"", kSpecials[i], "\", got \"", tok.vocab_[i], "\""));
  tok.has_mask_ = tok.vocab_.size() > 4 && tok.vocab_[4] == kMaskToken;
  {
    std::set<std::string> seen;
    for (size_t i = 0; i < tok.vocab_.size(); ++i)
      if (!seen.insert(tok.vocab_[i]).second) throw fail(str_cat("vocab[", i, "] \"", tok.vocab_[i], "\" is a duplicate"));
  }
  tok.build_index();
  for (size_t i = 0; i < j["merges"].size(); ++i) {
    const auto& m = j["merges"][i];
    if (!m.is_array() || m.size() != 2 || !m[0].is_string() || !m[1].is_string())
      throw fail(str_cat("merges[", i, "] must be a pair of strings"));
    std::string a = m[0].get<std::string>(), b = m[1].get<std::string>();
    if (!tok.ids_.count(a) || !tok.ids_.count(b) || !tok.ids_.count(a + b))
      throw fail(str_cat("merges[", i, "] [\"", a, "\", \"", b, "\"] uses a token missing from the vocab"));
    tok.merges_.emplace_back(std::move(a), std::move(b));
  }
  tok.build_index();
  return tok;
}

}  // namespace loom::data
