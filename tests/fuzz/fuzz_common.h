// Shared by the libFuzzer targets: each feeds one parser arbitrary bytes. A loom::Error (or a
// ConfigError) is the expected outcome for bad input; anything else — a crash, a sanitizer report,
// an uncaught exception of another type, a leak — is a bug.
#pragma once
#include <unistd.h>
#include <cstdint>
#include <cstdio>
#include <string>
#include "core/error.h"

namespace loom::fuzz {

// The parsers that take a path get the bytes through this per-process file.
inline std::string as_file(const uint8_t* data, size_t size, const char* ext) {
  const std::string path = "/tmp/loom_fuzz_" + std::to_string(::getpid()) + ext;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) __builtin_trap();
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  return path;
}

template <class F> void expect_only_loom_errors(F&& fn) {
  try {
    fn();
  } catch (const loom::Error&) {
  }
}

}  // namespace loom::fuzz
