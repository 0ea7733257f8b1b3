// safetensors: round trip of every dtype, and a clear error (naming the file) for each kind of damage.
#include <gtest/gtest.h>
#include <filesystem>
#include <fstream>
#include "core/ops.h"
#include "core/safetensors.h"

using namespace loom;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir() {
  fs::path d = fs::temp_directory_path() / ("loom_st_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
                                            "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::create_directories(d);
  return d;
}

// A file made of a header (given verbatim) and `data_bytes` bytes of data.
std::string write_raw(const fs::path& p, const std::string& header, size_t data_bytes, uint64_t claimed_len = UINT64_MAX) {
  std::ofstream f(p, std::ios::binary);
  uint64_t len = claimed_len == UINT64_MAX ? header.size() : claimed_len;
  for (int i = 0; i < 8; ++i) f.put(char(len >> (8 * i)));
  f << header << std::string(data_bytes, '\x01');
  return p.string();
}

void expect_error_naming(const std::string& path, const std::string& fragment) {
  try {
    load_safetensors(path);
    FAIL() << "expected an error for " << path;
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
  }
}

}  // namespace

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  fs::path dir = temp_dir();
  Generator g(3);
  TensorMap m;
  for (DType t : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u8, DType::boolean})
    m[std::string("t_") + std::string(dtype_name(t))] = ops::mul(ops::randn({3, 5}, g, DType::f64), 20.0).to(t);
  m["scalar"] = Tensor::scalar(3.5);
  m["empty"] = Tensor::empty({0, 4});
  m["strided"] = ops::randn({4, 6}, g).transpose(0, 1);  // saved contiguous
  const std::string path = (dir / "a.safetensors").string();
  save_safetensors(path, m, {{"step", "12"}});
  SafetensorsFile back = load_safetensors(path);
  EXPECT_EQ(back.metadata.at("step"), "12");
  ASSERT_EQ(back.tensors.size(), m.size());
  for (auto& [name, t] : m) {
    const Tensor& b = back.tensors.at(name);
    EXPECT_EQ(b.dtype(), t.dtype()) << name;
    EXPECT_EQ(b.shape(), t.shape()) << name;
    EXPECT_EQ(b.to_vector<double>(), t.to_vector<double>()) << name;
  }
  for (auto& e : fs::directory_iterator(dir)) EXPECT_EQ(e.path().filename(), "a.safetensors");  // no temp left over
  fs::remove_all(dir);
}

TEST(Safetensors, HeaderLayoutIsTheStandardOne) {
  fs::path dir = temp_dir();
  const std::string path = (dir / "b.safetensors").string();
  save_safetensors(path, {{"w", Tensor::from(std::vector<float>{1, 2, 3}, {3})}});
  std::ifstream f(path, std::ios::binary);
  unsigned char le[8];
  f.read(reinterpret_cast<char*>(le), 8);
  uint64_t len = 0;
  for (int i = 0; i < 8; ++i) len |= uint64_t(le[i]) << (8 * i);
  EXPECT_EQ(len % 8, 0u);
  std::string header(len, '\0');
  f.read(header.data(), std::streamsize(len));
  EXPECT_NE(header.find("\"w\":{\"data_offsets\":[0,12],\"dtype\":\"F32\",\"shape\":[3]}"), std::string::npos) << header;
  float v[3];
  f.read(reinterpret_cast<char*>(v), 12);
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[2], 3.0f);
  fs::remove_all(dir);
}

TEST(Safetensors, BrokenFilesNameThePathAndTheProblem) {
  fs::path dir = temp_dir();
  expect_error_naming((dir / "missing.safetensors").string(), "cannot open");
  expect_error_naming(write_raw(dir / "short", "", 0, 0), "not JSON");
  {
    std::ofstream f(dir / "tiny", std::ios::binary);
    f << "abc";
  }
  expect_error_naming((dir / "tiny").string(), "only 3 bytes");
  expect_error_naming(write_raw(dir / "len", "{}", 0, 1000), "header length");
  expect_error_naming(write_raw(dir / "json", "{not json", 0), "not JSON");
  expect_error_naming(write_raw(dir / "dtype", R"({"w":{"dtype":"F7","shape":[1],"data_offsets":[0,4]}})", 4), "unsupported dtype");
  expect_error_naming(write_raw(dir / "shape", R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "bad shape");
  expect_error_naming(write_raw(dir / "size", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 8), "needs 8 bytes");
  expect_error_naming(write_raw(dir / "past", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "'w'");
  expect_error_naming(write_raw(dir / "overlap",
                                R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                12),
                      "overlap");
  expect_error_naming(write_raw(dir / "keys", R"({"w":{"dtype":"F32","shape":[1]}})", 4), "needs dtype, shape and data_offsets");
  fs::remove_all(dir);
}

TEST(Safetensors, HostileSizesAndNestedOverlapsAreRejected) {
  fs::path dir = temp_dir();
  // 2^62 elements of 4 bytes wraps a 64-bit byte count to 0; it must not load as an empty buffer.
  expect_error_naming(write_raw(dir / "wrap", R"({"x":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0),
                      "needs more bytes than the file holds");
  expect_error_naming(write_raw(dir / "nested",
                                R"({"a":{"dtype":"U8","shape":[100],"data_offsets":[0,100]},"b":{"dtype":"U8","shape":[0],"data_offsets":[10,10]},"c":{"dtype":"U8","shape":[10],"data_offsets":[20,30]}})",
                                100),
                      "overlap");
  // A thousand tensors claiming the same 4 KB: refused before a thousand buffers are allocated.
  std::string many = "{";
  for (int i = 0; i < 1000; ++i) {
    if (i) many.append(",");
    many.append("\"t").append(std::to_string(i)).append("\":{\"dtype\":\"U8\",\"shape\":[4096],\"data_offsets\":[0,4096]}");
  }
  many += "}";
  expect_error_naming(write_raw(dir / "many", many, 4096), "claim 4096000 bytes of 4096: tensors overlap");
  fs::remove_all(dir);
}
