#include "trainers/config.h"
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace loom {
namespace {

std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  std::stringstream ss(key);
  std::string p;
  while (std::getline(ss, p, '.')) parts.push_back(p);
  return parts;
}

bool is_index(const std::string& p) { return !p.empty() && p.find_first_not_of("0123456789") == std::string::npos; }

// The child of a map by name, or of a sequence by index ("stages.1.task"); undefined if absent. Const
// lookups only, so nothing is inserted.
YAML::Node child_of(const YAML::Node& n, const std::string& p) {
  if (n.IsMap()) return n[p];
  if (n.IsSequence() && is_index(p) && std::stoull(p) < n.size()) return n[size_t(std::stoull(p))];
  return YAML::Node(YAML::NodeType::Undefined);
}

std::string line_of(const YAML::Node& n) {
  return n.Mark().line >= 0 ? std::to_string(n.Mark().line + 1) : "?";
}

}  // namespace

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

Config Config::load(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw ConfigError(str_cat(path, ": recipe file not found or unreadable"));
  std::stringstream text;
  text << f.rdbuf();
  return parse(text.str(), path);
}

Config Config::parse(const std::string& text, const std::string& source_name) {
  Config c;
  c.source_ = source_name;
  try {
    c.root_ = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(str_cat(source_name, ":", e.mark.line + 1, ": YAML syntax error: ", e.msg));
  }
  if (!c.root_.IsMap()) throw ConfigError(str_cat(source_name, ": a recipe must be a YAML mapping"));
  return c;
}

void Config::apply_override(const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError(str_cat("override '", assignment, "': expected key.path=value"));
  const std::string key = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  YAML::Node v;
  try {
    v = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    throw ConfigError(str_cat("override '", assignment, "': value is not valid YAML: ", e.msg));
  }
  auto parts = split_key(key);
  // A list item is addressed by its index (stages.1.steps=100); an index past the end is an error.
  auto step_into = [&](YAML::Node& at, const std::string& p) -> YAML::Node {
    if (at.IsSequence()) {
      if (!is_index(p) || std::stoull(p) >= at.size())
        throw ConfigError(str_cat("override '", assignment, "': '", p, "' is not an index of that list (it has ",
                                  at.size(), " items)"));
      return at[size_t(std::stoull(p))];
    }
    return at[p];
  };
  std::vector<YAML::Node> chain{root_};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = step_into(chain.back(), parts[i]);
    if (next.IsDefined() && !next.IsNull() && !next.IsMap() && !next.IsSequence())
      throw ConfigError(str_cat("override '", assignment, "': '", parts[i], "' is not a section"));
    chain.push_back(next);
  }
  YAML::Node leaf = step_into(chain.back(), parts.back());
  leaf = v;
  overrides_[key] = assignment;
}

std::string Config::origin(const std::string& key, const YAML::Node& node) const {
  for (const auto& [k, assignment] : overrides_)
    if (key == k || key.rfind(k + ".", 0) == 0) return str_cat("override '", assignment, "'");
  return str_cat(source_, ":", line_of(node));
}

YAML::Node Config::find(const std::string& key) const {
  read_.insert(key);
  YAML::Node n;
  n.reset(root_);  // (yaml-cpp: assignment would overwrite the tree; reset rebinds)
  for (const auto& p : split_key(key)) {
    const YAML::Node& cn = n;
    YAML::Node child = child_of(cn, p);
    if (!child.IsDefined()) return YAML::Node(YAML::NodeType::Undefined);
    n.reset(child);
  }
  return n;
}

bool Config::has(const std::string& key) const {
  YAML::Node n = find(key);
  return n.IsDefined() && !n.IsNull();
}

std::string Config::where(const std::string& key) const {
  // The deepest existing node on the key's path gives the line.
  YAML::Node n;
  n.reset(root_);
  YAML::Node deepest;
  for (const auto& p : split_key(key)) {
    const YAML::Node& cn = n;
    YAML::Node child = child_of(cn, p);
    if (!child.IsDefined()) break;
    n.reset(child);
    deepest.reset(n);
  }
  return str_cat(origin(key, deepest.IsDefined() ? deepest : root_), ": ", key);
}

