// safetensors I/O (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length,
// a JSON header {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__":
// {...}}, then the raw little-endian data. Files written here load with the Python `safetensors`
// package and PyTorch; files read here are validated (sizes, offsets, overlaps) and any defect is
// reported with the file's path and the tensor's name.
#pragma once
#include <map>
#include <string>
#include "core/tensor.h"

namespace loom {

using TensorMap = std::map<std::string, Tensor>;

// Writes to `path` atomically (a temporary file in the same directory, then rename).
void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  TensorMap tensors;                            // CPU tensors
  std::map<std::string, std::string> metadata;
};
SafetensorsFile load_safetensors(const std::string& path);

}  // namespace loom
