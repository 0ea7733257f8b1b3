#include "core/safetensors.h"
#include "core/device.h"
#include <unistd.h>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

namespace loom {
namespace {

const char* st_name(DType t) {
  switch (t) {
    case DType::f32: return "F32"; case DType::f64: return "F64"; case DType::bf16: return "BF16";
    case DType::f16: return "F16"; case DType::i32: return "I32"; case DType::i64: return "I64";
    case DType::u8: return "U8"; case DType::boolean: return "BOOL";
  }
  return "?";
}

bool st_dtype(const std::string& s, DType& out) {
  static const std::pair<const char*, DType> table[] = {
      {"F32", DType::f32}, {"F64", DType::f64}, {"BF16", DType::bf16}, {"F16", DType::f16},
      {"I32", DType::i32}, {"I64", DType::i64}, {"U8", DType::u8},     {"BOOL", DType::boolean}};
  for (auto& [name, t] : table)
    if (s == name) { out = t; return true; }
  return false;
}

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw Error(str_cat(path, ": not a valid safetensors file: ", what));
}

}  // namespace

void save_safetensors(const std::string& path, const TensorMap& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<Tensor> cpu;  // contiguous CPU copies, in key order
  size_t offset = 0;
  for (const auto& [name, t] : tensors) {
    LOOM_CHECK(t.defined(), "save_safetensors: tensor '", name, "' is undefined (", path, ")");
    LOOM_CHECK(name != "__metadata__", "save_safetensors: '__metadata__' is reserved (", path, ")");
    Tensor c = t.detach().to(Device::cpu()).contiguous();
    const size_t n = size_t(c.numel()) * dtype_size(c.dtype());
    header[name] = {{"dtype", st_name(c.dtype())}, {"shape", c.shape().vec()}, {"data_offsets", {offset, offset + n}}};
    offset += n;
    cpu.push_back(c);
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // align the data to 8 bytes, as the reference writer does

  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path tmp = target.parent_path() / (target.filename().string() + ".tmp." + std::to_string(getpid()));
  {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    LOOM_CHECK(f, "save_safetensors: cannot open ", tmp.string(), " for writing: ", std::strerror(errno));
    uint64_t len = h.size();
    unsigned char le[8];
    for (int i = 0; i < 8; ++i) le[i] = static_cast<unsigned char>(len >> (8 * i));
    bool ok = std::fwrite(le, 1, 8, f) == 8 && std::fwrite(h.data(), 1, h.size(), f) == h.size();
    for (const Tensor& c : cpu) {
      const size_t n = size_t(c.numel()) * dtype_size(c.dtype());
      // An empty tensor may have no storage at all: fwrite's buffer must not be null even for 0 bytes.
      ok = ok && (n == 0 || std::fwrite(c.raw_data(), 1, n, f) == n);
    }
    // Data on disk before the rename makes it visible: a crash leaves the old file or the whole new one.
    ok = std::fflush(f) == 0 && ok;
    ok = ::fsync(fileno(f)) == 0 && ok;
    ok = std::fclose(f) == 0 && ok;
    if (!ok) {
      const int err = errno;
      std::filesystem::remove(tmp);
      throw Error(str_cat("save_safetensors: writing ", tmp.string(), " failed: ", std::strerror(err)));
    }
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp);
    throw Error(str_cat("save_safetensors: cannot rename ", tmp.string(), " to ", path, ": ", ec.message()));
  }
}

