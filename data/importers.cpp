#include "data/importers.h"
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include "core/error.h"

namespace loom::data {
namespace fs = std::filesystem;

namespace {

struct Row {
  std::string media;  // absolute path of the image or audio file
  bool audio = false;
  std::string text;
  int64_t label = -1;
  std::vector<int64_t> labels;  // multi-label sets (AudioSet)
};

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_audio_ext(const std::string& ext) {
  static const std::set<std::string> e = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au"};
  return e.count(lower(ext)) > 0;
}
bool is_image_ext(const std::string& ext) {
  static const std::set<std::string> e = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".pgm", ".ppm", ".tga"};
  return e.count(lower(ext)) > 0;
}

// A CSV file with a header row: the records by line number, fields checked against the header.
struct Csv {
  std::string path;
  std::vector<std::string> header;
  std::vector<std::pair<int64_t, std::vector<std::string>>> records;  // (line, fields)
  size_t column(const std::string& name) const {
    for (size_t i = 0; i < header.size(); ++i)
      if (header[i] == name) return i;
    std::string have;
    for (const std::string& h : header) have += (have.empty() ? "" : ", ") + h;
    throw Error(str_cat(path, ":1: no column '", name, "' (the header has: ", have, ")"));
  }
};

Csv read_csv(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LOOM_CHECK(in, path, ": cannot read");
  Csv csv;
  csv.path = path;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (n == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line = line.substr(3);  // a UTF-8 byte-order mark
    if (line.empty()) continue;
    std::vector<std::string> fields = parse_csv_line(line, str_cat(path, ":", n));
    if (csv.header.empty()) {
      csv.header = std::move(fields);
      continue;
    }
    LOOM_CHECK(fields.size() == csv.header.size(), path, ":", n, ": ", fields.size(), " fields, and the header has ",
               csv.header.size());
    csv.records.push_back({n, std::move(fields)});
  }
  LOOM_CHECK(!csv.header.empty(), path, ": empty (no header row)");
  return csv;
}

// Every file under `root` whose extension passes `keep`, by file name and by stem (a name seen
// twice keeps its first path in sorted order, and is remembered as ambiguous).
struct FileIndex {
  std::map<std::string, std::string> by_name, by_stem;
  std::set<std::string> ambiguous;
  const std::string* find(const std::string& key, bool stem) const {
    const auto& m = stem ? by_stem : by_name;
    auto it = m.find(key);
    return it == m.end() ? nullptr : &it->second;
  }
};
FileIndex index_files(const std::string& root, bool (*keep)(const std::string&)) {
  std::vector<fs::path> files;
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::follow_directory_symlink);
       it != fs::recursive_directory_iterator(); ++it)
    if (it->is_regular_file() && keep(it->path().extension().string())) files.push_back(it->path());
  std::sort(files.begin(), files.end());
  FileIndex idx;
  for (const fs::path& p : files) {
    const std::string abs = fs::absolute(p).lexically_normal().string();
    if (!idx.by_name.emplace(p.filename().string(), abs).second) idx.ambiguous.insert(p.filename().string());
    if (!idx.by_stem.emplace(p.stem().string(), abs).second) idx.ambiguous.insert(p.stem().string());
  }
  return idx;
}

// The splits to read: `wanted` (checked against `have`) or all of them.
std::vector<std::string> splits_of(const std::string& format, const std::vector<std::string>& have, const std::string& wanted) {
  if (wanted.empty()) return have;
  if (std::find(have.begin(), have.end(), wanted) != have.end()) return {wanted};
  std::string list;
  for (const std::string& s : have) list += (list.empty() ? "" : ", ") + s;
  throw Error(str_cat("loom data import ", format, ": --split ", wanted, " is not one of: ", list));
}

// A missing media file: an error naming where the row is, or (skip_missing) one more left out.
struct Missing {
  const ImportOptions& opt;
  int64_t count = 0;
  bool skip(const std::string& where, const std::string& what) {
    if (!opt.skip_missing) throw Error(str_cat(where, ": ", what, " (--skip-missing leaves such rows out)"));
    ++count;
    return true;
  }
};

std::string spaced(std::string s) {
  std::replace(s.begin(), s.end(), '_', ' ');
  return s;
}

