// Reading integers from JSON. nlohmann converts a floating-point number to an integer with a plain
// cast, undefined behaviour when it is out of range (`{"id": 3e64}`, found by fuzz_tokenizer), so
// every integer loom reads from a file goes through these: anything but an integer is an Error.
#pragma once
#include <cstdint>
#include <string>
#include <nlohmann/json.hpp>
#include "core/error.h"

namespace loom {

inline int64_t json_int64(const nlohmann::json& j, const std::string& what) {
  if (!j.is_number_integer()) throw Error(str_cat(what, " must be an integer, got ", j.dump().substr(0, 40)));
  return j.get<int64_t>();
}

inline uint64_t json_uint64(const nlohmann::json& j, const std::string& what) {
  if (!j.is_number_unsigned()) throw Error(str_cat(what, " must be a non-negative integer, got ", j.dump().substr(0, 40)));
  return j.get<uint64_t>();
}

// obj[key] as an integer, or `fallback` when absent.
inline int64_t json_int64_or(const nlohmann::json& obj, const std::string& key, int64_t fallback, const std::string& what) {
  return obj.contains(key) ? json_int64(obj[key], what + "." + key) : fallback;
}

}  // namespace loom
