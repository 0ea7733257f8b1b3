// Test helpers for tests/data: a temporary directory and small file writers.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>
#include "core/error.h"

namespace loom::data::testing {

// A fresh directory under the system temp dir, removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "loom";
    path_ = std::filesystem::temp_directory_path() / ("loom_data_test_" + std::to_string(::getpid()) + "_" + name);
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& rel) const { return (path_ / rel).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline void write_file(const std::string& path, const std::string& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// Binary greyscale PGM (P5), pixels row-major.
inline void write_pgm(const std::string& path, int64_t w, int64_t h, const std::vector<uint8_t>& px) {
  std::string s = "P5\n" + std::to_string(w) + " " + std::to_string(h) + "\n255\n";
  s.append(reinterpret_cast<const char*>(px.data()), px.size());
  write_file(path, s);
}

// The message of the loom::Error that `fn` throws ("" if none).
template <class F> std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const loom::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace loom::data::testing
