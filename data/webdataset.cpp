#include "data/webdataset.h"
#include <archive.h>
#include <archive_entry.h>
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include "core/error.h"

namespace loom::data {
namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxNames = 10'000'000;

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

// The names one brace group stands for: "000..127" (a range, zero-padded to its bounds' width when
// they are) or "a,b,c" (a list).
std::vector<std::string> brace_items(const std::string& body, const std::string& pattern) {
  const size_t dots = body.find("..");
  if (dots == std::string::npos) {
    std::vector<std::string> out;
    size_t start = 0;
    for (size_t comma; (comma = body.find(',', start)) != std::string::npos; start = comma + 1)
      out.push_back(body.substr(start, comma - start));
    out.push_back(body.substr(start));
    return out;
  }
  const std::string lo = body.substr(0, dots), hi = body.substr(dots + 2);
  LOOM_CHECK(all_digits(lo) && all_digits(hi) && lo.size() <= 18 && hi.size() <= 18, pattern, ": the range {", body,
             "} needs two non-negative integers, e.g. {000000..000127}");
  const int64_t a = std::stoll(lo), b = std::stoll(hi);
  LOOM_CHECK(a <= b, pattern, ": the range {", body, "} runs backwards");
  LOOM_CHECK(uint64_t(b - a) < kMaxNames, pattern, ": the range {", body, "} has more than ", kMaxNames, " names");
  const size_t width = lo.size() > 1 && lo[0] == '0' ? lo.size() : 0;
  std::vector<std::string> out;
  for (int64_t i = a; i <= b; ++i) {
    std::string s = std::to_string(i);
    if (s.size() < width) s.insert(0, width - s.size(), '0');
    out.push_back(std::move(s));
  }
  return out;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

enum class Kind { image, audio, text, label, json, other };
Kind kind_of(const std::string& ext) {
  static const std::map<std::string, Kind> kinds = {
      {"jpg", Kind::image}, {"jpeg", Kind::image}, {"png", Kind::image}, {"pgm", Kind::image}, {"ppm", Kind::image},
      {"bmp", Kind::image}, {"gif", Kind::image}, {"tga", Kind::image}, {"wav", Kind::audio}, {"flac", Kind::audio},
      {"ogg", Kind::audio}, {"opus", Kind::audio}, {"mp3", Kind::audio}, {"aiff", Kind::audio}, {"aif", Kind::audio},
      {"au", Kind::audio}, {"txt", Kind::text}, {"cls", Kind::label}, {"json", Kind::json}};
  auto it = kinds.find(ext);
  return it == kinds.end() ? Kind::other : it->second;
}

// The first bytes of a file: compressed shards are named as such (libarchive would only say it
// does not recognise them as tar).
std::string compression_of(const std::string& path) {
  unsigned char m[6] = {0};
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(m), 6);
  if (in.gcount() >= 2 && m[0] == 0x1f && m[1] == 0x8b) return "gzip";
  if (in.gcount() >= 4 && m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd) return "zstd";
  if (in.gcount() >= 3 && m[0] == 'B' && m[1] == 'Z' && m[2] == 'h') return "bzip2";
  if (in.gcount() >= 6 && m[0] == 0xfd && m[1] == '7' && m[2] == 'z' && m[3] == 'X' && m[4] == 'Z') return "xz";
  return "";
}

struct ArchiveReader {
  archive* a = archive_read_new();
  ~ArchiveReader() { archive_read_free(a); }
};
struct ArchiveWriter {
  archive* a = archive_write_new();
  ~ArchiveWriter() { archive_write_free(a); }
};

int64_t parse_label(const std::string& text, const std::string& where) {
  std::string t = text;
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  size_t i = 0;
  while (i < t.size() && std::isspace(static_cast<unsigned char>(t[i]))) ++i;
  t = t.substr(i);
  LOOM_CHECK(all_digits(t) && t.size() <= 18, where, ": a label must be a non-negative integer, got \"", text.substr(0, 40), "\"");
  return std::stoll(t);
}

std::string strip_newline(std::string s) {
  if (!s.empty() && s.back() == '\n') s.pop_back();
  if (!s.empty() && s.back() == '\r') s.pop_back();
  return s;
}

std::string read_text(const Blob& b, const std::string& name) {
  const std::vector<unsigned char> bytes = read_blob(b, name);
  return std::string(bytes.begin(), bytes.end());
}

// The samples of one shard's members, appended to `out`. `last_may_be_incomplete`: the members end at
// damage, so the last sample is kept only when it has every kind of member the one before it has.
// Returns how many samples that dropped (0 or 1).
int add_samples(const std::string& shard, const std::vector<TarMember>& members, bool last_may_be_incomplete,
                std::vector<Example>& out) {
  std::map<std::string, size_t> by_key;  // key -> index into `samples`
  struct Sample {
    std::string key;
    Example ex;
    bool any = false, has_text = false, has_label = false;
    unsigned kinds = 0;  // a bit per Kind among its members
  };
  std::vector<Sample> samples;
  for (const TarMember& m : members) {
    const size_t slash = m.name.rfind('/');
    const size_t dot = m.name.find('.', slash == std::string::npos ? 0 : slash + 1);
    if (dot == std::string::npos || dot == 0 || (slash != std::string::npos && dot == slash + 1)) continue;  // no key.ext
    const std::string key = m.name.substr(0, dot), ext = lower(m.name.substr(dot + 1));
    const Kind kind = kind_of(ext);
    if (kind == Kind::other) continue;
    auto [it, fresh] = by_key.try_emplace(key, samples.size());
    if (fresh) samples.push_back({key, {}, false});
    Sample& s = samples[it->second];
    s.kinds |= 1u << unsigned(kind);
    const std::string where = str_cat(shard, ":", m.name);
    const Blob blob{shard, m.offset, m.size};
    auto once = [&](bool taken, const char* what) {
      LOOM_CHECK(!taken, shard, ": sample ", key, " has two ", what, " members (", m.name, " and another)");
    };
    switch (kind) {
      case Kind::image:
        once(s.ex.image_blob.present(), "image");
        s.ex.image = where;
        s.ex.image_blob = blob;
        break;
      case Kind::audio:
        once(s.ex.audio_blob.present(), "audio");
        s.ex.audio = where;
        s.ex.audio_blob = blob;
        break;
      case Kind::text:
        once(s.has_text, "text");
        s.ex.text = strip_newline(read_text(blob, where));
        s.has_text = true;
        break;
      case Kind::label:
        once(s.has_label, "label");
        s.ex.label = parse_label(read_text(blob, where), where);
        s.has_label = true;
        break;
      case Kind::json: {
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(read_text(blob, where));
        } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for numbers like 3e0333333
          throw Error(str_cat(where, ": bad JSON (", e.what(), ")"));
        }
        LOOM_CHECK(j.is_object(), where, ": expected a JSON object");
        if (j.contains("text")) {
          once(s.has_text, "text");
          LOOM_CHECK(j["text"].is_string(), where, ": \"text\" must be a string");
          s.ex.text = j["text"].get<std::string>();
          s.has_text = true;
        }
        if (j.contains("label")) {
          once(s.has_label, "label");
          LOOM_CHECK(j["label"].is_number_integer() && j["label"].get<int64_t>() >= 0, where,
                     ": \"label\" must be a non-negative integer");
          s.ex.label = j["label"].get<int64_t>();
          s.has_label = true;
        }
        if (j.contains("labels")) {
          once(s.has_label, "label");
          s.ex.labels = parse_labels(j["labels"], str_cat(where, ": "));
          s.has_label = true;
        }
        break;
      }
      case Kind::other: break;
    }
    s.any = true;
  }
  int dropped = 0;
  if (last_may_be_incomplete && !samples.empty()) {
    const bool like_before = samples.size() >= 2 && (samples.back().kinds & samples[samples.size() - 2].kinds) ==
                                                        samples[samples.size() - 2].kinds;
    if (!like_before) {
      dropped = samples.back().any ? 1 : 0;
      samples.pop_back();
    }
  }
  for (Sample& s : samples)
    if (s.any) out.push_back(std::move(s.ex));
  return dropped;
}

}  // namespace