// ---- Karpathy's split files (COCO, Flickr30k) ----
std::vector<Row> karpathy(const std::string& format, const std::string& root, const ImportOptions& opt, Missing& missing) {
  const std::string json_path = (fs::path(root) / (format == "coco" ? "dataset_coco.json" : "dataset_flickr30k.json")).string();
  LOOM_CHECK(fs::is_regular_file(json_path), json_path, ": no such file (Karpathy's split file for ", format, ")");
  nlohmann::json j;
  try {
    std::ifstream in(json_path);
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(str_cat(json_path, ": bad JSON (", e.what(), ")"));
  }
  LOOM_CHECK(j.is_object() && j.contains("images") && j["images"].is_array(), json_path, ": expected {\"images\": [...]}");
  const std::vector<std::string> want = splits_of(format, {"train", "val", "test"}, opt.split);
  std::vector<Row> rows;
  const auto& images = j["images"];
  for (size_t i = 0; i < images.size(); ++i) {
    const auto& im = images[i];
    const std::string where = str_cat(json_path, ": images[", i, "]");
    LOOM_CHECK(im.is_object() && im.contains("filename") && im["filename"].is_string() && im.contains("split") &&
                   im["split"].is_string() && im.contains("sentences") && im["sentences"].is_array(),
               where, ": expected filename, split and sentences");
    std::string split = im["split"].get<std::string>();
    if (split == "restval") split = "train";
    if (std::find(want.begin(), want.end(), split) == want.end()) continue;
    const std::string name = im["filename"].get<std::string>();
    const std::string dir = im.contains("filepath") && im["filepath"].is_string() ? im["filepath"].get<std::string>() : "";
    std::vector<fs::path> tried = {fs::path(root) / dir / name, fs::path(root) / name, fs::path(root) / "images" / name,
                                   fs::path(root) / "flickr30k-images" / name};
    std::string found;
    for (const fs::path& p : tried)
      if (fs::is_regular_file(p)) {
        found = fs::absolute(p).lexically_normal().string();
        break;
      }
    if (found.empty() && missing.skip(where, str_cat("no image file ", name, " (looked for ", tried[0].string(), " and under ",
                                                      root, ", images/, flickr30k-images/)")))
      continue;
    LOOM_CHECK(!im["sentences"].empty(), where, ": no sentences");
    for (size_t k = 0; k < im["sentences"].size(); ++k) {
      const auto& s = im["sentences"][k];
      LOOM_CHECK(s.is_object() && s.contains("raw") && s["raw"].is_string(), where, ".sentences[", k, "]: expected a \"raw\" caption");
      rows.push_back({found, false, s["raw"].get<std::string>(), -1, {}});
    }
  }
  return rows;
}

// ---- AudioCaps ----
std::vector<Row> audiocaps(const std::string& root, const ImportOptions& opt, Missing& missing) {
  std::vector<std::string> have;
  for (const char* s : {"train", "val", "test"})
    if (fs::is_regular_file(fs::path(root) / (std::string(s) + ".csv"))) have.push_back(s);
  LOOM_CHECK(!have.empty(), root, ": no train.csv, val.csv or test.csv (AudioCaps' caption files)");
  const FileIndex audio = index_files(root, is_audio_ext);
  std::vector<Row> rows;
  for (const std::string& split : splits_of("audiocaps", have, opt.split)) {
    const Csv csv = read_csv((fs::path(root) / (split + ".csv")).string());
    const size_t cid = csv.column("audiocap_id"), yid = csv.column("youtube_id"), st = csv.column("start_time"),
                 cap = csv.column("caption");
    for (const auto& [line, f] : csv.records) {
      const std::string where = str_cat(csv.path, ":", line);
      LOOM_CHECK(!f[cap].empty(), where, ": empty caption");
      const std::string* path = nullptr;
      for (const std::string& key : {f[cid], f[yid], "Y" + f[yid], f[yid] + "_" + f[st], "Y" + f[yid] + "_" + f[st]})
        if (!key.empty() && (path = audio.find(key, true))) break;
      if (!path && missing.skip(where, str_cat("no audio file for audiocap_id ", f[cid], " / youtube_id ", f[yid], " under ", root)))
        continue;
      rows.push_back({*path, true, f[cap], -1, {}});
    }
  }
  return rows;
}

