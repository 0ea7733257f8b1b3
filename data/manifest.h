// JSONL manifests: one JSON object per line, e.g.
//   {"image": "images/train/00001.pgm", "text": "a photo of a shirt", "label": 6}
// Keys: "image", "text", "audio" (strings, paths relative to the manifest's directory) and "label"
// (integer); any may be absent, no other key is allowed. Blank lines are ignored. Any defect is a
// loom::Error naming "path:line" and the problem.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace loom::data {

struct Example {
  std::string image, text, audio;  // image/audio paths are stored resolved (manifest dir + relative path)
  int64_t label = -1;              // -1: no label
};

struct Manifest {
  std::string path;
  std::vector<Example> rows;
  static Manifest load(const std::string& path);
};

}  // namespace loom::data
