// Scratch directories for tests: under one per-process root in the system's temp dir, removed when
// the test process exits, so suites running at once (a developer's and CI's) never share files and
// nothing is left behind.
#pragma once
#include <unistd.h>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace loom::testing_support {

inline std::filesystem::path process_tmp_root() {
  return std::filesystem::temp_directory_path() / ("loom_test_" + std::to_string(::getpid()));
}

// process_tmp_root() / name (not created).
inline std::filesystem::path tmp_path(const std::string& name) {
  static const bool cleanup_registered = [] {
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(process_tmp_root(), ec);
    });
    return true;
  }();
  (void)cleanup_registered;
  return process_tmp_root() / name;
}

}  // namespace loom::testing_support