// ---- Clotho ----
std::vector<Row> clotho(const std::string& root, const ImportOptions& opt, Missing& missing) {
  std::vector<std::string> have;
  for (const char* s : {"development", "validation", "evaluation"})
    if (fs::is_regular_file(fs::path(root) / ("clotho_captions_" + std::string(s) + ".csv"))) have.push_back(s);
  LOOM_CHECK(!have.empty(), root, ": no clotho_captions_{development,validation,evaluation}.csv");
  const FileIndex audio = index_files(root, is_audio_ext);
  std::vector<Row> rows;
  for (const std::string& split : splits_of("clotho", have, opt.split)) {
    const Csv csv = read_csv((fs::path(root) / ("clotho_captions_" + split + ".csv")).string());
    const size_t file = csv.column("file_name");
    std::vector<size_t> caps;
    for (const std::string& h : csv.header)
      if (h.rfind("caption_", 0) == 0) caps.push_back(csv.column(h));
    LOOM_CHECK(caps.size() == 5, csv.path, ":1: Clotho has five captions per clip (caption_1 .. caption_5), the header names ",
               caps.size());
    for (const auto& [line, f] : csv.records) {
      const std::string where = str_cat(csv.path, ":", line);
      int64_t given = 0;
      for (size_t c : caps) given += !f[c].empty();
      LOOM_CHECK(given == 5, where, ": ", f[file], " has ", given, " of its 5 captions");
      if (audio.ambiguous.count(f[file]))
        throw Error(str_cat(where, ": two audio files named ", f[file], " under ", root, " (import one split's folder at a time)"));
      const std::string* path = audio.find(f[file], false);
      if (!path && missing.skip(where, str_cat("no audio file ", f[file], " under ", root))) continue;
      for (size_t c : caps) rows.push_back({*path, true, f[c], -1, {}});
    }
  }
  return rows;
}

// ---- ESC-50 ----
std::vector<Row> esc50(const std::string& root, const ImportOptions& opt, Missing& missing, std::vector<std::string>& classes) {
  const Csv csv = read_csv((fs::path(root) / "meta" / "esc50.csv").string());
  const size_t file = csv.column("filename"), fold = csv.column("fold"), target = csv.column("target"),
               category = csv.column("category");
  std::string keep_fold;
  bool negate = false;
  if (!opt.split.empty()) {
    const std::string s = opt.split;
    negate = s.rfind("not-", 0) == 0;
    keep_fold = negate ? s.substr(4) : s;
    LOOM_CHECK(keep_fold.size() == 5 && keep_fold.rfind("fold", 0) == 0 && keep_fold[4] >= '1' && keep_fold[4] <= '5',
               "loom data import esc50: --split ", s, " is not one of fold1 .. fold5, not-fold1 .. not-fold5");
    keep_fold = keep_fold.substr(4);
  }
  std::map<int64_t, std::string> names;
  std::vector<Row> rows;
  for (const auto& [line, f] : csv.records) {
    const std::string where = str_cat(csv.path, ":", line);
    int64_t label = -1;
    try {
      size_t used = 0;
      label = std::stoll(f[target], &used);
      if (used != f[target].size()) label = -1;
    } catch (const std::exception&) {
    }
    LOOM_CHECK(label >= 0, where, ": target '", f[target], "' is not a class number");
    auto [it, fresh] = names.emplace(label, f[category]);
    LOOM_CHECK(fresh || it->second == f[category], where, ": target ", label, " is '", f[category], "' here and '", it->second,
               "' above");
    if (!keep_fold.empty() && ((f[fold] == keep_fold) == negate)) continue;
    const fs::path p = fs::path(root) / "audio" / f[file];
    if (!fs::is_regular_file(p) && missing.skip(where, str_cat("no audio file ", p.string()))) continue;
    rows.push_back({fs::absolute(p).lexically_normal().string(), true, spaced(f[category]), label, {}});
  }
  for (int64_t k = 0; k < int64_t(names.size()); ++k) {
    LOOM_CHECK(names.count(k), csv.path, ": the targets are not 0 .. ", names.size() - 1, " (", k, " is missing)");
    classes.push_back(spaced(names[k]));
  }
  return rows;
}

// ---- AudioSet ----
std::string trimmed(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}
// "30.000" -> "30" (how download scripts name the clips), else the field itself.
std::string whole_seconds(const std::string& s) {
  const size_t dot = s.find('.');
  return dot != std::string::npos && s.find_first_not_of('0', dot + 1) == std::string::npos ? s.substr(0, dot) : s;
}

