#include <algorithm>
#include "data/manifest.h"
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include "core/device.h"
#include "core/error.h"

namespace loom::data {

namespace {
std::string json_type(const nlohmann::json& v) {
  if (v.is_number_integer()) return "integer";
  if (v.is_number()) return "number";
  return v.type_name();
}
}  // namespace

std::vector<int64_t> parse_labels(const nlohmann::json& v, const std::string& where) {
  if (!v.is_array()) throw Error(str_cat(where, "key \"labels\" must be a list of class ids, got ", json_type(v)));
  if (v.empty()) throw Error(str_cat(where, "key \"labels\" is empty (leave it out for a row without labels)"));
  std::vector<int64_t> out;
  for (const nlohmann::json& x : v) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0)
      throw Error(str_cat(where, "key \"labels\" must hold non-negative integers, got ", x.dump()));
    const int64_t id = x.get<int64_t>();
    if (std::find(out.begin(), out.end(), id) != out.end())
      throw Error(str_cat(where, "key \"labels\" lists class ", id, " twice"));
    out.push_back(id);
  }
  return out;
}

Manifest Manifest::load(const std::string& path, uint64_t max_bytes) {
  if (max_bytes == 0) max_bytes = host_memory_bytes() / 2;
  uint64_t bytes = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(str_cat(path, ": cannot open manifest (", std::filesystem::exists(path) ? "unreadable" : "no such file", ")"));
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  auto resolve = [&](const std::string& p) {
    std::filesystem::path fp(p);
    return (fp.is_absolute() ? fp : dir / fp).lexically_normal().string();
  };

  Manifest m;
  m.path = path;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    auto where = [&] { return str_cat(path, ":", lineno, ": "); };
    bytes += line.size() + sizeof(Example);  // about what the row takes once parsed
    if (bytes > max_bytes)
      throw Error(str_cat(where(), "the manifest's rows need more than ", max_bytes, " bytes of memory by here (half of "
                          "this machine's memory): split it into smaller manifests"));
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for numbers like 3e0333333
      throw Error(str_cat(where(), "bad JSON (", e.what(), ")"));
    }
    if (!row.is_object()) throw Error(str_cat(where(), "expected a JSON object, got ", json_type(row)));
    Example ex;
    for (auto it = row.begin(); it != row.end(); ++it) {
      const std::string& key = it.key();
      const nlohmann::json& v = it.value();
      if (key == "image" || key == "text" || key == "audio") {
        if (!v.is_string()) throw Error(str_cat(where(), "key \"", key, "\" must be a string, got ", json_type(v)));
        const std::string s = v.get<std::string>();
        if (key == "text") {
          ex.text = s;
        } else {
          if (s.empty()) throw Error(str_cat(where(), "key \"", key, "\" is an empty path"));
          (key == "image" ? ex.image : ex.audio) = resolve(s);
        }
      } else if (key == "label") {
        if (!v.is_number_integer()) throw Error(str_cat(where(), "key \"label\" must be an integer, got ", json_type(v)));
        ex.label = v.get<int64_t>();
        if (ex.label < 0) throw Error(str_cat(where(), "key \"label\" must be >= 0, got ", ex.label));
      } else if (key == "labels") {
        ex.labels = parse_labels(v, where());
      } else {
        throw Error(str_cat(where(), "unknown key \"", key, "\" (expected image, text, audio, label, labels)"));
      }
    }
    if (ex.label >= 0 && !ex.labels.empty())
      throw Error(str_cat(where(), "give \"label\" (one class) or \"labels\" (the classes present), not both"));
    m.rows.push_back(std::move(ex));
  }
  if (in.bad()) throw Error(str_cat(path, ": read error"));
  return m;
}

std::vector<unsigned char> read_blob(const Blob& b, const std::string& name) {
  std::ifstream in(b.file, std::ios::binary);
  if (!in) throw Error(str_cat(name, ": cannot open ", b.file));
  std::vector<unsigned char> bytes(size_t(b.size));
  in.seekg(b.offset);
  in.read(reinterpret_cast<char*>(bytes.data()), b.size);
  if (in.gcount() != b.size)
    throw Error(str_cat(name, ": truncated (", in.gcount(), " of ", b.size, " bytes at offset ", b.offset, " of ", b.file, ")"));
  return bytes;
}

}  // namespace loom::data