std::vector<std::string> expand_braces(const std::string& pattern) {
  const size_t open = pattern.find('{');
  const size_t close_first = pattern.find('}');
  if (open == std::string::npos) {
    LOOM_CHECK(close_first == std::string::npos, pattern, ": a '}' without its '{'");
    return {pattern};
  }
  const size_t close = pattern.find('}', open);
  LOOM_CHECK(close != std::string::npos, pattern, ": a '{' without its '}'");
  LOOM_CHECK(close_first > open, pattern, ": a '}' without its '{'");
  const std::string body = pattern.substr(open + 1, close - open - 1);
  LOOM_CHECK(body.find('{') == std::string::npos, pattern, ": nested braces are not supported");
  const std::string head = pattern.substr(0, open);
  const std::vector<std::string> rest = expand_braces(pattern.substr(close + 1));
  std::vector<std::string> out;
  for (const std::string& item : brace_items(body, pattern)) {
    LOOM_CHECK(out.size() + rest.size() <= kMaxNames, pattern, ": expands to more than ", kMaxNames, " names");
    for (const std::string& r : rest) out.push_back(head + item + r);
  }
  return out;
}

namespace {

int64_t parse_octal(const char* field, size_t n) {
  int64_t v = 0;
  bool any = false;
  for (size_t i = 0; i < n && field[i] != '\0'; ++i) {
    if (field[i] == ' ') { if (any) break; continue; }
    if (field[i] < '0' || field[i] > '7') return -1;
    v = v * 8 + (field[i] - '0');
    any = true;
  }
  return any ? v : -1;
}

// Where the data of the entry whose header records start at `header` begins: past any pax ('x',
// 'g') or GNU long-name ('L', 'K') records before its own header; -1 when the records are not
// whole. Needed after a damaged header, where libarchive no longer says where the stream stood.
int64_t data_offset_after_headers(const std::string& path, int64_t header, int64_t file_size) {
  std::ifstream in(path, std::ios::binary);
  for (int records = 0; records < 8 && header + 512 <= file_size; ++records) {
    char h[512];
    in.seekg(header);
    in.read(h, 512);
    if (in.gcount() != 512) return -1;
    const char type = h[156];
    if (type != 'x' && type != 'g' && type != 'L' && type != 'K') return header + 512;
    const int64_t size = parse_octal(h + 124, 12);
    if (size < 0) return -1;
    header += 512 + (size + 511) / 512 * 512;
  }
  return -1;
}

}  // namespace

