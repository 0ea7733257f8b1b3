// Strict recipe reading. A Config wraps one YAML file; typed getters record every key they read, and
// check_unknown() then rejects any key nobody read, with a did-you-mean. Every error names the file,
// the line and the dotted key, and is raised before any work starts.
#pragma once
#include <map>
#include <set>
#include <string>
#include <vector>
#include <yaml-cpp/yaml.h>
#include "core/error.h"

namespace loom {

struct ConfigError : Error {
  using Error::Error;
};

class Config {
 public:
  static Config load(const std::string& path);
  static Config parse(const std::string& yaml_text, const std::string& source_name);

  // Applies "a.b.c=value" (value parsed as YAML). The key must exist in the recipe or be a known
  // optional key — unknown ones are caught by check_unknown() like any other.
  void apply_override(const std::string& assignment);

  bool has(const std::string& key) const;
  int64_t i64(const std::string& key) const;
  int64_t i64(const std::string& key, int64_t fallback) const;
  double f64(const std::string& key) const;
  double f64(const std::string& key, double fallback) const;
  bool boolean(const std::string& key, bool fallback) const;
  std::string str(const std::string& key) const;
  std::string str(const std::string& key, const std::string& fallback) const;
  // One of `choices`; anything else is an error listing them.
  std::string choice(const std::string& key, const std::vector<std::string>& choices, const std::string& fallback) const;
  std::vector<double> f64_list(const std::string& key, const std::vector<double>& fallback) const;
  std::vector<std::string> str_list(const std::string& key, const std::vector<std::string>& fallback) const;
  // A path: must exist (relative paths are taken from the current directory), unless missing files
  // are allowed (loom train --check), in which case a missing one is recorded and returned as is.
  std::string existing_path(const std::string& key) const;
  void allow_missing_files() { allow_missing_ = true; }
  bool missing_files_allowed() const { return allow_missing_; }
  // "file:line: key: path" of each missing file existing_path() let through.
  const std::vector<std::string>& missing_files() const { return missing_; }
  // Marks a whole subtree as read (for free-form sections).
  void accept(const std::string& key) const;
  // The raw node of a free-form section (accepted as read); undefined if absent.
  YAML::Node node(const std::string& key) const { accept(key); return find(key); }

  // The keys of the mapping at `key` (empty if it is not one), without marking them read.
  std::vector<std::string> keys(const std::string& key) const;
  // The length of the list at `key` (0 if it is not one).
  size_t list_size(const std::string& key) const;

  void check_unknown() const;
  [[noreturn]] void fail(const std::string& key, const std::string& what) const;
  // For a missing key: " (is 'stpes' on line 14 a typo?)" when a sibling in the file is a near miss, else "".
  std::string near_miss(const std::string& key) const;
  std::string dump() const;  // the resolved recipe, as YAML
  const std::string& source() const { return source_; }

 private:
  YAML::Node find(const std::string& key) const;  // null node if absent; marks the key read
  YAML::Node require(const std::string& key) const;
  std::string where(const std::string& key) const;  // "file:line: key"
  // "file:line" of a key, or the command-line override that set it.
  std::string origin(const std::string& key, const YAML::Node& node) const;
  YAML::Node root_;
  std::string source_;
  std::map<std::string, std::string> overrides_;  // dotted key -> "key=value" as given
  mutable std::set<std::string> read_;
  bool allow_missing_ = false;
  mutable std::vector<std::string> missing_;
};

// Edit distance, for did-you-mean suggestions.
size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace loom