std::vector<Row> audioset(const std::string& root, const ImportOptions& opt, Missing& missing, std::vector<std::string>& classes) {
  const Csv index = read_csv((fs::path(root) / "class_labels_indices.csv").string());
  const size_t ci = index.column("index"), cm = index.column("mid"), cn = index.column("display_name");
  std::map<std::string, int64_t> by_mid;
  for (const auto& [line, f] : index.records) {
    const std::string where = str_cat(index.path, ":", line);
    LOOM_CHECK(f[ci] == std::to_string(classes.size()), where, ": index '", f[ci], "', expected ", classes.size(),
               " (the classes are 0 .. N-1 in order)");
    LOOM_CHECK(by_mid.emplace(f[cm], int64_t(classes.size())).second, where, ": mid ", f[cm], " is listed twice");
    classes.push_back(f[cn]);
  }
  LOOM_CHECK(!classes.empty(), index.path, ": no classes");
  std::vector<std::string> have;
  for (const char* s : {"balanced_train", "unbalanced_train", "eval"})
    if (fs::is_regular_file(fs::path(root) / (std::string(s) + "_segments.csv"))) have.push_back(s);
  LOOM_CHECK(!have.empty(), root, ": no balanced_train_segments.csv, unbalanced_train_segments.csv or eval_segments.csv");
  const FileIndex audio = index_files(root, is_audio_ext);
  std::vector<Row> rows;
  for (const std::string& split : splits_of("audioset", have, opt.split)) {
    // "# YTID, start_seconds, end_seconds, positive_labels" after two comment lines, then
    // --PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"
    const std::string path = (fs::path(root) / (split + "_segments.csv")).string();
    std::ifstream in(path, std::ios::binary);
    LOOM_CHECK(in, path, ": cannot read");
    std::string line;
    int64_t n = 0;
    while (std::getline(in, line)) {
      ++n;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || line[0] == '#') continue;
      const std::string where = str_cat(path, ":", n);
      // Not RFC 4180: the separators are ", ", so the quoted list starts after a space. Three
      // fields, then the rest of the line is the list, its quotes stripped.
      std::vector<std::string> f;
      size_t from = 0;
      for (int k = 0; k < 3 && from <= line.size(); ++k) {
        const size_t comma = line.find(',', from);
        if (comma == std::string::npos) break;
        f.push_back(trimmed(line.substr(from, comma - from)));
        from = comma + 1;
      }
      LOOM_CHECK(f.size() == 3 && from < line.size(), where, ": ", f.size() + (from < line.size()),
                 " fields, expected YTID, start_seconds, end_seconds, positive_labels");
      std::string list = trimmed(line.substr(from));
      if (list.size() >= 2 && list.front() == '"' && list.back() == '"') list = list.substr(1, list.size() - 2);
      LOOM_CHECK(list.find('"') == std::string::npos, where, ": positive_labels must be one quoted list, got ", trimmed(line.substr(from)));
      f.push_back(list);
      LOOM_CHECK(!f[0].empty(), where, ": empty YTID");
      Row r;
      r.audio = true;
      std::string text;
      size_t at = 0;
      while (at <= f[3].size()) {
        const size_t comma = std::min(f[3].find(',', at), f[3].size());
        const std::string mid = trimmed(f[3].substr(at, comma - at));
        at = comma + 1;
        if (mid.empty()) continue;
        auto it = by_mid.find(mid);
        LOOM_CHECK(it != by_mid.end(), where, ": label ", mid, " is not in ", index.path);
        if (std::find(r.labels.begin(), r.labels.end(), it->second) != r.labels.end()) continue;
        r.labels.push_back(it->second);
        text += (text.empty() ? "" : ", ") + classes[size_t(it->second)];
      }
      LOOM_CHECK(!r.labels.empty(), where, ": no positive_labels");
      r.text = text;
      const std::string start = whole_seconds(f[1]), end = whole_seconds(f[2]);
      const std::string* file = nullptr;
      for (const std::string& key : {f[0], "Y" + f[0], f[0] + "_" + start, "Y" + f[0] + "_" + start, f[0] + "_" + start + "_" + end,
                                     "Y" + f[0] + "_" + start + "_" + end, f[0] + "_" + f[1], "Y" + f[0] + "_" + f[1] + "_" + f[2]})
        if ((file = audio.find(key, true))) break;
      if (!file && missing.skip(where, str_cat("no audio file for YTID ", f[0], " (", f[0], ".wav, Y", f[0], "_", start, "_", end,
                                              ".wav, ... under ", root, ")")))
        continue;
      r.media = *file;
      rows.push_back(std::move(r));
    }
  }
  return rows;
}