TarIndex index_tar_prefix(const std::string& path) {
  LOOM_CHECK(fs::is_regular_file(path), path, ": no such shard");
  const std::string compressed = compression_of(path);
  LOOM_CHECK(compressed.empty(), path, ": a ", compressed, "-compressed shard; loom reads uncompressed tar only (members are "
             "read in place by offset): decompress it, or write shards with loom data pack");
  TarIndex index;
  index.file_size = int64_t(fs::file_size(path));
  ArchiveReader r;
  archive_read_support_format_tar(r.a);
  LOOM_CHECK(archive_read_open_filename(r.a, path.c_str(), 1 << 16) == ARCHIVE_OK, path, ": cannot open as tar (",
             archive_error_string(r.a) ? archive_error_string(r.a) : "unknown error", ")");
  auto why = [&] { return std::string(archive_error_string(r.a) ? archive_error_string(r.a) : "unknown error"); };
  struct Entry { std::string name; int64_t header, size; bool regular; };
  std::vector<Entry> entries;
  archive_entry* e = nullptr;
  bool data_cut = false;  // the last entry's data is damaged (else a header after it is, or nothing is)
  for (;;) {
    const int rc = archive_read_next_header(r.a, &e);
    if (rc == ARCHIVE_EOF) break;
    if (rc < ARCHIVE_WARN) {  // ARCHIVE_WARN: e.g. a name in another character set; the entry itself is whole
      index.damage = str_cat("corrupt tar after ", entries.size(), " members (", why(), ")");
      index.damage_at = 0;
      if (!entries.empty()) {  // the failed header starts where the last member's padded data ends
        const int64_t data = data_offset_after_headers(path, entries.back().header, index.file_size);
        index.damage_at = data < 0 ? entries.back().header : data + (entries.back().size + 511) / 512 * 512;
        if (data < 0) data_cut = true;  // its data's place is unknown: count it as damaged
      }
      break;
    }
    const char* u = archive_entry_pathname_utf8(e);
    const char* n = u ? u : archive_entry_pathname(e);
    entries.push_back({n ? n : "", int64_t(archive_read_header_position(r.a)), int64_t(archive_entry_size(e)),
                       archive_entry_filetype(e) == AE_IFREG});
    if (archive_read_data_skip(r.a) != ARCHIVE_OK) {
      index.damage = str_cat("member ", entries.back().name, " is truncated or corrupt (", why(), ")");
      index.damage_at = entries.back().header;
      data_cut = true;
      break;
    }
  }
  // A member's data ends where the next header starts, padded to 512-byte records; the last one
  // ends at the end-of-archive marker (or, in a damaged shard, where the damaged header starts).
  const int64_t end = index.damage.empty() ? int64_t(archive_read_header_position(r.a)) : index.damage_at;
  const size_t whole = entries.size() - (data_cut ? 1 : 0);
  for (size_t i = 0; i < whole; ++i) {
    const int64_t next = i + 1 < entries.size() ? entries[i + 1].header : end;
    const int64_t padded = (entries[i].size + 511) / 512 * 512;
    const int64_t offset = next - padded;
    if (entries[i].size < 0 || offset <= entries[i].header || offset + entries[i].size > index.file_size) {
      index.damage = str_cat("member ", entries[i].name, " lies outside the file (offset ", offset, ", ", entries[i].size, " bytes)");
      index.damage_at = entries[i].header;
      index.cut_member = entries[i].name;
      return index;
    }
    if (entries[i].regular) index.members.push_back({entries[i].name, offset, entries[i].size});
  }
  if (!index.damage.empty() && !entries.empty()) index.cut_member = entries.back().name;
  return index;
}