void Config::fail(const std::string& key, const std::string& what) const {
  throw ConfigError(str_cat(where(key), ": ", what));
}

std::string Config::near_miss(const std::string& key) const {
  const size_t dot = key.rfind('.');
  const std::string parent = dot == std::string::npos ? "" : key.substr(0, dot);
  const std::string name = dot == std::string::npos ? key : key.substr(dot + 1);
  YAML::Node p;
  p.reset(root_);
  if (!parent.empty()) {
    const std::set<std::string> before = read_;
    p.reset(find(parent));
    read_ = before;  // looking is not reading
  }
  if (!p.IsMap()) return "";
  for (auto it = p.begin(); it != p.end(); ++it) {
    const std::string sib = it->first.IsScalar() ? it->first.Scalar() : std::string();
    if (sib != name && edit_distance(sib, name) <= 2)
      return str_cat(" (is '", sib, "' on line ", line_of(it->first), " a typo?)");
  }
  return "";
}

YAML::Node Config::require(const std::string& key) const {
  YAML::Node n = find(key);
  if (!n.IsDefined() || n.IsNull()) fail(key, "required key is missing" + near_miss(key));
  return n;
}

namespace {
template <class T> T scalar_as(const Config& c, const YAML::Node& n, const std::string& key, const char* type) {
  if (!n.IsScalar()) c.fail(key, str_cat("expected ", type, ", got a ", n.IsMap() ? "mapping" : "list"));
  T v;
  if (!YAML::convert<T>::decode(n, v)) c.fail(key, str_cat("expected ", type, ", got '", n.Scalar(), "'"));
  return v;
}
}  // namespace

int64_t Config::i64(const std::string& key) const { return scalar_as<int64_t>(*this, require(key), key, "an integer"); }
int64_t Config::i64(const std::string& key, int64_t fb) const { return has(key) ? i64(key) : fb; }
double Config::f64(const std::string& key) const { return scalar_as<double>(*this, require(key), key, "a number"); }
double Config::f64(const std::string& key, double fb) const { return has(key) ? f64(key) : fb; }
bool Config::boolean(const std::string& key, bool fb) const {
  return has(key) ? scalar_as<bool>(*this, require(key), key, "true or false") : fb;
}
std::string Config::str(const std::string& key) const { return scalar_as<std::string>(*this, require(key), key, "a string"); }
std::string Config::str(const std::string& key, const std::string& fb) const { return has(key) ? str(key) : fb; }

std::string Config::choice(const std::string& key, const std::vector<std::string>& choices, const std::string& fb) const {
  std::string v = str(key, fb);
  if (std::find(choices.begin(), choices.end(), v) == choices.end()) {
    std::string all;
    for (const auto& c : choices) all += (all.empty() ? "" : ", ") + c;
    fail(key, str_cat("'", v, "' is not one of: ", all));
  }
  return v;
}

std::vector<double> Config::f64_list(const std::string& key, const std::vector<double>& fb) const {
  if (!has(key)) return fb;
  YAML::Node n = require(key);
  if (!n.IsSequence()) fail(key, "expected a list of numbers");
  std::vector<double> out;
  for (const auto& e : n) out.push_back(scalar_as<double>(*this, e, key, "a number"));
  return out;
}

std::vector<std::string> Config::str_list(const std::string& key, const std::vector<std::string>& fb) const {
  if (!has(key)) return fb;
  YAML::Node n = require(key);
  if (!n.IsSequence()) fail(key, "expected a list of strings");
  std::vector<std::string> out;
  for (const auto& e : n) out.push_back(scalar_as<std::string>(*this, e, key, "a string"));
  return out;
}