SafetensorsFile load_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw Error(str_cat(path, ": cannot open: ", std::strerror(errno)));
  const uint64_t size = uint64_t(f.tellg());
  f.seekg(0);
  if (size < 8) bad(path, str_cat("only ", size, " bytes"));
  unsigned char le[8];
  f.read(reinterpret_cast<char*>(le), 8);
  uint64_t hlen = 0;
  for (int i = 0; i < 8; ++i) hlen |= uint64_t(le[i]) << (8 * i);
  if (hlen > size - 8 || hlen > (uint64_t(100) << 20)) bad(path, str_cat("header length ", hlen, " exceeds the file"));
  std::string h(hlen, '\0');
  f.read(h.data(), std::streamsize(hlen));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(h);
  } catch (const std::exception& e) {
    bad(path, str_cat("header is not JSON (", e.what(), ")"));
  }
  if (!header.is_object()) bad(path, "header is not a JSON object");
  const uint64_t data_size = size - 8 - hlen;

  SafetensorsFile out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  // A header may describe a file larger than this machine's memory: refused before any allocation.
  uint64_t claimed = 0;
  for (auto it = header.begin(); it != header.end(); ++it)
    if (it.key() != "__metadata__" && it.value().is_object() && it.value().contains("data_offsets") &&
        it.value()["data_offsets"].is_array() && it.value()["data_offsets"].size() == 2 &&
        it.value()["data_offsets"][0].is_number_unsigned() && it.value()["data_offsets"][1].is_number_unsigned()) {
      const uint64_t b = it.value()["data_offsets"][0].get<uint64_t>(), e = it.value()["data_offsets"][1].get<uint64_t>();
      // (a range past the data is left to the per-tensor check below, which names the tensor)
      if (e > b && e <= data_size && __builtin_add_overflow(claimed, e - b, &claimed)) claimed = UINT64_MAX;
    }
  // Ranges that do not overlap fit in the data: more means overlap, refused before allocating any.
  if (claimed > data_size) bad(path, str_cat("its tensors claim ", claimed, " bytes of ", data_size, ": tensors overlap"));
  if (claimed > host_memory_bytes())
    bad(path, str_cat("its tensors need ", claimed, " bytes, more than this machine's ", host_memory_bytes(), " bytes of memory"));
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& e = it.value();
    if (name == "__metadata__") {
      if (!e.is_object()) bad(path, "__metadata__ is not an object");
      for (auto m = e.begin(); m != e.end(); ++m) {
        if (!m.value().is_string()) bad(path, str_cat("metadata '", m.key(), "' is not a string"));
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = str_cat("tensor '", name, "'");
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
      bad(path, where + " needs dtype, shape and data_offsets");
    DType dt;
    if (!e["dtype"].is_string() || !st_dtype(e["dtype"].get<std::string>(), dt))
      bad(path, where + " has unsupported dtype " + e["dtype"].dump());
    Shape shape;
    if (!e["shape"].is_array() || e["shape"].size() > size_t(kMaxDims)) bad(path, where + " has a bad shape");
    uint64_t need = dtype_size(dt);  // bytes, with every product checked: a hostile header must not wrap around
    for (const auto& d : e["shape"]) {
      if (!d.is_number_unsigned()) bad(path, where + " has a bad shape " + e["shape"].dump());
      const uint64_t dim = d.get<uint64_t>();
      if (__builtin_mul_overflow(need, dim, &need) || need > data_size)
        bad(path, str_cat(where, " of shape ", e["shape"].dump(), " needs more bytes than the file holds"));
      shape.push_back(int64_t(dim));
    }
    const auto& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      bad(path, where + " has bad data_offsets");
    const uint64_t b = off[0].get<uint64_t>(), en = off[1].get<uint64_t>();
    if (en < b || en > data_size || en - b != need)
      bad(path, str_cat(where, " has data_offsets [", b, ", ", en, "] but needs ", need, " bytes within ", data_size));
    ranges.push_back({b, en});
    Tensor t = Tensor::empty(shape, dt);
    f.seekg(std::streamoff(8 + hlen + b));
    f.read(static_cast<char*>(t.raw_data()), std::streamsize(need));
    if (!f) bad(path, where + ": file ends early");
    out.tensors.emplace(name, t);
  }
  std::sort(ranges.begin(), ranges.end());
  uint64_t covered = 0;  // furthest end so far: a range inside any earlier one overlaps it
  for (const auto& [b, en] : ranges) {
    if (b < covered && b != en) bad(path, "tensors overlap");
    covered = std::max(covered, en);
  }
  return out;
}

}  // namespace loom