std::vector<TarMember> index_tar(const std::string& path) {
  TarIndex index = index_tar_prefix(path);
  if (!index.damage.empty()) throw Error(str_cat(path, ": ", index.damage));
  return std::move(index.members);
}

Manifest load_webdataset(const std::string& pattern, const std::string& on_error, WebDatasetReport* report) {
  LOOM_CHECK(on_error == "skip" || on_error == "fail", "load_webdataset: on_error must be skip or fail, got ", on_error);
  Manifest m;
  m.path = pattern;
  WebDatasetReport rep;
  for (const std::string& shard : expand_braces(pattern)) {
    try {
      std::vector<Example> rows;
      TarIndex index;
      if (on_error == "fail")
        index.members = index_tar(shard);
      else
        index = index_tar_prefix(shard);
      const bool damaged = !index.damage.empty();
      const int dropped = add_samples(shard, index.members, damaged, rows);
      if (damaged && rows.empty()) throw Error(str_cat(shard, ": ", index.damage));
      if (damaged)
        rep.cut.push_back(str_cat(shard, ": ", index.damage, " at byte ", index.damage_at, " of ", index.file_size, "; kept the ",
                                  rows.size(), " samples before it", dropped ? ", dropped the one in progress" : "",
                                  ", lost the rest (", index.file_size - index.damage_at, " bytes)"));
      m.rows.insert(m.rows.end(), std::make_move_iterator(rows.begin()), std::make_move_iterator(rows.end()));
      ++rep.shards;
    } catch (const Error& e) {
      if (on_error == "fail") throw;
      rep.skipped.push_back(e.what());
    }
  }
  rep.samples = int64_t(m.rows.size());
  if (report) *report = rep;
  return m;
}

