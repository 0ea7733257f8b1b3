// JSONL manifests: one JSON object per line, e.g.
//   {"image": "images/train/00001.pgm", "text": "a photo of a shirt", "label": 6}
// Keys: "image", "text", "audio" (strings, paths relative to the manifest's directory), "label"
// (integer) or "labels" (a list of distinct class ids, for multi-label data such as AudioSet); any
// may be absent, no other key is allowed. Blank lines are ignored. Any defect is a
// loom::Error naming "path:line" and the problem.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace loom::data {

// Bytes inside a larger file: a member of a tar shard (data/webdataset.h).
struct Blob {
  std::string file;
  int64_t offset = 0, size = -1;  // size -1: no blob
  bool present() const { return size >= 0; }
};
// Reads a blob's bytes; loom::Error naming `name` (the member) and the file when they cannot be read.
std::vector<unsigned char> read_blob(const Blob& b, const std::string& name);

struct Example {
  std::string image, text, audio;  // image/audio paths are stored resolved (manifest dir + relative path)
  int64_t label = -1;              // -1: no label
  std::vector<int64_t> labels;     // multi-label rows ("labels": [3, 17]): the classes present; empty: none given
  // WebDataset samples: the image/audio bytes inside a shard; image/audio then hold "shard.tar:key.ext".
  Blob image_blob, audio_blob;
};

// A "labels" value: a non-empty list of distinct non-negative integers; loom::Error prefixed by `where`.
std::vector<int64_t> parse_labels(const nlohmann::json& v, const std::string& where);

struct Manifest {
  std::string path;
  std::vector<Example> rows;
  // max_bytes: what the rows may take in memory (0: half of this machine's); a manifest beyond it
  // is a loom::Error naming it, before the machine runs out of memory.
  static Manifest load(const std::string& path, uint64_t max_bytes = 0);
};

}  // namespace loom::data