std::string Config::existing_path(const std::string& key) const {
  std::string p = str(key);
  if (!std::filesystem::exists(p)) {
    if (!allow_missing_) fail(key, str_cat("file not found: ", p));
    const std::string entry = str_cat(where(key), ": ", p);
    if (std::find(missing_.begin(), missing_.end(), entry) == missing_.end()) missing_.push_back(entry);
  }
  return p;
}

std::vector<std::string> Config::keys(const std::string& key) const {
  const std::set<std::string> before = read_;
  YAML::Node n = find(key);
  read_ = before;  // looking is not reading
  std::vector<std::string> out;
  if (n.IsMap())
    for (auto it = n.begin(); it != n.end(); ++it) {
      if (!it->first.IsScalar()) fail(key, "a key must be a plain name, not a list or a mapping");
      out.push_back(it->first.Scalar());
    }
  return out;
}

size_t Config::list_size(const std::string& key) const {
  YAML::Node n = find(key);
  return n.IsSequence() ? n.size() : 0;
}

void Config::accept(const std::string& key) const { read_.insert(key + ".*"); }

void Config::check_unknown() const {
  // Walk every mapping key; a key is known if it was read, is a prefix of a read key, or lies under an accepted subtree.
  std::vector<std::pair<std::string, YAML::Node>> stack{{"", root_}};
  while (!stack.empty()) {
    auto [prefix, node] = stack.back();
    stack.pop_back();
    if (node.IsSequence()) {  // list items are keys "prefix.0", "prefix.1", ... (e.g. stages)
      bool read_below = false;
      for (const auto& r : read_) read_below = read_below || r.rfind(prefix + ".", 0) == 0;
      if (!read_below) continue;  // a list value (betas, templates), read as a whole
      for (size_t i = 0; i < node.size(); ++i) {
        const std::string key = prefix + "." + std::to_string(i);
        bool used = false;
        for (const auto& r : read_) used = used || r == key || r.rfind(key + ".", 0) == 0;
        if (used) stack.push_back({key, node[i]});
      }
      continue;
    }
    if (!node.IsMap()) continue;
    for (auto it = node.begin(); it != node.end(); ++it) {
      // YAML allows a list or a mapping as a key ("? [a, b]: 1"); a recipe does not (found by fuzz_recipe).
      if (!it->first.IsScalar())
        throw ConfigError(str_cat(source_, ":", it->first.Mark().line + 1, ": ", prefix.empty() ? "the top level" : prefix,
                                  ": a key must be a plain name, not a list or a mapping"));
      const std::string name = it->first.as<std::string>();
      const std::string key = prefix.empty() ? name : prefix + "." + name;
      bool known = read_.count(key) > 0, below = false;
      for (const auto& r : read_) {
        if (r.size() > key.size() && r.compare(0, key.size() + 1, key + ".") == 0) below = true;
        if (r.size() > 2 && r.compare(r.size() - 2, 2, ".*") == 0 && key.rfind(r.substr(0, r.size() - 1), 0) == 0) known = true;
      }
      if (below) { stack.push_back({key, it->second}); continue; }
      if (known) continue;
      // Suggest the closest known sibling: the next segment, under this prefix, of any key that was read.
      std::string best;
      size_t best_d = 3;
      const std::string under = prefix.empty() ? "" : prefix + ".";
      for (const auto& r : read_) {
        if (r.compare(0, under.size(), under) != 0) continue;
        std::string sib = r.substr(under.size());
        sib = sib.substr(0, sib.find('.'));
        if (sib == "*" || sib.empty()) continue;
        const size_t d = edit_distance(sib, name);
        if (d < best_d) { best_d = d; best = sib; }
      }
      throw ConfigError(str_cat(origin(key, it->first), ": ", key, ": unknown key",
                                best.empty() ? "" : str_cat(" (did you mean '", best, "'?)")));
    }
  }
}

std::string Config::dump() const {
  YAML::Emitter e;
  e << root_;
  return e.c_str();
}

}  // namespace loom