PackReport pack_webdataset(const Manifest& manifest, const std::string& out_pattern, int64_t per_shard) {
  LOOM_CHECK(per_shard >= 1, "loom data pack: --per-shard must be >= 1, got ", per_shard);
  // Exactly one integer field: %d or %0Nd.
  const size_t pct = out_pattern.find('%');
  size_t j = pct + 1;
  if (pct != std::string::npos && j < out_pattern.size() && out_pattern[j] == '0') ++j;
  while (pct != std::string::npos && j < out_pattern.size() && std::isdigit(static_cast<unsigned char>(out_pattern[j]))) ++j;
  LOOM_CHECK(pct != std::string::npos && j < out_pattern.size() && out_pattern[j] == 'd' &&
                 out_pattern.find('%', j) == std::string::npos,
             "loom data pack: the output pattern '", out_pattern, "' needs exactly one shard-number field such as %06d");
  PackReport rep;
  const int64_t n = int64_t(manifest.rows.size());
  LOOM_CHECK(n > 0, manifest.path, ": nothing to pack");
  for (int64_t first = 0, shard = 0; first < n; first += per_shard, ++shard) {
    std::vector<char> name(out_pattern.size() + 32);
    std::snprintf(name.data(), name.size(), out_pattern.c_str(), int(shard));
    const std::string path = name.data(), tmp = path + ".partial";
    if (fs::path(path).has_parent_path()) fs::create_directories(fs::path(path).parent_path());
    {
      ArchiveWriter w;
      archive_write_set_format_pax_restricted(w.a);  // ustar, with pax records only where a name needs them
      LOOM_CHECK(archive_write_open_filename(w.a, tmp.c_str()) == ARCHIVE_OK, tmp, ": cannot write (",
                 archive_error_string(w.a) ? archive_error_string(w.a) : "unknown error", ")");
      auto put = [&](const std::string& member, const std::string& bytes) {
        std::unique_ptr<archive_entry, void (*)(archive_entry*)> e(archive_entry_new(), archive_entry_free);
        archive_entry_set_pathname(e.get(), member.c_str());
        archive_entry_set_size(e.get(), la_int64_t(bytes.size()));
        archive_entry_set_filetype(e.get(), AE_IFREG);
        archive_entry_set_perm(e.get(), 0644);
        archive_entry_set_mtime(e.get(), 0, 0);  // the same shard bytes for the same manifest
        LOOM_CHECK(archive_write_header(w.a, e.get()) == ARCHIVE_OK, tmp, ": writing ", member, " failed (",
                   archive_error_string(w.a) ? archive_error_string(w.a) : "unknown error", ")");
        LOOM_CHECK(archive_write_data(w.a, bytes.data(), bytes.size()) == la_ssize_t(bytes.size()), tmp, ": writing ", member,
                   " failed (", archive_error_string(w.a) ? archive_error_string(w.a) : "disk full?", ")");
      };
      auto file_bytes = [&](const std::string& p, Kind want, const char* what) {
        const std::string ext = lower(fs::path(p).extension().string().substr(fs::path(p).extension().string().empty() ? 0 : 1));
        LOOM_CHECK(kind_of(ext) == want, manifest.path, ": the ", what, " ", p, " has extension '", ext,
                   "', which a WebDataset reader would not recognise");
        std::ifstream in(p, std::ios::binary);
        LOOM_CHECK(in, manifest.path, ": cannot read ", what, " ", p);
        std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        return std::pair{ext, bytes};
      };
      for (int64_t i = first; i < std::min(n, first + per_shard); ++i) {
        const Example& ex = manifest.rows[size_t(i)];
        char key[32];
        std::snprintf(key, sizeof key, "%09lld", static_cast<long long>(i));
        if (!ex.image.empty()) {
          auto [ext, bytes] = file_bytes(ex.image, Kind::image, "image");
          put(str_cat(key, ".", ext), bytes);
        }
        if (!ex.audio.empty()) {
          auto [ext, bytes] = file_bytes(ex.audio, Kind::audio, "audio");
          put(str_cat(key, ".", ext), bytes);
        }
        if (!ex.text.empty()) put(str_cat(key, ".txt"), ex.text);
        if (ex.label >= 0) put(str_cat(key, ".cls"), std::to_string(ex.label));
        if (!ex.labels.empty()) put(str_cat(key, ".json"), nlohmann::json{{"labels", ex.labels}}.dump());
        ++rep.samples;
      }
      LOOM_CHECK(archive_write_close(w.a) == ARCHIVE_OK, tmp, ": closing failed (",
                 archive_error_string(w.a) ? archive_error_string(w.a) : "disk full?", ")");
    }
    fs::rename(tmp, path);
    rep.shards.push_back(path);
  }
  return rep;
}

}  // namespace loom::data
