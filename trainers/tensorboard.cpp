#include "trainers/tensorboard.h"
#include <unistd.h>
#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include "core/error.h"
#include "tensorboard_event.pb.h"

namespace loom {
namespace {

double wall_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

std::string host_name() {
  char buf[256] = {0};
  return gethostname(buf, sizeof buf - 1) == 0 && buf[0] ? std::string(buf) : std::string("localhost");
}

uint32_t big_endian32(const unsigned char* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

}  // namespace

uint32_t crc32c(const void* data, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // the reflected Castagnoli polynomial
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir, int64_t start_step) {
  std::filesystem::create_directories(dir);
  const auto seconds = int64_t(wall_time());
  // TensorBoard reads a directory's files in name order: a second file of the same second and
  // process (a resume in a test) takes a higher number, so it is read after the first.
  const std::string base = (std::filesystem::path(dir) / str_cat("events.out.tfevents.", seconds, ".", host_name(), ".", ::getpid(), ".loom")).string();
  path_ = base;
  for (int n = 1; std::filesystem::exists(path_); ++n) path_ = str_cat(base, ".", n);
  f_ = std::fopen(path_.c_str(), "wb");
  LOOM_CHECK(f_, "cannot create the TensorBoard event file ", path_);
  tensorboard::Event e;
  e.set_wall_time(wall_time());
  e.set_file_version("brain.Event:2");
  write_record(e.SerializeAsString());
  if (start_step > 0) {
    tensorboard::Event restart;
    restart.set_wall_time(wall_time());
    restart.set_step(start_step);
    restart.mutable_session_log()->set_status(tensorboard::SessionLog::START);
    write_record(restart.SerializeAsString());
  }
  std::fflush(f_);
}

TensorBoardWriter::~TensorBoardWriter() {
  if (f_) std::fclose(f_);
}

void TensorBoardWriter::write_record(const std::string& bytes) {
  unsigned char header[12];
  const uint64_t n = bytes.size();
  for (int i = 0; i < 8; ++i) header[i] = static_cast<unsigned char>(n >> (8 * i));  // little-endian length
  const uint32_t len_crc = masked(crc32c(header, 8)), data_crc = masked(crc32c(bytes.data(), bytes.size()));
  for (int i = 0; i < 4; ++i) header[8 + i] = static_cast<unsigned char>(len_crc >> (8 * i));
  unsigned char footer[4];
  for (int i = 0; i < 4; ++i) footer[i] = static_cast<unsigned char>(data_crc >> (8 * i));
  const bool ok = std::fwrite(header, 1, 12, f_) == 12 && std::fwrite(bytes.data(), 1, bytes.size(), f_) == bytes.size() &&
                  std::fwrite(footer, 1, 4, f_) == 4;
  LOOM_CHECK(ok, "writing the TensorBoard event file ", path_, " failed (disk full?)");
}

void TensorBoardWriter::scalars(int64_t step, const std::map<std::string, double>& values) {
  tensorboard::Event e;
  e.set_wall_time(wall_time());
  e.set_step(step);
  for (const auto& [tag, v] : values) {
    if (!std::isfinite(v)) continue;
    auto* value = e.mutable_summary()->add_value();
    value->set_tag(tag);
    value->set_simple_value(float(v));
  }
  if (e.summary().value_size() == 0) return;
  write_record(e.SerializeAsString());
  std::fflush(f_);
}

void TensorBoardWriter::image(int64_t step, const std::string& tag, const std::string& png_path) {
  std::ifstream in(png_path, std::ios::binary);
  LOOM_CHECK(in, "TensorBoard image ", tag, ": cannot read ", png_path);
  const std::string png((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto* b = reinterpret_cast<const unsigned char*>(png.data());
  // The signature, then the IHDR chunk: width, height (big-endian), bit depth, colour type.
  LOOM_CHECK(png.size() >= 26 && png.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0 && png.compare(12, 4, "IHDR") == 0,
             "TensorBoard image ", tag, ": ", png_path, " is not a PNG file");
  const int colour = b[25];
  tensorboard::Event e;
  e.set_wall_time(wall_time());
  e.set_step(step);
  auto* value = e.mutable_summary()->add_value();
  value->set_tag(tag);
  auto* image = value->mutable_image();
  image->set_width(int32_t(big_endian32(b + 16)));
  image->set_height(int32_t(big_endian32(b + 20)));
  image->set_colorspace(colour == 0 ? 1 : colour == 4 ? 2 : colour == 6 ? 4 : 3);
  image->set_encoded_image_string(png);
  write_record(e.SerializeAsString());
  std::fflush(f_);
}

}  // namespace loom