// ---- class folders ----
std::vector<Row> imagefolder(const std::string& root, const ImportOptions& opt, std::vector<std::string>& classes) {
  LOOM_CHECK(opt.split.empty(), "loom data import imagefolder: no splits (point ROOT at the split's folder, e.g. train/)");
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory()) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  std::vector<Row> rows;
  for (size_t k = 0; k < dirs.size(); ++k) {
    std::vector<fs::path> files;
    for (auto it = fs::recursive_directory_iterator(dirs[k]); it != fs::recursive_directory_iterator(); ++it)
      if (it->is_regular_file() && is_image_ext(it->path().extension().string())) files.push_back(it->path());
    std::sort(files.begin(), files.end());
    LOOM_CHECK(!files.empty(), dirs[k].string(), ": a class folder with no image (", "jpg, png, ...)");
    classes.push_back(spaced(dirs[k].filename().string()));
    for (const fs::path& p : files)
      rows.push_back({fs::absolute(p).lexically_normal().string(), false, classes.back(), int64_t(k), {}});
  }
  LOOM_CHECK(!dirs.empty(), root, ": no class folders (imagefolder reads ROOT/<class>/<image>)");
  return rows;
}

void write_atomically(const std::string& path, const std::function<void(std::ofstream&)>& fill) {
  const std::string tmp = path + ".partial";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    LOOM_CHECK(out, tmp, ": cannot write");
    fill(out);
    out.flush();
    LOOM_CHECK(out, tmp, ": write failed (disk full?)");
  }
  fs::rename(tmp, path);
}

}  // namespace

std::vector<std::string> parse_csv_line(const std::string& line, const std::string& where) {
  std::vector<std::string> out(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        out.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        out.back() += c;
      }
    } else if (c == '"' && out.back().empty()) {
      quoted = true;
    } else if (c == ',') {
      out.emplace_back();
    } else {
      out.back() += c;
    }
  }
  LOOM_CHECK(!quoted, where, ": a quoted field is not closed on its line");
  return out;
}

std::vector<std::string> import_formats() { return {"audiocaps", "audioset", "clotho", "coco", "esc50", "flickr30k", "imagefolder"}; }

ImportReport import_dataset(const std::string& format, const std::string& root, const std::string& out,
                            const ImportOptions& options) {
  const std::vector<std::string> formats = import_formats();
  if (std::find(formats.begin(), formats.end(), format) == formats.end()) {
    std::string list;
    for (const std::string& f : formats) list += (list.empty() ? "" : ", ") + f;
    throw Error(str_cat("loom data import: unknown format '", format, "' (", list, ")"));
  }
  LOOM_CHECK(fs::is_directory(root), root, ": no such directory");
  Missing missing{options};
  std::vector<std::string> classes;
  std::vector<Row> rows;
  if (format == "coco" || format == "flickr30k") rows = karpathy(format, root, options, missing);
  else if (format == "audiocaps") rows = audiocaps(root, options, missing);
  else if (format == "clotho") rows = clotho(root, options, missing);
  else if (format == "esc50") rows = esc50(root, options, missing, classes);
  else if (format == "audioset") rows = audioset(root, options, missing, classes);
  else rows = imagefolder(root, options, classes);
  LOOM_CHECK(!rows.empty(), "loom data import ", format, ": ", root, " gave no rows",
             options.split.empty() ? std::string() : str_cat(" for split ", options.split),
             missing.count ? str_cat(" (", missing.count, " left out for missing files)") : std::string());

  const fs::path out_path = fs::absolute(out).lexically_normal();
  if (out_path.has_parent_path()) fs::create_directories(out_path.parent_path());
  const fs::path base = out_path.parent_path();
  ImportReport rep;
  std::set<std::string> items;
  write_atomically(out_path.string(), [&](std::ofstream& f) {
    for (const Row& r : rows) {
      nlohmann::json j;
      j[r.audio ? "audio" : "image"] = fs::path(r.media).lexically_relative(base).string();
      if (!r.text.empty()) j["text"] = r.text;
      if (r.label >= 0) j["label"] = r.label;
      if (!r.labels.empty()) j["labels"] = r.labels;
      try {
        f << j.dump() << "\n";
      } catch (const nlohmann::json::exception&) {
        throw Error(str_cat("loom data import ", format, ": the caption of ", r.media, " is not valid UTF-8"));
      }
      items.insert(r.media);
    }
  });
  rep.rows = int64_t(rows.size());
  rep.items = int64_t(items.size());
  rep.missing = missing.count;
  if (!classes.empty()) {
    rep.classes_file = (out_path.parent_path() / (out_path.stem().string() + ".classes.txt")).string();
    write_atomically(rep.classes_file, [&](std::ofstream& f) {
      for (const std::string& c : classes) f << c << "\n";
    });
  }
  return rep;
}

}  // namespace loom::data
