#include "data/hf_tokenizer_file.h"
#include <fstream>
#include "core/json_integer.h"
#include "core/error.h"

namespace loom::data::hf {

using json = nlohmann::json;

json read_tokenizer_json(const std::string& path) {
  std::ifstream f(path);
  LOOM_CHECK(f, path, ": cannot open the tokenizer file");
  try {
    return json::parse(f);
  } catch (const std::exception& e) {
    throw Error(str_cat(path, ": not a tokenizer.json (", e.what(), ")"));
  }
}

const json& model_of(const json& file, const std::string& type, const std::string& who, const std::string& path) {
  const json& m = file.at("model");
  const std::string have = m.value("type", "");
  LOOM_CHECK(have == type, path, ": the tokenizer's model is '", have, "', not ", type, " (", who, ")");
  return m;
}

Vocabulary Vocabulary::from(const json& model, const std::string& path) {
  const json& v = model.at("vocab");
  LOOM_CHECK(v.is_object() && !v.empty(), path, ": model.vocab is not a non-empty mapping");
  Vocabulary out;
  out.tokens.resize(v.size());
  for (auto it = v.begin(); it != v.end(); ++it) {
    const int64_t id = json_int64(it.value(), str_cat(path, ": model.vocab id of '", it.key(), "'"));
    LOOM_CHECK(id >= 0 && id < int64_t(v.size()) && out.tokens[size_t(id)].empty(), path, ": model.vocab id ", id,
               " of '", it.key(), "' is out of range or repeated");
    out.tokens[size_t(id)] = it.key();
    out.ids[it.key()] = id;
  }
  return out;
}

int64_t Vocabulary::required(const std::string& token, const std::string& path) const {
  auto it = ids.find(token);
  LOOM_CHECK(it != ids.end(), path, ": the vocabulary has no ", token, " token");
  return it->second;
}

std::vector<std::pair<std::string, int64_t>> special_tokens(const json& file) {
  std::vector<std::pair<std::string, int64_t>> out;
  for (const json& a : file.value("added_tokens", json::array()))
    if (a.value("special", false)) out.emplace_back(a.at("content").get<std::string>(), json_int64(a.at("id"), "added_tokens id"));
  return out;
}

std::vector<int64_t> encode_around_specials(const std::string& text,
                                            const std::vector<std::pair<std::string, int64_t>>& specials,
                                            const std::function<std::vector<int64_t>(const std::string&)>& plain) {
  std::vector<int64_t> ids;
  size_t from = 0;
  for (;;) {
    size_t best = std::string::npos, len = 0;
    int64_t id = -1;
    for (const auto& [content, tid] : specials) {
      const size_t at = text.find(content, from);
      if (at != std::string::npos && (at < best || (at == best && content.size() > len))) best = at, len = content.size(), id = tid;
    }
    const std::vector<int64_t> part = plain(text.substr(from, best == std::string::npos ? std::string::npos : best - from));
    ids.insert(ids.end(), part.begin(), part.end());
    if (best == std::string::npos) return ids;
    ids.push_back(id);
    from = best + len;
  }
}

}  // namespace loom::data::hf
